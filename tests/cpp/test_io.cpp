// The reader of untrusted files (csrc/io) against independent references:
//  * TreeAccumulator, the incremental tree hash: the official BLAKE3 vectors and a recursive
//    RFC 9162 sha256-tree, for the input split into two spans at every split point (both
//    orders), into many random spans in random order, and from several threads at once;
//  * read_files / digest_files: OpenSSL's SHA-256 and the same references over files on disk,
//    with every block size, thread count and buffer mode; files that shrink, grow or are
//    rewritten while they are read, FIFOs and directories are ReadErrors naming the file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hash_references.h"
#include "io/file_digests.h"
#include "io/tree_accumulator.h"
#include "tree_host.h"

namespace {

using namespace sentry_test;
using sentry::Blake3Tree;
using sentry::Sha256Tree;
using sentry::io::TreeAccumulator;

struct Span {
  uint64_t offset, length;
};

template <class Tree>
std::string accumulate(const std::vector<uint8_t>& data, const std::vector<Span>& spans) {
  TreeAccumulator<Tree> acc(data.size());
  for (const Span& s : spans) acc.add(s.offset, data.data() + s.offset, s.length);
  uint8_t out[32];
  acc.finish(out);
  return hex(out, 32);
}

template <class Tree>
std::string reference(const std::vector<uint8_t>& data) {
  if constexpr (std::is_same_v<Tree, Sha256Tree>) return reference_sha256_tree(data);
  uint8_t out[32];
  sentry::tree_hash<Tree>(data.data(), data.size(), out);  // core: checked on the vectors
  return hex(out, 32);
}

// Split points: all of them for inputs up to `every`, else the leaf boundaries +-1 and a few
// random ones.
std::vector<uint64_t> split_points(uint64_t n, uint64_t leaf, uint64_t every) {
  std::vector<uint64_t> out;
  if (n <= every) {
    out.resize(n + 1);
    std::iota(out.begin(), out.end(), 0);
    return out;
  }
  for (uint64_t b = 0; b <= n; b += leaf)
    for (int64_t d = -1; d <= 1; ++d)
      if (int64_t(b) + d >= 0 && uint64_t(int64_t(b) + d) <= n) out.push_back(b + d);
  out.push_back(n);
  std::mt19937_64 gen(n);
  for (int i = 0; i < 64; ++i) out.push_back(gen() % (n + 1));
  return out;
}

// Cuts [0, n) into random spans (some empty) and shuffles them.
std::vector<Span> random_spans(uint64_t n, uint64_t max_span, std::mt19937_64& gen) {
  std::vector<Span> spans;
  for (uint64_t at = 0; at < n;) {
    const uint64_t len = std::min<uint64_t>(n - at, gen() % (max_span + 1));
    spans.push_back({at, len});
    at += len;
  }
  std::shuffle(spans.begin(), spans.end(), gen);
  return spans;
}

TEST(TreeAccumulator, Blake3OfficialVectorsAtEverySplitPoint) {
  std::vector<std::pair<size_t, std::string>> cases;
  ASSERT_TRUE(load_blake3_vectors(&cases));
  ASSERT_GE(cases.size(), 30u) << "too few vectors parsed";
  for (const auto& [len, expected] : cases) {
    const auto input = blake3_vector_input(len);
    ASSERT_EQ(accumulate<Blake3Tree>(input, {{0, len}}), expected) << "one span of " << len;
    for (uint64_t k : split_points(len, 1024, 16384)) {
      ASSERT_EQ(accumulate<Blake3Tree>(input, {{0, k}, {k, len - k}}), expected)
          << "input_len " << len << " split at " << k;
      ASSERT_EQ(accumulate<Blake3Tree>(input, {{k, len - k}, {0, k}}), expected)
          << "input_len " << len << " split at " << k << ", second part first";
    }
  }
}

TEST(TreeAccumulator, Blake3OfficialVectorsInRandomSpans) {
  std::mt19937_64 gen(1);
  std::vector<std::pair<size_t, std::string>> cases;
  ASSERT_TRUE(load_blake3_vectors(&cases));
  for (const auto& [len, expected] : cases) {
    const auto input = blake3_vector_input(len);
    for (uint64_t max_span : {1, 7, 64, 1000, 1024, 3000, 70000})
      ASSERT_EQ(accumulate<Blake3Tree>(input, random_spans(len, max_span, gen)), expected)
          << "input_len " << len << ", spans of at most " << max_span;
  }
}

TEST(TreeAccumulator, Sha256TreeAtEverySplitPoint) {
  for (uint64_t n : {0, 1, 63, 4095, 4096, 4097, 8192, 8193, 3 * 4096 + 5, 5 * 4096,
                     9 * 4096 - 1, 17 * 4096 + 100, 300000}) {
    const auto data = random_bytes(n, static_cast<uint32_t>(n) + 3);
    const std::string expected = reference_sha256_tree(data);
    for (uint64_t k : split_points(n, 4096, 9000)) {
      ASSERT_EQ(accumulate<Sha256Tree>(data, {{0, k}, {k, n - k}}), expected)
          << "length " << n << " split at " << k;
      ASSERT_EQ(accumulate<Sha256Tree>(data, {{k, n - k}, {0, k}}), expected)
          << "length " << n << " split at " << k << ", second part first";
    }
  }
}

template <class Tree>
void check_random_spans() {
  std::mt19937_64 gen(7);
  for (uint64_t n : {0, 1, 1023, 1024, 1025, 4096 * 3 + 1, 65536, 65537, 1 << 20, 3000017}) {
    const auto data = random_bytes(n, static_cast<uint32_t>(n));
    const std::string expected = reference<Tree>(data);
    for (uint64_t max_span : {5, 4096, 100000, 1 << 20})
      ASSERT_EQ(accumulate<Tree>(data, random_spans(n, max_span, gen)), expected)
          << "length " << n << ", spans of at most " << max_span;
  }
}

TEST(TreeAccumulator, Blake3RandomSpans) { check_random_spans<Blake3Tree>(); }
TEST(TreeAccumulator, Sha256TreeRandomSpans) { check_random_spans<Sha256Tree>(); }

template <class Tree>
void check_threads() {
  const uint64_t n = 5'000'003;
  const auto data = random_bytes(n, 11);
  std::mt19937_64 gen(3);
  const auto spans = random_spans(n, 200000, gen);
  TreeAccumulator<Tree> acc(n);
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (size_t i; (i = next++) < spans.size();)
        acc.add(spans[i].offset, data.data() + spans[i].offset, spans[i].length);
    });
  for (auto& t : threads) t.join();
  uint8_t out[32];
  acc.finish(out);
  EXPECT_EQ(hex(out, 32), reference<Tree>(data));
}

TEST(TreeAccumulator, Blake3SpansFromSeveralThreads) { check_threads<Blake3Tree>(); }
TEST(TreeAccumulator, Sha256TreeSpansFromSeveralThreads) { check_threads<Sha256Tree>(); }

TEST(TreeAccumulator, RefusesMissingRepeatedAndOutsideBytes) {
  const auto data = random_bytes(10000, 5);
  uint8_t out[32];
  {
    TreeAccumulator<Blake3Tree> acc(10000);
    acc.add(0, data.data(), 5000);
    EXPECT_THROW(acc.finish(out), std::logic_error) << "half the input";
  }
  {
    TreeAccumulator<Blake3Tree> acc(10000);
    acc.add(0, data.data(), 10000);
    acc.add(2048, data.data() + 2048, 1024);
    EXPECT_THROW(acc.finish(out), std::logic_error) << "a leaf added twice";
  }
  {
    TreeAccumulator<Sha256Tree> acc(100);
    acc.add(0, data.data(), 100);
    acc.add(10, data.data() + 10, 5);
    EXPECT_THROW(acc.finish(out), std::logic_error) << "bytes of the only leaf added twice";
  }
  TreeAccumulator<Blake3Tree> acc(10000);
  EXPECT_THROW(acc.add(9000, data.data(), 1001), std::out_of_range);
}

// ---- files ----------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sentry_test_io_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { (void)system(("rm -rf '" + path_ + "'").c_str()); }
  std::string file(const std::string& name, const std::vector<uint8_t>& content) const {
    const std::string p = path_ + "/" + name;
    FILE* f = fopen(p.c_str(), "wb");
    if (!content.empty()) fwrite(content.data(), 1, content.size(), f);
    fclose(f);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

using sentry::io::Block;
using sentry::io::ByteRange;
using sentry::io::DigestRequest;
using sentry::io::FileHash;
using sentry::io::InputFile;
using sentry::io::ReadError;
using sentry::io::ReadOptions;
using sentry::io::TreeHash;

std::vector<InputFile> open_all(const std::vector<std::string>& paths) {
  std::vector<InputFile> files;
  for (const auto& p : paths) files.push_back(InputFile::open(p));
  return files;
}

// Records what the reader hands out and copies it, checking the callbacks' promises.
class Recorder : public sentry::io::BlockConsumer {
 public:
  explicit Recorder(const std::vector<InputFile>& files) : copies_(files.size()), next_(files.size()) {
    for (size_t f = 0; f < files.size(); ++f) copies_[f].resize(files[f].size());
  }
  void on_block(const Block& b) override {
    memcpy(copies_[b.file].data() + b.offset, b.data, b.size);
  }
  bool wants_in_order() const override { return true; }
  void on_block_in_order(const Block& b) override {
    if (b.index != next_[b.file]++) out_of_order_ = true;
    // The buffer still holds the block's bytes.
    if (memcmp(copies_[b.file].data() + b.offset, b.data, b.size) != 0) reused_early_ = true;
  }
  void on_file_done(size_t f) override { ++done_[f]; }

  std::vector<std::vector<uint8_t>> copies_;
  std::vector<uint64_t> next_;
  std::map<size_t, int> done_;
  bool out_of_order_ = false, reused_early_ = false;
};

TEST(ReadFiles, EveryByteOnceInOrderWhateverTheBuffers) {
  TempDir dir;
  const std::vector<uint64_t> sizes = {0, 1, 65535, 65536, 65537, 3 * 65536 + 17, 1 << 20, 777777};
  std::vector<std::string> paths;
  std::vector<std::vector<uint8_t>> contents;
  for (size_t i = 0; i < sizes.size(); ++i) {
    contents.push_back(random_bytes(sizes[i], static_cast<uint32_t>(i)));
    paths.push_back(dir.file("f" + std::to_string(i), contents.back()));
  }
  for (size_t threads : {1, 2, 5}) {
    for (int mode = 0; mode < 3; ++mode) {  // own staging, caller's staging, in place
      const auto files = open_all(paths);
      Recorder rec(files);
      ReadOptions o;
      o.threads = threads;
      o.block_size = 64 << 10;
      std::vector<std::vector<uint8_t>> staging(mode == 1 ? 3 : 0, std::vector<uint8_t>(o.block_size));
      for (auto& s : staging) o.staging.push_back(s.data());
      std::vector<std::vector<uint8_t>> dest(files.size());
      if (mode == 2)
        for (size_t f = 0; f < files.size(); ++f) {
          dest[f].resize(files[f].size());
          o.destinations.push_back(dest[f].data());
        }
      sentry::io::read_files(files, rec, o);
      for (size_t f = 0; f < files.size(); ++f) {
        EXPECT_EQ(rec.copies_[f], contents[f]) << "file " << f << ", mode " << mode;
        if (mode == 2) {
          EXPECT_EQ(dest[f], contents[f]) << "in place, file " << f;
        }
        EXPECT_EQ(rec.done_[f], 1) << "file " << f;
      }
      EXPECT_FALSE(rec.out_of_order_) << threads << " threads, mode " << mode;
      EXPECT_FALSE(rec.reused_early_) << threads << " threads, mode " << mode;
    }
  }
}

TEST(DigestFiles, MatchOpenSslAndTheTreeReferences) {
  TempDir dir;
  std::mt19937_64 gen(9);
  std::vector<std::string> paths;
  std::vector<std::vector<uint8_t>> contents;
  std::vector<DigestRequest> requests;
  const FileHash kinds[] = {FileHash::kSha256, FileHash::kBlake3, FileHash::kSha256Tree,
                            FileHash::kNone};
  for (size_t i = 0; i < 12; ++i) {
    const uint64_t n = i == 0 ? 0 : gen() % 700000;
    contents.push_back(random_bytes(n, static_cast<uint32_t>(i) + 100));
    paths.push_back(dir.file("m" + std::to_string(i), contents.back()));
    DigestRequest r;
    r.file_hash = kinds[i % 4];
    r.range_hash = i % 3 ? TreeHash::kBlake3 : TreeHash::kSha256Tree;
    r.prefix.assign(contents.back().begin(), contents.back().begin() + std::min<uint64_t>(n, 100));
    r.expected_size = static_cast<int64_t>(n);
    // Ranges with gaps, empty ones, ones within a block and ones across several.
    for (uint64_t at = std::min<uint64_t>(n, 100); at < n;) {
      const uint64_t len = std::min<uint64_t>(n - at, gen() % 200000);
      r.ranges.push_back({at, len});
      at += len + gen() % 3;
    }
    requests.push_back(r);
  }
  for (size_t threads : {1, 3}) {
    ReadOptions o;
    o.threads = threads;
    o.block_size = 64 << 10;
    const auto files = open_all(paths);
    const auto got = sentry::io::digest_files(files, requests, o);
    for (size_t i = 0; i < files.size(); ++i) {
      const auto& data = contents[i];
      const std::string file_hex = hex(got[i].file.data(), 32);
      switch (requests[i].file_hash) {
        case FileHash::kSha256:
          EXPECT_EQ(file_hex, openssl_sha256(data.data(), data.size())) << "file " << i;
          break;
        case FileHash::kBlake3:
          EXPECT_EQ(file_hex, reference<Blake3Tree>(data)) << "file " << i;
          break;
        case FileHash::kSha256Tree:
          EXPECT_EQ(file_hex, reference_sha256_tree(data)) << "file " << i;
          break;
        case FileHash::kNone:
          EXPECT_EQ(file_hex, std::string(64, '0')) << "file " << i;
      }
      ASSERT_EQ(got[i].ranges.size(), requests[i].ranges.size());
      for (size_t r = 0; r < got[i].ranges.size(); ++r) {
        const ByteRange br = requests[i].ranges[r];
        const std::vector<uint8_t> part(data.begin() + br.offset,
                                        data.begin() + br.offset + br.length);
        const std::string want = requests[i].range_hash == TreeHash::kBlake3
                                     ? reference<Blake3Tree>(part)
                                     : reference_sha256_tree(part);
        EXPECT_EQ(hex(got[i].ranges[r].data(), 32), want) << "file " << i << " range " << r;
      }
    }
  }
}

void expect_read_error(const std::function<void()>& fn, const std::string& name,
                       const std::string& why) {
  try {
    fn();
    ADD_FAILURE() << "no ReadError (expected: " << why << ")";
  } catch (const ReadError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find(why), std::string::npos) << msg;
  }
}

DigestRequest sha256_and_ranges(uint64_t n) {
  DigestRequest r;
  r.file_hash = FileHash::kSha256;
  r.ranges = {{0, n / 2}, {n / 2, n - n / 2}};
  return r;
}

TEST(DigestFiles, FileTruncatedAfterOpenIsAReadError) {
  TempDir dir;
  const std::string path = dir.file("t", random_bytes(1 << 20, 1));
  const auto files = open_all({path});
  ASSERT_EQ(truncate(path.c_str(), 1000), 0);
  ReadOptions o;
  o.block_size = 64 << 10;
  expect_read_error([&] { sentry::io::digest_files(files, {sha256_and_ranges(1 << 20)}, o); },
                    path, "changed while it was read");
}

// Truncates (or extends) the file when the first block has been read.
class ChangeAfterFirstBlock : public sentry::io::FileDigester {
 public:
  ChangeAfterFirstBlock(const std::vector<InputFile>& f, const std::vector<DigestRequest>& r,
                        std::string path, off_t size)
      : FileDigester(f, r), path_(std::move(path)), size_(size) {}
  void on_block(const Block& b) override {
    if (!changed_.exchange(true)) {
      EXPECT_EQ(truncate(path_.c_str(), size_), 0);
    }
    FileDigester::on_block(b);
  }

 private:
  std::string path_;
  off_t size_;
  std::atomic<bool> changed_{false};
};

TEST(DigestFiles, FileShrinkingOrGrowingWhileReadIsAReadError) {
  TempDir dir;
  const uint64_t n = 1 << 20;
  for (off_t new_size : {off_t(0), off_t(n / 2), off_t(n - 1), off_t(n + 1), off_t(2 * n)}) {
    for (size_t threads : {1, 4}) {
      const std::string path = dir.file("c", random_bytes(n, 2));
      const auto files = open_all({path});
      const std::vector<DigestRequest> requests{sha256_and_ranges(n)};
      ChangeAfterFirstBlock consumer(files, requests, path, new_size);
      ReadOptions o;
      o.block_size = 64 << 10;
      o.threads = threads;
      expect_read_error([&] { sentry::io::read_files(files, consumer, o); }, path,
                        "changed while it was read");
    }
  }
}

TEST(DigestFiles, SizeOrHeaderOtherThanReadBeforeIsAReadError) {
  TempDir dir;
  const auto data = random_bytes(200000, 4);
  const std::string path = dir.file("h", data);
  DigestRequest r = sha256_and_ranges(data.size());
  r.expected_size = static_cast<int64_t>(data.size()) + 8;
  expect_read_error([&] { sentry::io::digest_files(open_all({path}), {r}); }, path,
                    "changed while it was read");
  r.expected_size = -1;
  r.prefix.assign(data.begin(), data.begin() + 70000);  // across the first block boundary
  r.prefix[69999] ^= 1;
  ReadOptions o;
  o.block_size = 64 << 10;
  expect_read_error([&] { sentry::io::digest_files(open_all({path}), {r}, o); }, path,
                    "differ from those read before");
  r.prefix[69999] ^= 1;
  EXPECT_NO_THROW(sentry::io::digest_files(open_all({path}), {r}, o));
}

TEST(InputFile, RefusesFifosAndDirectoriesWithoutBlocking) {
  TempDir dir;
  const std::string fifo = dir.path() + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  expect_read_error([&] { InputFile::open(fifo); }, fifo, "not a regular file");
  expect_read_error([&] { InputFile::open(dir.path()); }, dir.path(), "not a regular file");
  expect_read_error([&] { InputFile::open(dir.path() + "/missing"); }, "missing",
                    "No such file");
}

// Windows of one file, hashed as files of their own (the shards of the reference tool's shards
// serialization): each digest is OpenSSL's SHA-256 of those bytes; and a window still sees the
// whole file change.
TEST(InputFile, WindowsAreFilesOfTheirOwn) {
  TempDir dir;
  const auto data = random_bytes(700001, 7);
  const std::string path = dir.file("w", data);
  const InputFile whole = InputFile::open(path);
  std::vector<InputFile> windows;
  std::vector<DigestRequest> requests;
  for (uint64_t start = 0; start < data.size(); start += 100000) {
    const uint64_t len = std::min<uint64_t>(100000, data.size() - start);
    windows.push_back(whole.window(start, len));
    EXPECT_EQ(windows.back().start(), start);
    EXPECT_EQ(windows.back().file_size(), data.size());
    DigestRequest r;
    r.file_hash = FileHash::kSha256;
    requests.push_back(r);
  }
  EXPECT_THROW(whole.window(data.size() - 10, 11), std::invalid_argument);
  for (size_t threads : {1, 3}) {
    ReadOptions o;
    o.threads = threads;
    o.block_size = 64 << 10;
    const auto got = sentry::io::digest_files(windows, requests, o);
    for (size_t w = 0; w < windows.size(); ++w)
      EXPECT_EQ(hex(got[w].file.data(), 32),
                openssl_sha256(data.data() + 100000 * w, windows[w].size())) << "window " << w;
  }
  ASSERT_EQ(truncate(path.c_str(), 650000), 0);  // past the first window: still caught
  ReadOptions o;
  o.block_size = 64 << 10;
  std::vector<InputFile> first;
  first.push_back(whole.window(0, 100000));
  expect_read_error([&] { sentry::io::digest_files(first, {requests[0]}, o); }, path,
                    "changed while it was read");
}

// A consumer that fails on one block: the error comes back, no thread hangs.
class FailOnBlock : public sentry::io::BlockConsumer {
 public:
  void on_block(const Block& b) override {
    if (b.index == 3) throw std::runtime_error("consumer failed");
  }
  bool wants_in_order() const override { return true; }
};

TEST(ReadFiles, ConsumerErrorStopsEveryThread) {
  TempDir dir;
  const std::string path = dir.file("e", random_bytes(2 << 20, 6));
  FailOnBlock consumer;
  ReadOptions o;
  o.block_size = 64 << 10;
  o.threads = 4;
  EXPECT_THROW(sentry::io::read_files(open_all({path, path, path}), consumer, o),
               std::runtime_error);
}

}  // namespace
