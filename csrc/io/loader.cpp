#include "loader.h"

#include <string.h>

#include <algorithm>
#include <map>
#include <thread>

#include "load_plan.h"

namespace sentry {
namespace io {

LoadMismatch::LoadMismatch(std::vector<std::string> f,
                           std::vector<std::pair<std::string, std::string>> t)
    : std::runtime_error("the model does not match its signature"),
      files(std::move(f)), tensors(std::move(t)) {}

at::ScalarType scalar_type_of(const std::string& dtype) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"BOOL", at::kBool},       {"U8", at::kByte},          {"I8", at::kChar},
      {"I16", at::kShort},       {"U16", at::kUInt16},       {"F16", at::kHalf},
      {"BF16", at::kBFloat16},   {"I32", at::kInt},          {"U32", at::kUInt32},
      {"F32", at::kFloat},       {"I64", at::kLong},         {"U64", at::kUInt64},
      {"F64", at::kDouble},      {"C64", at::kComplexFloat},
      {"F8_E5M2", at::kFloat8_e5m2},         {"F8_E4M3", at::kFloat8_e4m3fn},
      {"F8_E8M0", at::kFloat8_e8m0fnu},      {"F8_E4M3FNUZ", at::kFloat8_e4m3fnuz},
      {"F8_E5M2FNUZ", at::kFloat8_e5m2fnuz},
  };
  const auto it = kTypes.find(dtype);
  if (it == kTypes.end())
    throw std::invalid_argument("safetensors dtype '" + dtype +
                                "' has no torch dtype of whole bytes (or is unknown)");
  return it->second;
}

namespace {

static DeviceTargetMaker& cuda_maker() {
  static DeviceTargetMaker maker = nullptr;
  return maker;
}

std::string where(const FileToLoad& f, const TensorToLoad& t) {
  return f.name + ": tensor '" + t.name + "'";
}

// Every number in the table is checked before anything is read or allocated from it.
void check_table(const std::vector<FileToLoad>& files) {
  for (const FileToLoad& f : files) {
    uint64_t end = 0;
    for (const SignedRange& r : f.ranges) {
      if (r.start != end || r.end < r.start)
        throw std::invalid_argument(f.name + ": signed ranges must tile the file in order");
      if (r.hash == FileHash::kNone) throw std::invalid_argument(f.name + ": a range with no hash");
      end = r.end;
    }
    if (f.expected_size >= 0 && f.prefix.size() > static_cast<uint64_t>(f.expected_size))
      throw std::invalid_argument(f.name + ": the prefix is longer than the file");
    uint64_t at = f.prefix.size();
    const bool whole = !f.ranges.empty();
    for (const TensorToLoad& t : f.tensors) {
      const at::ScalarType type = scalar_type_of(t.dtype);
      uint64_t numel = 1;
      for (int64_t d : t.shape) {
        if (d < 0) throw std::invalid_argument(where(f, t) + ": a negative dimension");
        if (d != 0 && numel > UINT64_MAX / static_cast<uint64_t>(d))
          throw std::invalid_argument(where(f, t) + ": too many elements");
        numel *= static_cast<uint64_t>(d);
      }
      const uint64_t item = c10::elementSize(type);
      if (numel > UINT64_MAX / item || numel * item != t.length)
        throw std::invalid_argument(where(f, t) + ": " + std::to_string(t.length) +
                                    " bytes do not hold its dtype and shape");
      if (t.offset < f.prefix.size() || t.offset > UINT64_MAX - t.length)
        throw std::invalid_argument(where(f, t) + ": its bytes overlap the header");
      if (t.offset < at || (!whole && t.offset != at))
        throw std::invalid_argument(where(f, t) + (t.offset < at ? ": overlaps the tensor before it"
                                                                 : ": bytes before it are unchecked"));
      if (!whole && !t.has_digest)
        throw std::invalid_argument(where(f, t) + ": neither it nor its file has a signed digest");
      at = t.offset + t.length;
    }
    if (!whole) {
      if (f.tensors.empty() || f.prefix.empty())
        throw std::invalid_argument(f.name + ": no signed digest covers it");
      if (f.expected_size < 0 || at != static_cast<uint64_t>(f.expected_size))
        throw std::invalid_argument(f.name + ": bytes after its last tensor are unchecked");
    }
  }
}

// Opens the files and cuts them into the spans the reader reads. A file whose size is not the
// one its signed ranges cover does not match: reported before anything is read.
LoadPlan make_plan(const std::vector<FileToLoad>& files, const LoadOptions& options) {
  LoadPlan plan{files, options};
  std::vector<std::string> wrong_size;
  plan.load_begin.assign(files.size(), 0);
  plan.load_end.assign(files.size(), 0);
  for (size_t i = 0; i < files.size(); ++i) {
    const FileToLoad& f = files[i];
    InputFile file = InputFile::open(f.path);
    const uint64_t size = file.size();
    if (f.expected_size >= 0 && size != static_cast<uint64_t>(f.expected_size))
      throw ReadError(f.path + ": the file changed while it was read: it has " +
                      std::to_string(size) + " bytes, " + std::to_string(f.expected_size) +
                      " when its header was read");
    if (!f.ranges.empty() && f.ranges.back().end != size) {
      wrong_size.push_back(f.name);
      continue;
    }
    for (const TensorToLoad& t : f.tensors)
      if (t.offset + t.length > size)
        throw ReadError(where(f, t) + " lies past the end of the file (" + std::to_string(size) +
                        " bytes)");
    if (!f.tensors.empty()) {
      plan.load_begin[i] = f.tensors.front().offset;
      plan.load_end[i] = f.tensors.back().offset + f.tensors.back().length;
    }
    for (size_t t = 0; t < f.tensors.size(); ++t)
      if (f.tensors[t].has_digest) plan.hashed.emplace_back(i, t);
    if (f.ranges.empty()) {
      plan.spans.push_back(std::move(file));
      plan.span_file.push_back(i);
      plan.span_range.push_back(-1);
      continue;
    }
    for (size_t r = 0; r < f.ranges.size(); ++r) {
      plan.spans.push_back(file.window(f.ranges[r].start, f.ranges[r].end - f.ranges[r].start));
      plan.span_file.push_back(i);
      plan.span_range.push_back(static_cast<int64_t>(r));
    }
  }
  if (!wrong_size.empty()) throw LoadMismatch(wrong_size, {});
  plan.threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  return plan;
}

// What the reader checks and hashes on the CPU for span s: the span's part of the header, its
// signed range's digest, and (tensor_ranges) the tree digests of the tensors it holds.
DigestRequest request_for(const LoadPlan& plan, size_t s, bool tensor_ranges) {
  const FileToLoad& f = plan.files[plan.span_file[s]];
  const InputFile& span = plan.spans[s];
  DigestRequest r;
  const uint64_t start = span.start();
  if (start < f.prefix.size())
    r.prefix = f.prefix.substr(start, std::min<uint64_t>(span.size(), f.prefix.size() - start));
  if (plan.span_range[s] >= 0) r.file_hash = f.ranges[plan.span_range[s]].hash;
  r.range_hash = plan.options.tensor_hash;
  if (tensor_ranges) {
    for (const TensorToLoad& t : f.tensors) {
      if (!t.has_digest) continue;
      if (t.offset < start || t.offset + t.length > start + span.size())
        throw std::invalid_argument(where(f, t) + ": a CPU load hashes a tensor within one "
                                    "signed range of its file");
      r.ranges.push_back({t.offset - start, t.length});
    }
  }
  return r;
}

// Both consumers of a CUDA load's blocks: the CPU digests first (a changed header stops the
// load before its block is copied), then the copy to the device.
class Forward : public BlockConsumer {
 public:
  Forward(FileDigester& digester, DeviceTarget& target) : digester_(digester), target_(target) {}
  void on_block(const Block& b) override {
    digester_.on_block(b);
    target_.on_block(b);
  }
  bool wants_in_order() const override { return digester_.wants_in_order(); }
  void on_block_in_order(const Block& b) override { digester_.on_block_in_order(b); }
  void on_file_done(size_t f) override { digester_.on_file_done(f); }

 private:
  FileDigester& digester_;
  DeviceTarget& target_;
};

// The signed ranges whose digest differs, by name (a shard as name:start:end).
std::vector<std::string> changed_ranges(const LoadPlan& plan,
                                        const std::vector<FileDigests>& got) {
  std::vector<std::string> changed;
  for (size_t s = 0; s < plan.spans.size(); ++s) {
    if (plan.span_range[s] < 0) continue;
    const FileToLoad& f = plan.files[plan.span_file[s]];
    const SignedRange& r = f.ranges[plan.span_range[s]];
    if (got[s].file == r.digest) continue;
    const bool whole = f.ranges.size() == 1 && r.start == 0;
    changed.push_back(whole ? f.name
                            : f.name + ":" + std::to_string(r.start) + ":" + std::to_string(r.end));
  }
  return changed;
}

// Tensor t of its file's loaded bytes `bytes` (which start at file offset `begin`) as its
// dtype and shape: a view, or an aligned copy where its offset does not suit its dtype.
at::Tensor as_tensor(const at::Tensor& bytes, uint64_t begin, const TensorToLoad& t) {
  const at::ScalarType type = scalar_type_of(t.dtype);
  if (t.length == 0) return at::empty(t.shape, bytes.options().dtype(type));  // nothing to view
  at::Tensor raw = bytes.narrow(0, static_cast<int64_t>(t.offset - begin),
                                static_cast<int64_t>(t.length));
  if (reinterpret_cast<uintptr_t>(raw.data_ptr()) % c10::elementSize(type) != 0) raw = raw.clone();
  return raw.view(type).view(t.shape);
}

// loaded[i]: file i's bytes from file offset begin[i] on.
NamedTensors assemble(const LoadPlan& plan, const std::vector<at::Tensor>& loaded,
                      const std::vector<uint64_t>& begin) {
  NamedTensors out;
  for (size_t i = 0; i < plan.files.size(); ++i)
    for (const TensorToLoad& t : plan.files[i].tensors)
      out.emplace_back(t.name, as_tensor(loaded[i], begin[i], t));
  return out;
}

void check_tensors(const LoadPlan& plan, const std::vector<Digest>& digests,
                   std::vector<std::string> changed_files) {
  std::vector<std::pair<std::string, std::string>> changed;
  for (size_t k = 0; k < plan.hashed.size(); ++k) {
    const FileToLoad& f = plan.files[plan.hashed[k].first];
    const TensorToLoad& t = f.tensors[plan.hashed[k].second];
    if (digests[k] != t.digest) changed.emplace_back(f.name, t.name);
  }
  if (!changed.empty() || !changed_files.empty())
    throw LoadMismatch(std::move(changed_files), std::move(changed));
}

// CPU: the files holding tensors are read straight into one buffer each (the tensors are views
// of it), the others through the reader's own buffers; the reader's threads hash everything.
NamedTensors load_to_cpu(LoadPlan& plan) {
  std::vector<DigestRequest> requests;
  for (size_t s = 0; s < plan.spans.size(); ++s) requests.push_back(request_for(plan, s, true));
  std::vector<at::Tensor> whole(plan.files.size());
  struct Group {
    std::vector<InputFile> spans;
    std::vector<DigestRequest> requests;
    std::vector<size_t> plan_index;
    std::vector<uint8_t*> destinations;
  } direct, staged;
  for (size_t s = 0; s < plan.spans.size(); ++s) {
    const size_t f = plan.span_file[s];
    Group& g = plan.files[f].tensors.empty() ? staged : direct;
    if (&g == &direct) {
      if (!whole[f].defined())
        whole[f] = at::empty({static_cast<int64_t>(plan.spans[s].file_size())}, at::kByte);
      g.destinations.push_back(whole[f].data_ptr<uint8_t>() + plan.spans[s].start());
    }
    g.spans.push_back(std::move(plan.spans[s]));
    g.requests.push_back(requests[s]);
    g.plan_index.push_back(s);
  }
  std::vector<FileDigests> got(plan.spans.size());
  for (Group* g : {&staged, &direct}) {
    if (g->spans.empty()) continue;
    ReadOptions ro;
    ro.threads = plan.threads;
    ro.block_size = plan.options.block_size;
    ro.destinations = g->destinations;
    FileDigester digester(g->spans, g->requests);
    read_files(g->spans, digester, ro);
    const std::vector<FileDigests> results = digester.results();
    for (size_t k = 0; k < results.size(); ++k) got[g->plan_index[k]] = results[k];
  }
  // Spans come in file order, and each span's range digests in tensor order: together, the
  // digests of plan.hashed in order.
  std::vector<Digest> digests;
  for (const FileDigests& d : got) digests.insert(digests.end(), d.ranges.begin(), d.ranges.end());
  check_tensors(plan, digests, changed_ranges(plan, got));
  return assemble(plan, whole, std::vector<uint64_t>(plan.files.size(), 0));
}

NamedTensors load_to_cuda(LoadPlan& plan) {
  if (cuda_maker() == nullptr)
    throw std::invalid_argument("this build of Sentry has no CUDA support; load to the CPU");
  std::unique_ptr<DeviceTarget> target = cuda_maker()(plan);
  std::vector<DigestRequest> requests;
  for (size_t s = 0; s < plan.spans.size(); ++s) requests.push_back(request_for(plan, s, false));
  FileDigester digester(plan.spans, requests);
  Forward consumer(digester, *target);
  ReadOptions ro;
  ro.threads = plan.threads;
  ro.block_size = plan.options.block_size;
  ro.staging = target->staging();
  read_files(plan.spans, consumer, ro);
  const std::vector<Digest> digests = target->finish();
  check_tensors(plan, digests, changed_ranges(plan, digester.results()));
  target->hand_over();  // before assemble(), whose aligned copies run on the caller's stream
  std::vector<at::Tensor> loaded(plan.files.size());
  for (size_t i = 0; i < plan.files.size(); ++i)
    if (!plan.files[i].tensors.empty()) loaded[i] = target->loaded(i);
  return assemble(plan, loaded, plan.load_begin);
}

}  // namespace

void register_cuda_target(DeviceTargetMaker maker) { cuda_maker() = maker; }

NamedTensors load_files(const std::vector<FileToLoad>& files, const LoadOptions& options) {
  const size_t b = options.block_size;
  if (b < (64u << 10) || (b & (b - 1)) != 0)
    throw std::invalid_argument("block_size must be a power of two of at least 64 KiB, got " +
                                std::to_string(b));
  if (!options.device.is_cpu() && !options.device.is_cuda())
    throw std::invalid_argument("load to the CPU or a CUDA device, not " + options.device.str());
  check_table(files);
  LoadPlan plan = make_plan(files, options);
  return options.device.is_cpu() ? load_to_cpu(plan) : load_to_cuda(plan);
}

}  // namespace io
}  // namespace sentry
