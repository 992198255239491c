// Whole BLAKE3 chunks several at a time on the CPU: the shared compression (core/blake3.h)
// instantiated with SIMD vector lanes, one chunk per lane.
#pragma once
#include <stdint.h>

namespace sentry {
namespace cpu {

// Chaining values of `count` consecutive full 1024-byte chunks starting at `data`, whose first
// chunk has index `first_index` in its input; none of them may be the root. Returns how many
// it hashed (a multiple of the widest lane count the CPU supports); the caller hashes the rest.
uint64_t blake3_full_chunks(const uint8_t* data, uint64_t first_index, uint64_t count,
                            uint32_t (*out)[8]);

// Lanes of the widest path the running CPU supports (1 when there is none).
int blake3_simd_lanes();

}  // namespace cpu
}  // namespace sentry
