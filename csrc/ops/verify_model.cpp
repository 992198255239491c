// sentry::verify_model (include/sentry/sentry.h): tensors against a signature bundle's tensor
// listing, with the GPU hashing while the host reads the bundle, checks its signature and parses
// the statement. Only digests go to the device and one flag per tensor comes back.
#include <algorithm>
#include <chrono>
#include <functional>

#include "../include/sentry/sentry.h"

namespace sentry {

std::string safetensors_dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBool: return "BOOL";
    case at::kByte: return "U8";
    case at::kChar: return "I8";
    case at::kFloat8_e5m2: return "F8_E5M2";
    case at::kFloat8_e4m3fn: return "F8_E4M3";
    case at::kFloat8_e8m0fnu: return "F8_E8M0";
    case at::kFloat8_e4m3fnuz: return "F8_E4M3FNUZ";
    case at::kFloat8_e5m2fnuz: return "F8_E5M2FNUZ";
    case at::kShort: return "I16";
    case at::kUInt16: return "U16";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kInt: return "I32";
    case at::kUInt32: return "U32";
    case at::kFloat: return "F32";
    case at::kLong: return "I64";
    case at::kUInt64: return "U64";
    case at::kDouble: return "F64";
    case at::kComplexFloat: return "C64";
    default: return "";
  }
}

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// The tensors of one device, in name order, and their digests once hashed.
struct DeviceGroup {
  at::Device device;
  std::vector<std::size_t> members;  // indices into the sorted state
  at::Tensor digests;                // uint8 [members, 32] on `device`
  std::string algorithm;             // what `digests` were hashed with
};

void hash_group(DeviceGroup& group, const std::vector<const at::Tensor*>& tensors,
                const std::string& algorithm) {
  std::vector<at::Tensor> list;
  list.reserve(group.members.size());
  for (std::size_t i : group.members) list.push_back(*tensors[i]);
  group.digests = hash_tensors(list, algorithm);
  group.algorithm = algorithm;
}

VerifiedModel verify(const NamedTensors& state, const std::string& source,
                     const std::optional<std::vector<std::string>>& files,
                     const std::function<SignedStatement()>& open) {
  auto t0 = Clock::now();
  // Name order: the order of the statement's entries (code-point order = UTF-8 byte order).
  std::vector<std::size_t> order(state.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return state[a].first < state[b].first; });
  std::vector<const std::string*> names(order.size());
  std::vector<const at::Tensor*> tensors(order.size());
  for (std::size_t k = 0; k < order.size(); ++k) {
    names[k] = &state[order[k]].first;
    tensors[k] = &state[order[k]].second;
    if (!tensors[k]->defined()) throw FormatError("tensor '" + *names[k] + "' is undefined");
    if (k > 0 && *names[k] == *names[k - 1]) {
      throw FormatError("tensor name '" + *names[k] + "' is given twice");
    }
  }
  std::vector<DeviceGroup> groups;
  for (std::size_t k = 0; k < tensors.size(); ++k) {
    const at::Device device = tensors[k]->device();
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const DeviceGroup& g) { return g.device == device; });
    if (it == groups.end()) it = groups.insert(groups.end(), DeviceGroup{device, {}, {}, {}});
    it->members.push_back(k);
  }
  // CUDA tensors start hashing with the default algorithm before the bundle is even read: the
  // GPU works while the host checks the signature and parses the statement. (Redone below only
  // if the signature uses another algorithm.)
  for (DeviceGroup& group : groups) {
    if (group.device.is_cuda()) hash_group(group, tensors, "blake3");
  }
  const double launch_ms = ms_since(t0);

  SignedStatement opened = open();
  const Statement& st = opened.statement;

  t0 = Clock::now();
  const std::vector<const TensorEntry*> table = expected_tensors(st, source, files);
  // Merge the sorted names with the sorted entries.
  std::vector<const TensorEntry*> expected(names.size(), nullptr);
  std::vector<std::string> changed, missing, unexpected, common;
  std::size_t k = 0;
  for (const TensorEntry* entry : table) {
    const TensorEntry& e = *entry;
    while (k < names.size() && *names[k] < e.name) unexpected.push_back(*names[k++]);
    if (k < names.size() && *names[k] == e.name) {
      expected[k] = &e;
      common.push_back(e.name);
      const at::Tensor& t = *tensors[k];
      const std::string dtype = safetensors_dtype_name(t.scalar_type());
      if (dtype.empty()) {
        throw FormatError("tensor '" + e.name + "': " + std::string(c10::toString(t.scalar_type())) +
                          " has no safetensors dtype name");
      }
      const auto sizes = t.sizes();
      if (dtype != e.dtype || !std::equal(sizes.begin(), sizes.end(), e.shape.begin(), e.shape.end())) {
        changed.push_back(e.name);
      }
      ++k;
    } else {
      missing.push_back(e.name);
    }
  }
  while (k < names.size()) unexpected.push_back(*names[k++]);
  const double match_ms = ms_since(t0);

  t0 = Clock::now();
  const std::string& algorithm = st.tensor_hash_type;
  for (DeviceGroup& group : groups) {
    if (group.algorithm != algorithm) hash_group(group, tensors, algorithm);
    // One table of expected digests per device, in the group's order (zeros for unexpected
    // tensors: compared, but their result is not used), copied to it at once.
    const bool cuda = group.device.is_cuda();
    at::Tensor want = at::empty({static_cast<int64_t>(group.members.size()), 32},
                                at::TensorOptions().dtype(at::kByte).pinned_memory(cuda));
    std::uint8_t* rows = want.mutable_data_ptr<std::uint8_t>();
    for (std::size_t i = 0; i < group.members.size(); ++i) {
      const TensorEntry* e = expected[group.members[i]];
      if (e) {
        std::copy(e->digest.begin(), e->digest.end(), rows + 32 * i);
      } else {
        std::fill(rows + 32 * i, rows + 32 * i + 32, 0);
      }
    }
    const at::Tensor differs =
        group.digests.ne(want.to(group.device, /*non_blocking=*/true)).any(1).to(at::kCPU);
    const bool* flags = differs.const_data_ptr<bool>();
    for (std::size_t i = 0; i < group.members.size(); ++i) {
      if (flags[i] && expected[group.members[i]]) changed.push_back(*names[group.members[i]]);
    }
  }
  const double finish_ms = ms_since(t0);

  if (!changed.empty() || !missing.empty() || !unexpected.empty()) {
    std::sort(changed.begin(), changed.end());
    changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
    throw VerificationError(source + ": the model does not match its signature",
                            std::move(changed), std::move(missing), std::move(unexpected));
  }
  VerifiedModel out;
  out.model_name = st.model_name.value_or("");
  out.method = st.method;
  out.hash_type = algorithm;
  out.names = std::move(common);
  out.key_hint = opened.key.hint();
  out.timings_ms.emplace_back("launch GPU hash", launch_ms);
  for (auto& timing : opened.timings_ms) out.timings_ms.push_back(timing);
  out.timings_ms.emplace_back("match names", match_ms);
  out.timings_ms.emplace_back("finish hash and compare", finish_ms);
  return out;
}

}  // namespace

VerifiedModel verify_model(const NamedTensors& tensors, const std::string& signature_path,
                           const Trust& trust,
                           const std::optional<std::vector<std::string>>& files) {
  return verify(tensors, signature_path, files,
                [&] { return open_bundle(signature_path, trust); });
}

VerifiedModel verify_model_data(const NamedTensors& tensors, std::string_view bundle_data,
                                const std::string& source, const Trust& trust,
                                const std::optional<std::vector<std::string>>& files) {
  return verify(tensors, source, files,
                [&] { return open_bundle_data(bundle_data, source, trust); });
}

}  // namespace sentry
