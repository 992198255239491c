#include "blake3_simd.h"

#include <string.h>

#include "../../core/blake3.h"

namespace sentry {
namespace cpu {
namespace {

template <int kLanes, class V>
SENTRY_INLINE void hash_chunks(const uint8_t* data, uint64_t first_index, uint32_t (*out)[8]) {
  V cv[8];
  blake3::set_iv(cv);
  V counter_lo, counter_hi;
  for (int l = 0; l < kLanes; ++l) {
    counter_lo[l] = static_cast<uint32_t>(first_index + l);
    counter_hi[l] = static_cast<uint32_t>((first_index + l) >> 32);
  }
  for (uint32_t b = 0; b < blake3::kChunkLen / blake3::kBlockLen; ++b) {
    V m[16];
    for (int l = 0; l < kLanes; ++l) {
      uint32_t words[16];
      memcpy(words, data + uint64_t(l) * blake3::kChunkLen + b * blake3::kBlockLen, 64);
      for (int w = 0; w < 16; ++w) m[w][l] = words[w];
    }
    blake3::compress<V>(cv, m, counter_lo, counter_hi, blake3::splat<V>(blake3::kBlockLen),
                        blake3::splat<V>(blake3::chunk_block_flags(b, 16, false)));
  }
  for (int l = 0; l < kLanes; ++l)
    for (int i = 0; i < 8; ++i) out[l][i] = cv[i][l];
}

typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x4 __attribute__((vector_size(16)));

__attribute__((target("avx512f"))) void chunks_x16(const uint8_t* d, uint64_t i, uint32_t (*o)[8]) {
  hash_chunks<16, u32x16>(d, i, o);
}
__attribute__((target("avx2"))) void chunks_x8(const uint8_t* d, uint64_t i, uint32_t (*o)[8]) {
  hash_chunks<8, u32x8>(d, i, o);
}
void chunks_x4(const uint8_t* d, uint64_t i, uint32_t (*o)[8]) {  // SSE2: every x86-64
  hash_chunks<4, u32x4>(d, i, o);
}

}  // namespace

int blake3_simd_lanes() {
#if defined(__x86_64__)
  static const int lanes = __builtin_cpu_supports("avx512f") ? 16
                           : __builtin_cpu_supports("avx2")  ? 8
                                                              : 4;
  return lanes;
#else
  return 1;
#endif
}

uint64_t blake3_full_chunks(const uint8_t* data, uint64_t first_index, uint64_t count,
                            uint32_t (*out)[8]) {
  const int lanes = blake3_simd_lanes();
  uint64_t done = 0;
#if defined(__x86_64__)
  for (; done + lanes <= count; done += lanes) {
    const uint8_t* at = data + done * blake3::kChunkLen;
    if (lanes == 16) chunks_x16(at, first_index + done, out + done);
    else if (lanes == 8) chunks_x8(at, first_index + done, out + done);
    else chunks_x4(at, first_index + done, out + done);
  }
#endif
  return done;
}

}  // namespace cpu
}  // namespace sentry
