// The C++ API (sentry/sentry.h) on CPU tensors, through the registered torch.ops.sentry
// operators, against the serial core (tree_hash) on the same bytes.
#include <gtest/gtest.h>
#include <sentry/crypto.h>
#include <sentry/sentry.h>

#include <string>
#include <vector>

#include "tree_host.h"

namespace {

const char* kBlake3Empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

// Lower-case hex of the core's digest of the bytes of a contiguous CPU tensor.
template <class Tree>
std::string core_hex(const at::Tensor& t) {
  EXPECT_TRUE(t.is_contiguous());
  uint8_t out[32];
  sentry::tree_hash<Tree>(static_cast<const uint8_t*>(t.const_data_ptr()),
                          t.numel() * t.element_size(), out);
  return sentry::to_hex(at::from_blob(out, {1, 32}, at::kByte))[0];
}

std::string core_hex(const at::Tensor& t, const std::string& algorithm) {
  return algorithm == "blake3" ? core_hex<sentry::Blake3Tree>(t)
                               : core_hex<sentry::Sha256Tree>(t);
}

class HashTensors : public ::testing::TestWithParam<std::string> {};

TEST_P(HashTensors, MatchesCoreOnTheSameBytes) {
  at::manual_seed(0);
  // Sizes around the leaf sizes and the CPU kernel's 64 KiB work groups, and several dtypes.
  const std::vector<at::Tensor> ts = {
      at::randn({37, 129}),
      at::randint(0, 256, {4096}, at::kByte),
      at::randint(0, 256, {4097}, at::kByte),
      at::randn({1000, 65}, at::kDouble),  // 520000 bytes: several groups
      at::arange(7, at::kLong),
      at::randn({3, 5}).to(at::kBFloat16),
  };
  const at::Tensor d = sentry::hash_tensors(ts, GetParam());
  ASSERT_EQ(d.scalar_type(), at::kByte);
  ASSERT_EQ(d.sizes(), (at::IntArrayRef{static_cast<int64_t>(ts.size()), 32}));
  const auto hexes = sentry::to_hex(d);
  for (size_t i = 0; i < ts.size(); ++i)
    EXPECT_EQ(hexes[i], core_hex(ts[i], GetParam())) << "tensor " << i;
}

TEST_P(HashTensors, NonContiguousViewEqualsContiguous) {
  at::manual_seed(1);
  const at::Tensor t = at::randn({300, 70}).t();  // 84000 bytes, transposed
  ASSERT_FALSE(t.is_contiguous());
  const auto hexes = sentry::to_hex(sentry::hash_tensors({t, t.contiguous()}, GetParam()));
  EXPECT_EQ(hexes[0], hexes[1]);
  EXPECT_EQ(hexes[0], core_hex(t.contiguous(), GetParam()));
}

TEST_P(HashTensors, EmptyTensor) {
  const at::Tensor e = at::empty({0, 3});
  const std::string h = sentry::to_hex(sentry::hash_tensors({e}, GetParam()))[0];
  EXPECT_EQ(h, core_hex(e, GetParam()));
  if (GetParam() == "blake3") EXPECT_EQ(h, kBlake3Empty);
  else EXPECT_EQ(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_P(HashTensors, HashRowsIsPerRowDigest) {
  at::manual_seed(2);
  const at::Tensor x = at::randint(0, 256, {5, 3000}, at::kByte);
  const at::Tensor d = sentry::hash_rows(x, GetParam());
  ASSERT_EQ(d.sizes(), (at::IntArrayRef{5, 32}));
  const auto hexes = sentry::to_hex(d);
  for (int64_t r = 0; r < 5; ++r)
    EXPECT_EQ(hexes[r], core_hex(x[r].contiguous(), GetParam())) << "row " << r;
}

INSTANTIATE_TEST_SUITE_P(Algorithms, HashTensors, ::testing::Values("blake3", "sha256-tree"),
                         [](const auto& info) {
                           return info.param == "blake3" ? std::string("blake3")
                                                         : std::string("sha256_tree");
                         });

TEST(HashTensorsApi, DefaultAlgorithmIsBlake3) {
  const at::Tensor t = at::arange(100, at::kInt);
  EXPECT_TRUE(at::equal(sentry::hash_tensors({t}), sentry::hash_tensors({t}, "blake3")));
}

TEST(HashTensorsApi, NoTensorsGiveNoDigests) {
  const at::Tensor d = sentry::hash_tensors(std::vector<at::Tensor>{});
  EXPECT_EQ(d.sizes(), (at::IntArrayRef{0, 32}));
}

TEST(HashTensorsApi, UnknownAlgorithmThrows) {
  const at::Tensor t = at::ones({4});
  EXPECT_THROW(sentry::hash_tensors({t}, "md5"), c10::Error);
  EXPECT_THROW(sentry::hash_rows(t.view({2, 2}), "sha256"), c10::Error);
}

TEST(ToHex, Formatting) {
  const at::Tensor d = at::arange(64, at::kByte).view({2, 32}) * 4;  // 0x00, 0x04, ... 0xfc
  const auto hexes = sentry::to_hex(d);
  ASSERT_EQ(hexes.size(), 2u);
  EXPECT_EQ(hexes[0], "0004080c1014181c2024282c3034383c4044484c5054585c6064686c7074787c");
  EXPECT_EQ(hexes[1], "8084888c9094989ca0a4a8acb0b4b8bcc0c4c8ccd0d4d8dce0e4e8ecf0f4f8fc");
  EXPECT_THROW(sentry::to_hex(at::zeros({2, 31}, at::kByte)), c10::Error);
  EXPECT_THROW(sentry::to_hex(at::zeros({2, 32}, at::kInt)), c10::Error);
}

// ecdsa_p256_verify through the C++ API, with keys and signatures from sentry/crypto.h.
struct EcdsaRows {
  at::Tensor keys, digests, sigs;
};

EcdsaRows signed_rows(int n) {
  EcdsaRows out{at::empty({n, 64}, at::kByte), at::empty({n, 32}, at::kByte),
                at::empty({n, 64}, at::kByte)};
  for (int i = 0; i < n; ++i) {
    const auto key = sentry::crypto::PrivateKey::generate();
    const std::string data = "row " + std::to_string(i);
    const auto raw = sentry::crypto::der_signature_to_raw(key.sign(data));
    EXPECT_TRUE(raw.has_value());
    const std::string xy = key.public_key().raw_xy();
    const std::string hex = sentry::crypto::sha256_hex(data);
    for (int b = 0; b < 64; ++b) {
      out.keys[i][b] = static_cast<uint8_t>(xy[b]);
      out.sigs[i][b] = static_cast<uint8_t>((*raw)[b]);
    }
    for (int b = 0; b < 32; ++b) out.digests[i][b] = std::stoi(hex.substr(2 * b, 2), nullptr, 16);
  }
  return out;
}

TEST(EcdsaP256Verify, SignaturesVerifyAndFlipsFail) {
  const EcdsaRows rows = signed_rows(8);
  const at::Tensor ok = sentry::ecdsa_p256_verify(rows.keys, rows.digests, rows.sigs);
  ASSERT_EQ(ok.scalar_type(), at::kBool);
  ASSERT_EQ(ok.sizes(), at::IntArrayRef({8}));
  EXPECT_TRUE(ok.all().item<bool>());
  at::Tensor sigs = rows.sigs.clone();
  sigs.select(1, 10).bitwise_xor_(4);
  EXPECT_FALSE(sentry::ecdsa_p256_verify(rows.keys, rows.digests, sigs).any().item<bool>());
  EXPECT_THROW(sentry::ecdsa_p256_verify(rows.keys.to(at::kInt), rows.digests, rows.sigs),
               c10::Error);
  EXPECT_THROW(sentry::ecdsa_p256_verify(rows.keys, rows.digests.slice(1, 0, 31), rows.sigs),
               c10::Error);
  if (at::hasCUDA()) {
    const at::Tensor on_gpu = sentry::ecdsa_p256_verify(
        rows.keys.to(at::kCUDA), rows.digests.to(at::kCUDA), sigs.to(at::kCUDA));
    EXPECT_FALSE(on_gpu.any().item<bool>());
    EXPECT_TRUE(sentry::ecdsa_p256_verify(rows.keys.to(at::kCUDA), rows.digests.to(at::kCUDA),
                                          rows.sigs.to(at::kCUDA))
                    .all()
                    .item<bool>());
  }
}

// Only where torch and the machine have CUDA (skipped otherwise): the CUDA kernels give the
// CPU's digests, for a list and for rows.
TEST(HashTensorsCuda, MatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA";
  at::manual_seed(3);
  const std::vector<at::Tensor> ts = {at::randn({1000, 65}), at::empty({0}),
                                      at::randint(0, 256, {4097}, at::kByte),
                                      at::randn({64, 48}).t()};
  std::vector<at::Tensor> on_gpu;
  for (const auto& t : ts) on_gpu.push_back(t.to(at::kCUDA));
  const at::Tensor rows = at::randint(0, 256, {9, 5000}, at::kByte);
  for (const std::string algorithm : {"blake3", "sha256-tree"}) {
    EXPECT_EQ(sentry::to_hex(sentry::hash_tensors(on_gpu, algorithm)),
              sentry::to_hex(sentry::hash_tensors(ts, algorithm)))
        << algorithm;
    EXPECT_EQ(sentry::to_hex(sentry::hash_rows(rows.to(at::kCUDA), algorithm)),
              sentry::to_hex(sentry::hash_rows(rows, algorithm)))
        << algorithm;
  }
}

}  // namespace
