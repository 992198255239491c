// sentry::verify_model (include/sentry/sentry.h): tensors against a signature bundle's tensor
// listing, with the GPU hashing while background threads read the bundle, check its signature and
// parse the statement. Only digests go to the device and one flag per tensor comes back.
#include <algorithm>
#include <chrono>
#include <functional>

#include "verify_model.h"

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

// Tensors of one device hashed in one call, in name order, and their digests.
struct Batch {
  at::Device device;
  std::vector<std::size_t> members;  // indices into the sorted state
  at::Tensor digests;                // uint8 [members, 32] on `device`
};

Batch hash_batch(at::Device device, std::vector<std::size_t> members,
                 const std::vector<const at::Tensor*>& tensors, const std::string& algorithm) {
  std::vector<at::Tensor> list;
  list.reserve(members.size());
  for (std::size_t i : members) list.push_back(*tensors[i]);
  Batch out{device, std::move(members), {}};
  out.digests = hash_tensors(list, algorithm);
  return out;
}

// Indices (in name order) of the tensors, grouped by device in order of first appearance.
std::vector<std::pair<at::Device, std::vector<std::size_t>>> by_device(
    const std::vector<const at::Tensor*>& tensors, const std::function<bool(std::size_t)>& take) {
  std::vector<std::pair<at::Device, std::vector<std::size_t>>> out;
  for (std::size_t k = 0; k < tensors.size(); ++k) {
    if (!take(k)) continue;
    const at::Device device = tensors[k]->device();
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& g) { return g.first == device; });
    if (it == out.end()) it = out.insert(out.end(), {device, {}});
    it->second.push_back(k);
  }
  return out;
}

}  // namespace

VerifiedModel verify_model_opening(const NamedTensors& state, const std::string& source,
                                   const std::optional<std::vector<std::string>>& files,
                                   Task<OpenedBundle>& opening) {
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
  // Dense CUDA tensors start hashing with the default algorithm before the bundle is even read:
  // the GPU works while the host checks the signature and parses the statement. (Redone below
  // only if the signature uses another algorithm.) Their hash reads the bytes they hold; a
  // strided or expanded tensor, whose contiguous copy may be far larger than its storage, waits
  // until its dtype and shape are found to be the signed ones.
  std::vector<Batch> batches;
  for (auto& [device, members] : by_device(tensors, [&](std::size_t k) {
         return tensors[k]->is_cuda() && tensors[k]->is_contiguous();
       })) {
    batches.push_back(hash_batch(device, std::move(members), tensors, "blake3"));
  }
  const double launch_ms = ms_since(t0);

  const OpenedBundle opened = opening.get();
  const Statement& st = opened.opened->statement;

  t0 = Clock::now();
  const std::vector<const TensorEntry*> table = expected_tensors(st, source, files);
  // Merge the sorted names with the sorted entries. same_layout: signed, and of the signed
  // dtype and shape (only those are hashed from here).
  std::vector<const TensorEntry*> expected(names.size(), nullptr);
  std::vector<char> same_layout(names.size(), 0);
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
      } else {
        same_layout[k] = 1;
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
  if (algorithm != "blake3") batches.clear();
  std::vector<char> hashed(names.size(), 0);
  for (const Batch& batch : batches) {
    for (std::size_t i : batch.members) hashed[i] = 1;
  }
  for (auto& [device, members] :
       by_device(tensors, [&](std::size_t i) { return same_layout[i] && !hashed[i]; })) {
    batches.push_back(hash_batch(device, std::move(members), tensors, algorithm));
  }
  for (const Batch& batch : batches) {
    // One table of expected digests per batch, in its order (zeros for the tensors not compared:
    // their result is not used), copied to its device at once.
    const bool cuda = batch.device.is_cuda();
    at::Tensor want = at::empty({static_cast<int64_t>(batch.members.size()), 32},
                                at::TensorOptions().dtype(at::kByte).pinned_memory(cuda));
    std::uint8_t* rows = want.mutable_data_ptr<std::uint8_t>();
    for (std::size_t i = 0; i < batch.members.size(); ++i) {
      const std::size_t m = batch.members[i];
      if (same_layout[m]) {
        std::copy(expected[m]->digest.begin(), expected[m]->digest.end(), rows + 32 * i);
      } else {
        std::fill(rows + 32 * i, rows + 32 * i + 32, 0);
      }
    }
    const at::Tensor differs =
        batch.digests.ne(want.to(batch.device, /*non_blocking=*/true)).any(1).to(at::kCPU);
    const bool* flags = differs.const_data_ptr<bool>();
    for (std::size_t i = 0; i < batch.members.size(); ++i) {
      if (flags[i] && same_layout[batch.members[i]]) changed.push_back(*names[batch.members[i]]);
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
  out.key_hint = opened.opened->key.hint();
  out.timings_ms.emplace_back("launch GPU hash", launch_ms);
  for (auto& timing : opened.timings_ms) out.timings_ms.push_back(timing);
  out.timings_ms.emplace_back("match names", match_ms);
  out.timings_ms.emplace_back("finish hash and compare", finish_ms);
  return out;
}

std::function<OpenedBundle()> bundle_file_opener(const std::string& path, const Trust& trust) {
  return [&path, &trust] {
    const auto t0 = Clock::now();
    const std::string data = read_bundle_file(path);
    const double read_ms = ms_since(t0);
    OpenedBundle out = open_bundle_memoised(data, path, trust);
    out.timings_ms.insert(out.timings_ms.begin(), {"read file", read_ms});
    return out;
  };
}

std::function<OpenedBundle()> bundle_data_opener(std::string_view data, const std::string& source,
                                                 const Trust& trust) {
  return [data, &source, &trust] { return open_bundle_memoised(data, source, trust); };
}

// The bundle is read, checked and parsed on a background thread while this one launches the GPU
// hash: both are host work of a fraction of a millisecond for a model of a thousand tensors.
VerifiedModel verify_model(const NamedTensors& tensors, const std::string& signature_path,
                           const Trust& trust,
                           const std::optional<std::vector<std::string>>& files) {
  Task<OpenedBundle> opening(bundle_file_opener(signature_path, trust));
  return verify_model_opening(tensors, signature_path, files, opening);
}

VerifiedModel verify_model_data(const NamedTensors& tensors, std::string_view bundle_data,
                                const std::string& source, const Trust& trust,
                                const std::optional<std::vector<std::string>>& files) {
  Task<OpenedBundle> opening(bundle_data_opener(bundle_data, source, trust));
  return verify_model_opening(tensors, source, files, opening);
}

}  // namespace sentry
