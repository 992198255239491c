// 32-bit carry-chain primitives for multi-precision arithmetic, one source for host and GPU.
//
// Each function is one PTX instruction on the GPU (add.cc, addc, mad.lo.cc, madc.hi, ...), whose
// carry lives in the condition-code register CC.CF. On the host, a Carry object holds that flag
// and the functions compute exactly what the PTX ISA specifies, so the multi-word routines built
// from them (p256_field.h) run unchanged under GoogleTest and inside the kernels. Conventions
// follow PTX: `_cc` writes the flag, `c` in the name reads it; subtraction's flag is the borrow.
//
// Device rules that keep CC.CF intact between two of these calls: they are `asm volatile` (never
// reordered among themselves or dropped), and no code between them may use 128-bit integers or
// overflow builtins, the only C++ that makes the compiler emit its own .cc instructions.
// SENTRY_PORTABLE_CARRY=1 makes the device run the host code instead (no inline PTX).
#pragma once
#include <stdint.h>

#include "hd.h"

#if defined(__CUDA_ARCH__) && !SENTRY_PORTABLE_CARRY
#define SENTRY_PTX_CARRY 1
#else
#define SENTRY_PTX_CARRY 0
#endif

namespace sentry {
namespace mp {

#if SENTRY_PTX_CARRY
struct Carry {};  // the flag is CC.CF
#define SENTRY_CC_ASM(op, d, ...) asm volatile(op : "=r"(d) : __VA_ARGS__)
#else
struct Carry {
  uint32_t cf = 0;
};
#endif

SENTRY_HD SENTRY_INLINE uint32_t add_cc(uint32_t a, uint32_t b, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t d;
  SENTRY_CC_ASM("add.cc.u32 %0, %1, %2;", d, "r"(a), "r"(b));
  (void)c;
  return d;
#else
  const uint64_t s = uint64_t(a) + b;
  c.cf = uint32_t(s >> 32);
  return uint32_t(s);
#endif
}

SENTRY_HD SENTRY_INLINE uint32_t addc_cc(uint32_t a, uint32_t b, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t d;
  SENTRY_CC_ASM("addc.cc.u32 %0, %1, %2;", d, "r"(a), "r"(b));
  (void)c;
  return d;
#else
  const uint64_t s = uint64_t(a) + b + c.cf;
  c.cf = uint32_t(s >> 32);
  return uint32_t(s);
#endif
}

// a + b + CF; the flag is left as it was (PTX addc without .cc).
SENTRY_HD SENTRY_INLINE uint32_t addc(uint32_t a, uint32_t b, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t d;
  SENTRY_CC_ASM("addc.u32 %0, %1, %2;", d, "r"(a), "r"(b));
  (void)c;
  return d;
#else
  return a + b + c.cf;
#endif
}

SENTRY_HD SENTRY_INLINE uint32_t sub_cc(uint32_t a, uint32_t b, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t d;
  SENTRY_CC_ASM("sub.cc.u32 %0, %1, %2;", d, "r"(a), "r"(b));
  (void)c;
  return d;
#else
  c.cf = a < b ? 1u : 0u;
  return a - b;
#endif
}

SENTRY_HD SENTRY_INLINE uint32_t subc_cc(uint32_t a, uint32_t b, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t d;
  SENTRY_CC_ASM("subc.cc.u32 %0, %1, %2;", d, "r"(a), "r"(b));
  (void)c;
  return d;
#else
  const uint64_t sub = uint64_t(b) + c.cf;
  const uint32_t d = uint32_t(uint64_t(a) - sub);
  c.cf = uint64_t(a) < sub ? 1u : 0u;
  return d;
#endif
}

// a - b - CF (borrow); the flag is left as it was.
SENTRY_HD SENTRY_INLINE uint32_t subc(uint32_t a, uint32_t b, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t d;
  SENTRY_CC_ASM("subc.u32 %0, %1, %2;", d, "r"(a), "r"(b));
  (void)c;
  return d;
#else
  return a - b - c.cf;
#endif
}

// lo(a*b) + d with carry out.
SENTRY_HD SENTRY_INLINE uint32_t mad_lo_cc(uint32_t a, uint32_t b, uint32_t d, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t r;
  SENTRY_CC_ASM("mad.lo.cc.u32 %0, %1, %2, %3;", r, "r"(a), "r"(b), "r"(d));
  (void)c;
  return r;
#else
  return add_cc(a * b, d, c);
#endif
}

// lo(a*b) + d + CF with carry out.
SENTRY_HD SENTRY_INLINE uint32_t madc_lo_cc(uint32_t a, uint32_t b, uint32_t d, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t r;
  SENTRY_CC_ASM("madc.lo.cc.u32 %0, %1, %2, %3;", r, "r"(a), "r"(b), "r"(d));
  (void)c;
  return r;
#else
  return addc_cc(a * b, d, c);
#endif
}

SENTRY_HD SENTRY_INLINE uint32_t mul_hi(uint32_t a, uint32_t b) {
  return uint32_t((uint64_t(a) * b) >> 32);
}

// hi(a*b) + d with carry out.
SENTRY_HD SENTRY_INLINE uint32_t mad_hi_cc(uint32_t a, uint32_t b, uint32_t d, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t r;
  SENTRY_CC_ASM("mad.hi.cc.u32 %0, %1, %2, %3;", r, "r"(a), "r"(b), "r"(d));
  (void)c;
  return r;
#else
  return add_cc(mul_hi(a, b), d, c);
#endif
}

// hi(a*b) + d + CF with carry out.
SENTRY_HD SENTRY_INLINE uint32_t madc_hi_cc(uint32_t a, uint32_t b, uint32_t d, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t r;
  SENTRY_CC_ASM("madc.hi.cc.u32 %0, %1, %2, %3;", r, "r"(a), "r"(b), "r"(d));
  (void)c;
  return r;
#else
  return addc_cc(mul_hi(a, b), d, c);
#endif
}

// hi(a*b) + d + CF; the flag is left as it was.
SENTRY_HD SENTRY_INLINE uint32_t madc_hi(uint32_t a, uint32_t b, uint32_t d, Carry& c) {
#if SENTRY_PTX_CARRY
  uint32_t r;
  SENTRY_CC_ASM("madc.hi.u32 %0, %1, %2, %3;", r, "r"(a), "r"(b), "r"(d));
  (void)c;
  return r;
#else
  return addc(mul_hi(a, b), d, c);
#endif
}

}  // namespace mp
}  // namespace sentry
