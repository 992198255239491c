// The CPU kernels' loader over a plain host pointer (core/tree.h's Loader): 64-byte blocks by
// memcpy, any alignment. Used by hash_cpu.cpp and subtree_cpu.cpp.
#pragma once
#include <stdint.h>
#include <string.h>

namespace sentry {
namespace cpu {

struct HostLoader {
  const uint8_t* base;
  uint8_t byte(uint64_t offset) const { return base[offset]; }
  void load_le(uint64_t offset, uint32_t w[16]) const { memcpy(w, base + offset, 64); }
};
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the host loader assumes little-endian");

}  // namespace cpu
}  // namespace sentry
