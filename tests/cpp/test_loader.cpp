// The verified loader's C++ core (csrc/io/loader.h) on CPU tensors, against OpenSSL's SHA-256
// and the recursive RFC 9162 reference (sha256-tree): what it returns is what the file holds,
// every mismatch is named, and a table that would leave bytes unchecked is refused unread.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "hash_references.h"
#include "io/loader.h"

namespace {

using sentry::io::Digest;
using sentry::io::FileHash;
using sentry::io::FileToLoad;
using sentry::io::LoadMismatch;
using sentry::io::LoadOptions;
using sentry::io::SignedRange;
using sentry::io::TensorToLoad;
using sentry::io::TreeHash;
using sentry_test::openssl_sha256;
using sentry_test::random_bytes;
using sentry_test::reference_sha256_tree;

Digest from_hex(const std::string& h) {
  Digest d;
  for (size_t i = 0; i < 32; ++i) d[i] = static_cast<uint8_t>(std::stoi(h.substr(2 * i, 2), nullptr, 16));
  return d;
}

class TempFile {
 public:
  explicit TempFile(const std::vector<uint8_t>& content) {
    char tmpl[] = "/tmp/sentry_loader_XXXXXX";
    const int fd = mkstemp(tmpl);
    path_ = tmpl;
    EXPECT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    close(fd);
  }
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A 101-byte "header", then a float tensor (at an odd offset) and an int64 tensor that end the
// file.
struct Model {
  std::vector<uint8_t> bytes = random_bytes(100 + 4 * 3000 + 8 * 500 + 1, 5);
  std::vector<TensorToLoad> tensors() const {
    return {{"w", "F32", {3000}, 101, 4 * 3000}, {"steps", "I64", {500}, 101 + 12000, 8 * 500}};
  }
  std::string prefix() const { return std::string(bytes.begin(), bytes.begin() + 101); }
};

LoadOptions small_blocks() {
  LoadOptions o;
  o.block_size = 64 << 10;
  o.threads = 3;
  o.tensor_hash = TreeHash::kSha256Tree;
  return o;
}

void expect_bytes(const at::Tensor& t, const uint8_t* want) {
  const at::Tensor flat = t.contiguous().reshape({-1}).view(at::kByte);
  ASSERT_EQ(memcmp(flat.const_data_ptr<uint8_t>(), want, flat.numel()), 0);
}

TEST(Loader, ShardsOfAFileEachCheckedAndTheTensorsReturned) {
  const Model m;
  const TempFile file(m.bytes);
  FileToLoad f{file.path(), "m.bin"};
  for (uint64_t start = 0; start < m.bytes.size(); start += 5000) {
    const uint64_t end = std::min<uint64_t>(start + 5000, m.bytes.size());
    f.ranges.push_back({start, end, FileHash::kSha256,
                        from_hex(openssl_sha256(m.bytes.data() + start, end - start))});
  }
  f.tensors = m.tensors();
  const auto got = sentry::io::load_files({f}, small_blocks());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].first, "w");
  EXPECT_EQ(got[0].second.scalar_type(), at::kFloat);
  expect_bytes(got[0].second, m.bytes.data() + 101);  // copied to aligned memory
  expect_bytes(got[1].second, m.bytes.data() + 101 + 12000);

  f.ranges[1].digest[0] ^= 1;  // as if bytes [5000, 10000) had changed
  try {
    sentry::io::load_files({f}, small_blocks());
    ADD_FAILURE() << "no LoadMismatch";
  } catch (const LoadMismatch& e) {
    EXPECT_EQ(e.files, std::vector<std::string>{"m.bin:5000:10000"});
  }
}

TEST(Loader, TensorDigestsNameTheChangedTensor) {
  const Model m;
  const std::vector<uint8_t>& data = m.bytes;
  const TempFile file(data);
  FileToLoad f{file.path(), "m.safetensors", m.prefix(), static_cast<int64_t>(data.size())};
  f.tensors = m.tensors();
  for (TensorToLoad& t : f.tensors) {
    t.has_digest = true;
    t.digest = from_hex(reference_sha256_tree(data.data() + t.offset, t.length));
  }
  const auto got = sentry::io::load_files({f}, small_blocks());
  expect_bytes(got[1].second, data.data() + 101 + 12000);
  f.tensors[1].digest[31] ^= 1;
  try {
    sentry::io::load_files({f}, small_blocks());
    ADD_FAILURE() << "no LoadMismatch";
  } catch (const LoadMismatch& e) {
    EXPECT_TRUE(e.files.empty());
    ASSERT_EQ(e.tensors.size(), 1u);
    EXPECT_EQ(e.tensors[0], std::make_pair(std::string("m.safetensors"), std::string("steps")));
  }
}

TEST(Loader, ATableLeavingBytesUncheckedIsRefused) {
  const Model m;
  const TempFile file(m.bytes);
  FileToLoad f{file.path(), "m.bin", m.prefix(), static_cast<int64_t>(m.bytes.size()) + 1};
  f.tensors = m.tensors();
  for (TensorToLoad& t : f.tensors) t.has_digest = true;
  // A byte after the last tensor would be covered by nothing.
  EXPECT_THROW(sentry::io::load_files({f}, small_blocks()), std::invalid_argument);
  f.expected_size -= 1;
  f.tensors[0].has_digest = false;  // a tensor without a digest in a file without one
  EXPECT_THROW(sentry::io::load_files({f}, small_blocks()), std::invalid_argument);
}

TEST(Loader, AFileOfAnotherSizeThanSignedDoesNotMatch) {
  const Model m;
  const TempFile file(m.bytes);
  FileToLoad f{file.path(), "m.bin"};
  f.ranges.push_back({0, m.bytes.size() + 1, FileHash::kSha256, Digest{}});
  try {
    sentry::io::load_files({f}, small_blocks());
    ADD_FAILURE() << "no LoadMismatch";
  } catch (const LoadMismatch& e) {
    EXPECT_EQ(e.files, std::vector<std::string>{"m.bin"});
  }
}

}  // namespace
