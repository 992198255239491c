// The ecdsa_p256_verify CUDA kernel (csrc/ops/cuda/ecdsa_kernel.cuh, the one the op launches)
// on the GPU, without torch:
//  * every Wycheproof ECDSA P-256/SHA-256 case (DER and P1363 files) gives the expected result,
//    through the aligned (16-byte loads) and the unaligned (bytewise) load paths, and the same
//    result as core/p256.h's verify() on the host;
//  * OpenSSL signatures verify, and each with one bit flipped in r, s, the digest or the key
//    does not.
// Skips when no CUDA device is present (CI builds and lists it; the GPU machine runs it).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/ops/cuda/ecdsa_kernel.cuh"
#include "p256_cases.h"

namespace {

using sentry::test::Case;

#define SKIP_WITHOUT_GPU()                                                         \
  do {                                                                             \
    int devices = 0;                                                               \
    const cudaError_t err = cudaGetDeviceCount(&devices);                          \
    if (err != cudaSuccess || devices == 0) {                                      \
      GTEST_SKIP() << "no CUDA device (" << cudaGetErrorString(err) << ")";        \
    }                                                                              \
  } while (0)

#define CUDA_OK(call)                                                            \
  do {                                                                           \
    const cudaError_t status = (call);                                           \
    ASSERT_EQ(status, cudaSuccess) << #call << ": " << cudaGetErrorString(status); \
  } while (0)

// Device buffers holding the rows at `offset` bytes past a 256-byte aligned base: 0 takes the
// kernel's 16-byte load path, anything else not a multiple of 16 the bytewise one.
void gpu_verify(const std::vector<Case>& rows, int offset, std::vector<bool>* out) {
  const size_t n = rows.size();
  std::vector<uint8_t> pub(64 * n), digest(32 * n), sig(64 * n);
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(&pub[64 * i], rows[i].pub, 64);
    std::memcpy(&digest[32 * i], rows[i].digest, 32);
    std::memcpy(&sig[64 * i], rows[i].sig, 64);
  }
  uint8_t *d_pub = nullptr, *d_digest = nullptr, *d_sig = nullptr;
  bool* d_out = nullptr;
  CUDA_OK(cudaMalloc(&d_pub, pub.size() + offset));
  CUDA_OK(cudaMalloc(&d_digest, digest.size() + offset));
  CUDA_OK(cudaMalloc(&d_sig, sig.size() + offset));
  CUDA_OK(cudaMalloc(&d_out, n));
  CUDA_OK(cudaMemcpy(d_pub + offset, pub.data(), pub.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_digest + offset, digest.data(), digest.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_sig + offset, sig.data(), sig.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(d_out, 0x5a, n));  // neither true (1) nor false (0): every row is written
  const unsigned blocks = unsigned((n + sentry::cuda::kEcdsaThreads - 1) /
                                   sentry::cuda::kEcdsaThreads);
  sentry::cuda::ecdsa_verify_kernel<<<blocks, sentry::cuda::kEcdsaThreads>>>(
      d_pub + offset, d_digest + offset, d_sig + offset, d_out, int64_t(n), offset % 16 == 0);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint8_t> got(n);
  CUDA_OK(cudaMemcpy(got.data(), d_out, n, cudaMemcpyDeviceToHost));
  cudaFree(d_pub);
  cudaFree(d_digest);
  cudaFree(d_sig);
  cudaFree(d_out);
  out->resize(n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_LE(got[i], 1) << "row " << i << " was not written (byte " << int(got[i]) << ")";
    (*out)[i] = got[i] == 1;
  }
}

bool host_verify(const Case& r) { return sentry::p256::verify(r.pub, r.digest, r.sig); }

void check_wycheproof(const std::string& file, bool der) {
  std::vector<sentry::test::WycheproofCase> cases;
  ASSERT_TRUE(sentry::test::load_wycheproof(sentry::test::vector_path(file), &cases));
  ASSERT_FALSE(cases.empty());
  // Signatures that do not parse never reach the kernel (the Python helper gives false for
  // them too); every other case is one row.
  std::vector<Case> rows;
  std::vector<const sentry::test::WycheproofCase*> of_row;
  int unparsed_valid = 0;
  for (const auto& c : cases) {
    ASSERT_NE(c.result, "acceptable") << "tcId " << c.id << ": decide and document it";
    Case row;
    if (!sentry::test::wycheproof_case(c, der, &row)) {
      unparsed_valid += c.result == "valid";
      continue;
    }
    rows.push_back(row);
    of_row.push_back(&c);
  }
  EXPECT_EQ(unparsed_valid, 0) << file << ": a valid case did not parse";
  for (int offset : {0, 5}) {
    std::vector<bool> got;
    ASSERT_NO_FATAL_FAILURE(gpu_verify(rows, offset, &got));
    int valid = 0, invalid = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const bool want = of_row[i]->result == "valid";
      EXPECT_EQ(got[i], want) << file << " tcId " << of_row[i]->id << " offset " << offset;
      EXPECT_EQ(got[i], host_verify(rows[i])) << file << " tcId " << of_row[i]->id;
      (want ? valid : invalid) += 1;
    }
    EXPECT_GT(valid, 100);
    EXPECT_GT(invalid, 50);
  }
}

TEST(P256Cuda, WycheproofDer) {
  SKIP_WITHOUT_GPU();
  check_wycheproof("wycheproof_ecdsa_secp256r1_sha256_test.json", true);
}

TEST(P256Cuda, WycheproofP1363) {
  SKIP_WITHOUT_GPU();
  check_wycheproof("wycheproof_ecdsa_secp256r1_sha256_p1363_test.json", false);
}

// 512 keys x 8 messages signed by OpenSSL, then each with one random bit flipped in r, s, the
// digest and the key: 20,480 rows in one launch.
TEST(P256Cuda, OpenSSLSignaturesVerifyAndBitFlipsFail) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(20261125);
  std::vector<Case> good;
  for (int k = 0; k < 512; ++k) {
    const sentry::test::Key key = sentry::test::new_key();
    for (int m = 0; m < 8; ++m) good.push_back(sentry::test::openssl_signed_case(key.get(), rng));
  }
  std::vector<Case> rows = good;
  for (const Case& g : good) {
    for (int part = 0; part < 4; ++part) {
      Case bad = g;
      sentry::test::flip_random_bit(&bad, part, rng);
      rows.push_back(bad);
    }
  }
  std::vector<bool> got;
  ASSERT_NO_FATAL_FAILURE(gpu_verify(rows, 0, &got));
  int failures = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const bool want = i < good.size();
    if (got[i] != want && ++failures <= 10) {
      ADD_FAILURE() << "row " << i << (want ? " (OpenSSL signature)" : " (one bit flipped)")
                    << " verified " << got[i];
    }
  }
  EXPECT_EQ(failures, 0) << "of " << rows.size() << " rows";
}

}  // namespace
