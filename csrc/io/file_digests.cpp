#include "file_digests.h"

#include <openssl/sha.h>
#include <string.h>

#include <algorithm>

#include "tree_accumulator.h"

namespace sentry {
namespace io {

FileHash parse_file_hash(const std::string& name) {
  if (name.empty()) return FileHash::kNone;
  if (name == "sha256") return FileHash::kSha256;
  if (name == "blake3") return FileHash::kBlake3;
  if (name == "sha256-tree") return FileHash::kSha256Tree;
  throw std::invalid_argument("unknown file hash '" + name +
                              "'; use sha256, blake3 or sha256-tree");
}

TreeHash parse_tree_hash(const std::string& name) {
  if (name == "blake3") return TreeHash::kBlake3;
  if (name == "sha256-tree") return TreeHash::kSha256Tree;
  throw std::invalid_argument("unknown tensor hash '" + name + "'; use blake3 or sha256-tree");
}

namespace {

// A tree hash of spans, whichever the tree.
class Spans {
 public:
  virtual ~Spans() = default;
  virtual void add(uint64_t offset, const uint8_t* data, uint64_t n) = 0;
  virtual void finish(uint8_t out[32]) = 0;
};

template <class Tree>
class TreeSpans : public Spans {
 public:
  explicit TreeSpans(uint64_t total) : acc_(total) {}
  void add(uint64_t offset, const uint8_t* data, uint64_t n) override { acc_.add(offset, data, n); }
  void finish(uint8_t out[32]) override { acc_.finish(out); }

 private:
  TreeAccumulator<Tree> acc_;
};

std::unique_ptr<Spans> make_spans(TreeHash hash, uint64_t total) {
  if (hash == TreeHash::kBlake3) return std::make_unique<TreeSpans<Blake3Tree>>(total);
  return std::make_unique<TreeSpans<Sha256Tree>>(total);
}

}  // namespace

struct FileDigester::State {
  const DigestRequest request;  // a copy: the caller's may be a temporary
  const InputFile& file;
  SHA256_CTX sha;
  std::unique_ptr<Spans> whole;  // the file's tree hash
  std::vector<std::unique_ptr<Spans>> ranges;
  FileDigests out;

  State(const DigestRequest& r, const InputFile& f) : request(r), file(f) {
    const std::string& name = f.name();
    if (r.expected_size >= 0 && static_cast<uint64_t>(r.expected_size) != f.size())
      throw ReadError(name + ": the file changed while it was read: it has " +
                      std::to_string(f.size()) + " bytes, " + std::to_string(r.expected_size) +
                      " when it was first read");
    if (r.prefix.size() > f.size())
      throw ReadError(name + ": the file changed while it was read: it has " +
                      std::to_string(f.size()) + " bytes, fewer than the " +
                      std::to_string(r.prefix.size()) + " read before");
    uint64_t end = 0;
    for (const ByteRange& range : r.ranges) {
      if (range.offset < end || range.offset > f.size() || range.length > f.size() - range.offset)
        throw std::invalid_argument(name + ": byte range [" + std::to_string(range.offset) +
                                    ", +" + std::to_string(range.length) +
                                    ") overlaps the previous one or lies past the end of the "
                                    "file (" + std::to_string(f.size()) + " bytes)");
      end = range.offset + range.length;
      ranges.push_back(make_spans(r.range_hash, range.length));
    }
    if (r.file_hash == FileHash::kSha256) SHA256_Init(&sha);
    if (r.file_hash == FileHash::kBlake3) whole = make_spans(TreeHash::kBlake3, f.size());
    if (r.file_hash == FileHash::kSha256Tree) whole = make_spans(TreeHash::kSha256Tree, f.size());
    out.ranges.resize(r.ranges.size());
  }
};

FileDigester::FileDigester(const std::vector<InputFile>& files,
                           const std::vector<DigestRequest>& requests)
    : files_(files) {
  if (requests.size() != files.size())
    throw std::invalid_argument(std::to_string(requests.size()) + " digest requests for " +
                                std::to_string(files.size()) + " files");
  for (size_t i = 0; i < files.size(); ++i) {
    states_.push_back(std::make_unique<State>(requests[i], files[i]));
    in_order_ = in_order_ || requests[i].file_hash == FileHash::kSha256;
  }
}

FileDigester::~FileDigester() = default;

void FileDigester::on_block(const Block& block) {
  State& s = *states_[block.file];
  const uint64_t end = block.offset + block.size;
  const std::string& prefix = s.request.prefix;
  if (block.offset < prefix.size()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(prefix.size(), end) - block.offset);
    if (memcmp(block.data, prefix.data() + block.offset, n) != 0)
      throw ReadError(s.file.name() + ": the file changed while it was read: its first " +
                      std::to_string(prefix.size()) +
                      " bytes (the header) differ from those read before");
  }
  if (s.whole) s.whole->add(block.offset, block.data, block.size);
  const std::vector<ByteRange>& ranges = s.request.ranges;
  // The first range that ends after the block starts (ranges ascend and do not overlap).
  auto it = std::upper_bound(ranges.begin(), ranges.end(), block.offset,
                             [](uint64_t at, const ByteRange& r) { return at < r.offset + r.length; });
  for (; it != ranges.end() && it->offset < end; ++it) {
    const uint64_t lo = std::max(it->offset, block.offset);
    const uint64_t hi = std::min(it->offset + it->length, end);
    if (hi > lo)
      s.ranges[it - ranges.begin()]->add(lo - it->offset, block.data + (lo - block.offset), hi - lo);
  }
}

bool FileDigester::wants_in_order() const { return in_order_; }

void FileDigester::on_block_in_order(const Block& block) {
  State& s = *states_[block.file];
  if (s.request.file_hash == FileHash::kSha256) SHA256_Update(&s.sha, block.data, block.size);
}

void FileDigester::on_file_done(size_t file) {
  State& s = *states_[file];
  if (s.request.file_hash == FileHash::kSha256) SHA256_Final(s.out.file.data(), &s.sha);
  if (s.whole) s.whole->finish(s.out.file.data());
  for (size_t r = 0; r < s.ranges.size(); ++r) s.ranges[r]->finish(s.out.ranges[r].data());
}

std::vector<FileDigests> FileDigester::results() const {
  std::vector<FileDigests> out;
  out.reserve(states_.size());
  for (const auto& s : states_) out.push_back(s->out);
  return out;
}

std::vector<FileDigests> digest_files(const std::vector<InputFile>& files,
                                      const std::vector<DigestRequest>& requests,
                                      const ReadOptions& options) {
  FileDigester digester(files, requests);
  read_files(files, digester, options);
  return digester.results();
}

}  // namespace io
}  // namespace sentry
