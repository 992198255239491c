// Arithmetic modulo the P-256 prime p and the group order n, for host and GPU (see carry.h).
//
// Numbers are 8 little-endian 32-bit words. Both moduli use Montgomery form with R = 2^256:
//  * mod p (field elements): p = 2^256 - 2^224 + 2^192 + 2^96 - 1 is -1 mod 2^32, so each
//    reduction round's multiplier is the low word itself, and adding m*p only adds m, m and
//    m*(2^32-1) at three word offsets (fp_redc) instead of a full row of products;
//  * mod n (scalars): the generic word-by-word reduction with -n^-1 mod 2^32.
// Every function returns a fully reduced value (< modulus) given reduced inputs, so equality and
// zero tests are plain word compares. Loops run over constant bounds and are unrolled, so on the
// GPU the words stay in registers.
#pragma once
#include <stdint.h>

#include "carry.h"
#include "hd.h"

// How much gets inlined (the word helpers below always are). SENTRY_P256_MUL marks the four
// multiplication routines fp_mul, fp_sqr, fn_mul, fn_sqr: the host lets the compiler choose
// (forcing them inline makes one verify hundreds of KB of code and minutes of compiling); the
// GPU default inlines them, and ecdsa_cuda.cu overrides that with real calls (see there).
#if defined(__CUDA_ARCH__) && !defined(SENTRY_P256_MUL)
#define SENTRY_P256_MUL __forceinline__
#elif !defined(SENTRY_P256_MUL)
#define SENTRY_P256_MUL inline
#endif

namespace sentry {
namespace p256 {

struct U256 {
  uint32_t w[8];
};

// ---- constants (functions, so that device code gets immediates) ----------------------------

SENTRY_HD SENTRY_INLINE U256 prime_p() {
  return {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0x00000000u, 0x00000000u, 0x00000000u,
           0x00000001u, 0xffffffffu}};
}
SENTRY_HD SENTRY_INLINE U256 order_n() {
  return {{0xfc632551u, 0xf3b9cac2u, 0xa7179e84u, 0xbce6faadu, 0xffffffffu, 0xffffffffu,
           0x00000000u, 0xffffffffu}};
}
constexpr uint32_t kNInv = 0xee00bc4fu;  // -n^-1 mod 2^32

SENTRY_HD SENTRY_INLINE U256 r2_mod_p() {  // R^2 mod p: to_mont's factor
  return {{0x00000003u, 0x00000000u, 0xffffffffu, 0xfffffffbu, 0xfffffffeu, 0xffffffffu,
           0xfffffffdu, 0x00000004u}};
}
SENTRY_HD SENTRY_INLINE U256 r2_mod_n() {
  return {{0xbe79eea2u, 0x83244c95u, 0x49bd6fa6u, 0x4699799cu, 0x2b6bec59u, 0x2845b239u,
           0xf3d95620u, 0x66e12d94u}};
}
SENTRY_HD SENTRY_INLINE U256 one_mont_p() {  // R mod p: 1 in Montgomery form
  return {{0x00000001u, 0x00000000u, 0x00000000u, 0xffffffffu, 0xffffffffu, 0xffffffffu,
           0xfffffffeu, 0x00000000u}};
}
SENTRY_HD SENTRY_INLINE U256 one_mont_n() {
  return {{0x039cdaafu, 0x0c46353du, 0x58e8617bu, 0x43190552u, 0x00000000u, 0x00000000u,
           0xffffffffu, 0x00000000u}};
}
SENTRY_HD SENTRY_INLINE U256 u256_small(uint32_t v) { return {{v, 0, 0, 0, 0, 0, 0, 0}}; }

// ---- plain 256-bit helpers ------------------------------------------------------------------

SENTRY_HD SENTRY_INLINE bool is_zero(const U256& a) {
  uint32_t acc = 0;
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) acc |= a.w[i];
  return acc == 0;
}

SENTRY_HD SENTRY_INLINE bool equal(const U256& a, const U256& b) {
  uint32_t acc = 0;
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) acc |= a.w[i] ^ b.w[i];
  return acc == 0;
}

// a < b.
SENTRY_HD SENTRY_INLINE bool less(const U256& a, const U256& b) {
  mp::Carry c;
  (void)mp::sub_cc(a.w[0], b.w[0], c);
  SENTRY_UNROLL
  for (int i = 1; i < 8; ++i) (void)mp::subc_cc(a.w[i], b.w[i], c);
  return mp::subc(0, 0, c) != 0;
}

// a + b; the carry out (0 or 1) through *carry.
SENTRY_HD SENTRY_INLINE U256 add_raw(const U256& a, const U256& b, uint32_t* carry) {
  mp::Carry c;
  U256 r;
  r.w[0] = mp::add_cc(a.w[0], b.w[0], c);
  SENTRY_UNROLL
  for (int i = 1; i < 8; ++i) r.w[i] = mp::addc_cc(a.w[i], b.w[i], c);
  *carry = mp::addc(0, 0, c);
  return r;
}

// Big-endian 32 bytes to words.
SENTRY_HD SENTRY_INLINE U256 from_be_bytes(const uint8_t* p) {
  U256 r;
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    const uint8_t* q = p + 4 * (7 - i);
    r.w[i] = (uint32_t(q[0]) << 24) | (uint32_t(q[1]) << 16) | (uint32_t(q[2]) << 8) | q[3];
  }
  return r;
}

SENTRY_HD SENTRY_INLINE void to_be_bytes(const U256& a, uint8_t* p) {
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    uint8_t* q = p + 4 * (7 - i);
    q[0] = uint8_t(a.w[i] >> 24);
    q[1] = uint8_t(a.w[i] >> 16);
    q[2] = uint8_t(a.w[i] >> 8);
    q[3] = uint8_t(a.w[i]);
  }
}

// s + top * 2^256 - m when that is >= 0, else s. Needs s + top * 2^256 < 2m.
SENTRY_HD SENTRY_INLINE U256 subtract_if_ge(const uint32_t s[8], uint32_t top, const U256& m) {
  mp::Carry c;
  U256 d;
  d.w[0] = mp::sub_cc(s[0], m.w[0], c);
  SENTRY_UNROLL
  for (int i = 1; i < 8; ++i) d.w[i] = mp::subc_cc(s[i], m.w[i], c);
  const uint32_t negative = mp::subc(top, 0, c);  // 0xffffffff when s + top*2^256 < m
  U256 r;
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) r.w[i] = negative ? s[i] : d.w[i];
  return r;
}

// ---- 256 x 256 -> 512-bit products ----------------------------------------------------------

// t = a * b, row by row: row i adds a * b[i] at word i with one chain for the low halves of the
// products and one for the high halves. The high chain's last word cannot carry out: the sum so
// far is below 2^(32 (i + 9)).
SENTRY_HD SENTRY_INLINE void mul_wide(const U256& a, const U256& b, uint32_t t[16]) {
  mp::Carry c;
  SENTRY_UNROLL
  for (int j = 0; j < 8; ++j) t[j] = a.w[j] * b.w[0];
  t[1] = mp::mad_hi_cc(a.w[0], b.w[0], t[1], c);
  SENTRY_UNROLL
  for (int j = 1; j < 7; ++j) t[j + 1] = mp::madc_hi_cc(a.w[j], b.w[0], t[j + 1], c);
  t[8] = mp::madc_hi(a.w[7], b.w[0], 0, c);
  SENTRY_UNROLL
  for (int i = 1; i < 8; ++i) {
    t[i] = mp::mad_lo_cc(a.w[0], b.w[i], t[i], c);
    SENTRY_UNROLL
    for (int j = 1; j < 8; ++j) t[i + j] = mp::madc_lo_cc(a.w[j], b.w[i], t[i + j], c);
    t[i + 8] = mp::addc(0, 0, c);
    t[i + 1] = mp::mad_hi_cc(a.w[0], b.w[i], t[i + 1], c);
    SENTRY_UNROLL
    for (int j = 1; j < 7; ++j) t[i + j + 1] = mp::madc_hi_cc(a.w[j], b.w[i], t[i + j + 1], c);
    t[i + 8] = mp::madc_hi(a.w[7], b.w[i], t[i + 8], c);
  }
}

// t = a^2: the 28 products a[i]*a[j], i < j, once (rows as in mul_wide), doubled, plus the
// squares a[i]^2 on the diagonal.
SENTRY_HD SENTRY_INLINE void sqr_wide(const U256& a, uint32_t t[16]) {
  mp::Carry c;
  t[0] = 0;
  SENTRY_UNROLL
  for (int j = 1; j < 8; ++j) t[j] = a.w[0] * a.w[j];
  t[2] = mp::mad_hi_cc(a.w[0], a.w[1], t[2], c);
  SENTRY_UNROLL
  for (int j = 2; j < 7; ++j) t[j + 1] = mp::madc_hi_cc(a.w[0], a.w[j], t[j + 1], c);
  t[8] = mp::madc_hi(a.w[0], a.w[7], 0, c);
  SENTRY_UNROLL
  for (int i = 1; i < 7; ++i) {  // row i: a[i] * a[i+1..7] at word 2i+1 .. i+8
    t[2 * i + 1] = mp::mad_lo_cc(a.w[i], a.w[i + 1], t[2 * i + 1], c);
    SENTRY_UNROLL
    for (int j = i + 2; j < 8; ++j) t[i + j] = mp::madc_lo_cc(a.w[i], a.w[j], t[i + j], c);
    t[i + 8] = mp::addc(0, 0, c);
    if (i < 6) {
      t[2 * i + 2] = mp::mad_hi_cc(a.w[i], a.w[i + 1], t[2 * i + 2], c);
      SENTRY_UNROLL
      for (int j = i + 2; j < 7; ++j)
        t[i + j + 1] = mp::madc_hi_cc(a.w[i], a.w[j], t[i + j + 1], c);
      t[i + 8] = mp::madc_hi(a.w[i], a.w[7], t[i + 8], c);
    } else {  // row 6 has the single product a[6]*a[7]; its high half cannot carry out
      t[14] += mp::mul_hi(a.w[6], a.w[7]);
    }
  }
  // Double (the off-diagonal sum is below 2^510, so the top bit shifted out is 0).
  t[1] = mp::add_cc(t[1], t[1], c);
  SENTRY_UNROLL
  for (int k = 2; k < 15; ++k) t[k] = mp::addc_cc(t[k], t[k], c);
  t[15] = mp::addc(0, 0, c);
  // Add the squares.
  t[0] = a.w[0] * a.w[0];
  t[1] = mp::mad_hi_cc(a.w[0], a.w[0], t[1], c);
  SENTRY_UNROLL
  for (int i = 1; i < 7; ++i) {
    t[2 * i] = mp::madc_lo_cc(a.w[i], a.w[i], t[2 * i], c);
    t[2 * i + 1] = mp::madc_hi_cc(a.w[i], a.w[i], t[2 * i + 1], c);
  }
  t[14] = mp::madc_lo_cc(a.w[7], a.w[7], t[14], c);
  t[15] = mp::madc_hi(a.w[7], a.w[7], t[15], c);
}

// ---- mod p ----------------------------------------------------------------------------------

// t * 2^-256 mod p for t < p * 2^256. Round i clears word i with m = t[i] (p = -1 mod 2^32):
// m*p = m*2^96 + m*2^192 + m*(2^32-1)*2^224 - m, and the -m cancels word i exactly. A round's
// carry out of word i+8 is added by the next round, which ends one word higher.
SENTRY_HD SENTRY_INLINE U256 fp_redc(uint32_t t[16]) {
  mp::Carry c;
  uint32_t carry = 0;
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    const uint32_t m = t[i];
    const uint32_t lo = 0u - m;              // m*(2^32-1) = hi*2^32 + lo
    const uint32_t hi = m - (m != 0 ? 1u : 0u);  // <= 2^32-2, so hi + carry fits
    t[i + 3] = mp::add_cc(t[i + 3], m, c);
    t[i + 4] = mp::addc_cc(t[i + 4], 0, c);
    t[i + 5] = mp::addc_cc(t[i + 5], 0, c);
    t[i + 6] = mp::addc_cc(t[i + 6], m, c);
    t[i + 7] = mp::addc_cc(t[i + 7], lo, c);
    t[i + 8] = mp::addc_cc(t[i + 8], hi + carry, c);
    carry = mp::addc(0, 0, c);
  }
  // (t + M*p) / 2^256 < 2p.
  return subtract_if_ge(t + 8, carry, prime_p());
}

// a * b * 2^-256 mod p.
SENTRY_HD SENTRY_P256_MUL U256 fp_mul(U256 a, U256 b) {
  uint32_t t[16];
  mul_wide(a, b, t);
  return fp_redc(t);
}

SENTRY_HD SENTRY_P256_MUL U256 fp_sqr(U256 a) {
  uint32_t t[16];
  sqr_wide(a, t);
  return fp_redc(t);
}

SENTRY_HD SENTRY_INLINE U256 fp_add(const U256& a, const U256& b) {
  uint32_t carry;
  const U256 s = add_raw(a, b, &carry);
  return subtract_if_ge(s.w, carry, prime_p());
}

SENTRY_HD SENTRY_INLINE U256 fp_sub(const U256& a, const U256& b) {
  mp::Carry c;
  U256 d;
  d.w[0] = mp::sub_cc(a.w[0], b.w[0], c);
  SENTRY_UNROLL
  for (int i = 1; i < 8; ++i) d.w[i] = mp::subc_cc(a.w[i], b.w[i], c);
  const uint32_t mask = mp::subc(0, 0, c);  // all ones when a < b: add p back
  const U256 p = prime_p();
  U256 r;
  r.w[0] = mp::add_cc(d.w[0], p.w[0] & mask, c);
  SENTRY_UNROLL
  for (int i = 1; i < 8; ++i) r.w[i] = mp::addc_cc(d.w[i], p.w[i] & mask, c);
  return r;
}

SENTRY_HD SENTRY_INLINE U256 fp_neg(const U256& a) { return fp_sub(u256_small(0), a); }

SENTRY_HD SENTRY_INLINE U256 fp_to_mont(const U256& a) { return fp_mul(a, r2_mod_p()); }
SENTRY_HD SENTRY_INLINE U256 fp_from_mont(const U256& a) { return fp_mul(a, u256_small(1)); }

// a^e for a in Montgomery form (result in Montgomery form), square and multiply from the top
// bit. Only the host uses it (tests, table checks): the kernels never invert mod p.
SENTRY_HD inline U256 fp_pow(const U256& a, const U256& e) {
  U256 r = one_mont_p();
  for (int bit = 255; bit >= 0; --bit) {
    r = fp_sqr(r);
    if ((e.w[bit / 32] >> (bit % 32)) & 1) r = fp_mul(r, a);
  }
  return r;
}

// a^-1 (Montgomery in and out) by Fermat: a^(p-2); 0 for a = 0.
SENTRY_HD inline U256 fp_inv(const U256& a) {
  U256 e = prime_p();
  e.w[0] -= 2;
  return fp_pow(a, e);
}

// ---- mod n ----------------------------------------------------------------------------------

// t * 2^-256 mod n for t < n * 2^256: generic rounds, m = t[i] * (-n^-1); a round's carries out
// of word i+8 (at most 2) go into the next round's top word.
SENTRY_HD SENTRY_INLINE U256 fn_redc(uint32_t t[16]) {
  const U256 n = order_n();
  mp::Carry c;
  uint32_t carry = 0;
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    const uint32_t m = t[i] * kNInv;
    (void)mp::mad_lo_cc(m, n.w[0], t[i], c);  // word i becomes 0; only its carry matters
    SENTRY_UNROLL
    for (int j = 1; j < 8; ++j) t[i + j] = mp::madc_lo_cc(m, n.w[j], t[i + j], c);
    t[i + 8] = mp::addc_cc(t[i + 8], carry, c);
    carry = mp::addc(0, 0, c);
    t[i + 1] = mp::mad_hi_cc(m, n.w[0], t[i + 1], c);
    SENTRY_UNROLL
    for (int j = 1; j < 8; ++j) t[i + j + 1] = mp::madc_hi_cc(m, n.w[j], t[i + j + 1], c);
    carry = mp::addc(carry, 0, c);
  }
  return subtract_if_ge(t + 8, carry, order_n());
}

SENTRY_HD SENTRY_P256_MUL U256 fn_mul(U256 a, U256 b) {
  uint32_t t[16];
  mul_wide(a, b, t);
  return fn_redc(t);
}

SENTRY_HD SENTRY_P256_MUL U256 fn_sqr(U256 a) {
  uint32_t t[16];
  sqr_wide(a, t);
  return fn_redc(t);
}

SENTRY_HD SENTRY_INLINE U256 fn_to_mont(const U256& a) { return fn_mul(a, r2_mod_n()); }

// a^-1 mod n, Montgomery in and out, by Fermat (a^(n-2)) with 4-bit windows: 252 squarings and
// at most 64 + 14 multiplications. 0 for a = 0 (callers reject s = 0 first).
SENTRY_HD inline U256 fn_inv(const U256& a) {
  U256 table[16];  // a^0 .. a^15
  table[0] = one_mont_n();
  table[1] = a;
  for (int i = 2; i < 16; ++i) table[i] = fn_mul(table[i - 1], a);
  U256 e = order_n();
  e.w[0] -= 2;  // n - 2 (no borrow: n's low word is 0xfc632551)
  U256 r = table[e.w[7] >> 28];
  for (int nib = 62; nib >= 0; --nib) {
    SENTRY_UNROLL
    for (int k = 0; k < 4; ++k) r = fn_sqr(r);
    const uint32_t digit = (e.w[nib / 8] >> (4 * (nib % 8))) & 15;
    if (digit != 0) r = fn_mul(r, table[digit]);
  }
  return r;
}

}  // namespace p256
}  // namespace sentry
