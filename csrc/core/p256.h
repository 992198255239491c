// ECDSA P-256 verification, one signature at a time, for host and GPU (torch-free).
//
// verify(Q, digest, r || s) checks, in this order: Q's coordinates are below p and Q is on the
// curve (so not the point at infinity, which has no affine encoding; P-256's cofactor is 1, so
// on the curve means in the group); 0 < r < n and 0 < s < n. Then, with e the digest as a
// 256-bit big-endian integer mod n, w = s^-1, u1 = e w, u2 = r w mod n, it computes
// R = u1 G + u2 Q and accepts when R is not infinity and x(R) mod n = r.
//
// R comes from one pass of doublings from the top bit (Straus/Shamir): u2 in signed 4-bit
// windows over the table 1Q..8Q built per signature (Jacobian), u1 in signed 8-bit windows
// over the table 1G..128G (affine, p256_table.h), each window a Booth recoding so that
// negative digits only negate y. x(R) mod n = r is tested without an inversion:
// X = r Z^2, or X = (r + n) Z^2 where r + n < p.
//
// Points are Jacobian (X : Y : Z) with x = X/Z^2, y = Y/Z^3, coordinates in Montgomery form; the
// point at infinity has Z = 0. Additions handle every special case (infinity, P + P, P - P),
// which Wycheproof's Shamir edge cases reach, with branches: verification handles public data
// only, so nothing here needs to be constant-time.
#pragma once
#include <stdint.h>

#include "hd.h"
#include "p256_field.h"
#include "p256_table.h"

// Point functions (dbl, add, add_affine, on_curve): the compiler's choice on the host, inlined
// on the GPU (their field values then stay in registers; see ecdsa_cuda.cu on code size).
#if defined(__CUDA_ARCH__) && !defined(SENTRY_P256_POINT)
#define SENTRY_P256_POINT __forceinline__
#elif !defined(SENTRY_P256_POINT)
#define SENTRY_P256_POINT inline
#endif

namespace sentry {
namespace p256 {

struct Affine {
  U256 x, y;  // Montgomery form
};

struct Jacobian {
  U256 X, Y, Z;  // Montgomery form; Z = 0 is the point at infinity
};

constexpr int kQWindow = 4;                              // bits per u2 digit
constexpr int kGWindow = 2 * kQWindow;                   // bits per u1 digit (every 2nd step)
constexpr int kQTable = 1 << (kQWindow - 1);             // 1Q .. 8Q
constexpr int kSteps = (256 + kQWindow) / kQWindow;      // 65 windows cover bits 0..256
static_assert(kGTableSize >= (1 << (kGWindow - 1)), "p256_table.h holds too few multiples of G");

SENTRY_HD SENTRY_INLINE U256 curve_b_mont() {  // b * R mod p
  return {{0x29c4bddfu, 0xd89cdf62u, 0x78843090u, 0xacf005cdu, 0xf7212ed6u, 0xe5a220abu,
           0x04874834u, 0xdc30061du}};
}

SENTRY_HD SENTRY_INLINE Jacobian infinity() {
  Jacobian r;
  r.X = one_mont_p();
  r.Y = one_mont_p();
  r.Z = u256_small(0);
  return r;
}

SENTRY_HD SENTRY_INLINE bool is_infinity(const Jacobian& p) { return is_zero(p.Z); }

// y^2 = x^3 - 3x + b, Montgomery coordinates.
SENTRY_HD SENTRY_P256_POINT bool on_curve(const Affine& a) {
  const U256 x2 = fp_sqr(a.x);
  const U256 x3 = fp_mul(x2, a.x);
  const U256 three_x = fp_add(fp_add(a.x, a.x), a.x);
  const U256 rhs = fp_add(fp_sub(x3, three_x), curve_b_mont());
  return equal(fp_sqr(a.y), rhs);
}

// 2P, dbl-2001-b (a = -3): 3M + 5S. Infinity stays infinity (Z3 = 2 Y Z = 0); P-256 has no
// point with y = 0.
SENTRY_HD SENTRY_P256_POINT Jacobian dbl(Jacobian p) {
  const U256 delta = fp_sqr(p.Z);
  const U256 gamma = fp_sqr(p.Y);
  const U256 beta = fp_mul(p.X, gamma);
  const U256 t = fp_mul(fp_sub(p.X, delta), fp_add(p.X, delta));
  const U256 alpha = fp_add(fp_add(t, t), t);
  const U256 beta4 = fp_add(fp_add(beta, beta), fp_add(beta, beta));
  Jacobian r;
  r.X = fp_sub(fp_sqr(alpha), fp_add(beta4, beta4));
  r.Z = fp_sub(fp_sub(fp_sqr(fp_add(p.Y, p.Z)), gamma), delta);
  const U256 g2 = fp_sqr(gamma);
  const U256 g4 = fp_add(g2, g2);
  const U256 g8 = fp_add(g4, g4);
  r.Y = fp_sub(fp_mul(alpha, fp_sub(beta4, r.X)), fp_add(g8, g8));
  return r;
}

// P + Q, add-2007-bl: 11M + 5S. Handles infinity, P = Q (doubles) and P = -Q (infinity).
SENTRY_HD SENTRY_P256_POINT Jacobian add(Jacobian p, Jacobian q) {
  if (is_infinity(p)) return q;
  if (is_infinity(q)) return p;
  const U256 z1z1 = fp_sqr(p.Z);
  const U256 z2z2 = fp_sqr(q.Z);
  const U256 u1 = fp_mul(p.X, z2z2);
  const U256 u2 = fp_mul(q.X, z1z1);
  const U256 s1 = fp_mul(fp_mul(p.Y, q.Z), z2z2);
  const U256 s2 = fp_mul(fp_mul(q.Y, p.Z), z1z1);
  const U256 h = fp_sub(u2, u1);
  const U256 s2s1 = fp_sub(s2, s1);
  if (is_zero(h)) return is_zero(s2s1) ? dbl(p) : infinity();
  const U256 h2 = fp_add(h, h);
  const U256 i = fp_sqr(h2);
  const U256 j = fp_mul(h, i);
  const U256 rr = fp_add(s2s1, s2s1);
  const U256 v = fp_mul(u1, i);
  Jacobian r;
  r.X = fp_sub(fp_sub(fp_sqr(rr), j), fp_add(v, v));
  const U256 s1j = fp_mul(s1, j);
  r.Y = fp_sub(fp_mul(rr, fp_sub(v, r.X)), fp_add(s1j, s1j));
  r.Z = fp_mul(fp_sub(fp_sub(fp_sqr(fp_add(p.Z, q.Z)), z1z1), z2z2), h);
  return r;
}

// P + (x, y), madd-2007-bl: 7M + 4S. Same special cases as add; (x, y) is never infinity.
SENTRY_HD SENTRY_P256_POINT Jacobian add_affine(Jacobian p, Affine q) {
  if (is_infinity(p)) return Jacobian{q.x, q.y, one_mont_p()};
  const U256 z1z1 = fp_sqr(p.Z);
  const U256 u2 = fp_mul(q.x, z1z1);
  const U256 s2 = fp_mul(fp_mul(q.y, p.Z), z1z1);
  const U256 h = fp_sub(u2, p.X);
  const U256 s2y1 = fp_sub(s2, p.Y);
  if (is_zero(h)) return is_zero(s2y1) ? dbl(p) : infinity();
  const U256 hh = fp_sqr(h);
  const U256 hh2 = fp_add(hh, hh);
  const U256 i = fp_add(hh2, hh2);
  const U256 j = fp_mul(h, i);
  const U256 rr = fp_add(s2y1, s2y1);
  const U256 v = fp_mul(p.X, i);
  Jacobian r;
  r.X = fp_sub(fp_sub(fp_sqr(rr), j), fp_add(v, v));
  const U256 y1j = fp_mul(p.Y, j);
  r.Y = fp_sub(fp_mul(rr, fp_sub(v, r.X)), fp_add(y1j, y1j));
  r.Z = fp_sub(fp_sub(fp_sqr(fp_add(p.Z, h)), z1z1), hh);
  return r;
}

// Signed digit of k's window at bit `pos` (a multiple of w): the w+1 bits pos-1 .. pos+w-1
// (bit -1 and bits above 255 are 0) give b[pos-1] + sum_{t<w-1} 2^t b[pos+t] - 2^(w-1) b[pos+w-1]
// in [-2^(w-1), 2^(w-1)]. The digits of windows 0, w, 2w, ... up to bit 256 sum back to k.
SENTRY_HD SENTRY_INLINE int booth_digit(const U256& k, int pos, int w) {
  uint32_t v;
  if (pos == 0) {
    v = k.w[0] << 1;
  } else {
    const int lo = pos - 1;
    const int word = lo >> 5, shift = lo & 31;
    const uint32_t w0 = word < 8 ? k.w[word] : 0;
    const uint32_t w1 = word + 1 < 8 ? k.w[word + 1] : 0;
    v = uint32_t(((uint64_t(w1) << 32) | w0) >> shift);
  }
  const uint32_t bits = v & ((2u << w) - 1);
  return int((bits >> 1) + (bits & 1)) - int((bits >> w) << w);
}

// The |digit|-th multiple from a table of 1P, 2P, ..., negated for a negative digit.
SENTRY_HD SENTRY_INLINE Jacobian signed_entry(const Jacobian* table, int digit) {
  Jacobian e = table[(digit < 0 ? -digit : digit) - 1];
  if (digit < 0) e.Y = fp_neg(e.Y);
  return e;
}

// (index + 1) G from p256_table.h.
SENTRY_HD SENTRY_INLINE Affine g_multiple(int index) {
  Affine a;
#if defined(__CUDA_ARCH__)
  const uint4* p = reinterpret_cast<const uint4*>(kGTableDevice) + 4 * index;
  const uint4 v0 = __ldg(p), v1 = __ldg(p + 1), v2 = __ldg(p + 2), v3 = __ldg(p + 3);
  const uint32_t words[16] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w,
                              v2.x, v2.y, v2.z, v2.w, v3.x, v3.y, v3.z, v3.w};
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    a.x.w[i] = words[i];
    a.y.w[i] = words[8 + i];
  }
#else
  const uint32_t* p = kGTableHost + 16 * index;
  for (int i = 0; i < 8; ++i) {
    a.x.w[i] = p[i];
    a.y.w[i] = p[8 + i];
  }
#endif
  return a;
}

SENTRY_HD SENTRY_INLINE Affine signed_g_entry(int digit) {
  Affine e = g_multiple((digit < 0 ? -digit : digit) - 1);
  if (digit < 0) e.y = fp_neg(e.y);
  return e;
}

// u1 G + u2 Q for u1, u2 < 2^256 (plain integers) and Q on the curve.
SENTRY_HD inline Jacobian mul_add(const U256& u1, const U256& u2, const Affine& q) {
  Jacobian table[kQTable];  // jQ at table[j - 1]
  table[0] = Jacobian{q.x, q.y, one_mont_p()};
  table[1] = dbl(table[0]);
  for (int j = 3; j <= kQTable; ++j)
    table[j - 1] = (j % 2 == 0) ? dbl(table[j / 2 - 1]) : add_affine(table[j - 2], q);

  Jacobian r = infinity();
  for (int step = kSteps - 1; step >= 0; --step) {
    const int pos = step * kQWindow;
    if (step != kSteps - 1) {
      for (int d = 0; d < kQWindow; ++d) r = dbl(r);
    }
    const int dq = booth_digit(u2, pos, kQWindow);
    if (dq != 0) r = add(r, signed_entry(table, dq));
    if (step % 2 == 0) {
      const int dg = booth_digit(u1, pos, kGWindow);
      if (dg != 0) r = add_affine(r, signed_g_entry(dg));
    }
  }
  return r;
}

// The inputs as integers, big-endian bytes already read: public key (x, y), digest e, (r, s).
struct VerifyInput {
  U256 x, y, e, r, s;
};

SENTRY_HD SENTRY_INLINE VerifyInput read_input(const uint8_t pub[64], const uint8_t digest[32],
                                              const uint8_t sig[64]) {
  return {from_be_bytes(pub), from_be_bytes(pub + 32), from_be_bytes(digest), from_be_bytes(sig),
          from_be_bytes(sig + 32)};
}

SENTRY_HD inline bool verify(const VerifyInput& in) {
  const U256 p = prime_p(), n = order_n();
  // Public key: canonical coordinates on the curve.
  if (!less(in.x, p) || !less(in.y, p)) return false;
  const Affine q{fp_to_mont(in.x), fp_to_mont(in.y)};
  if (!on_curve(q)) return false;
  // Signature: 0 < r, s < n.
  if (is_zero(in.r) || is_zero(in.s) || !less(in.r, n) || !less(in.s, n)) return false;

  // e: the 256-bit digest mod n (e < 2^256 < 2n, so one subtraction).
  const U256 e = subtract_if_ge(in.e.w, 0, n);
  // Montgomery in, plain out: mul(x, w R) = x w.
  const U256 w_mont = fn_inv(fn_to_mont(in.s));
  const U256 u1 = fn_mul(e, w_mont);
  const U256 u2 = fn_mul(in.r, w_mont);

  const Jacobian rp = mul_add(u1, u2, q);
  if (is_infinity(rp)) return false;
  // x(R) = X / Z^2 is in [0, p); x(R) mod n = r iff x(R) = r or x(R) = r + n (< p).
  const U256 z2 = fp_sqr(rp.Z);
  if (equal(fp_mul(fp_to_mont(in.r), z2), rp.X)) return true;
  uint32_t carry;
  const U256 r_plus_n = add_raw(in.r, n, &carry);
  if (carry != 0 || !less(r_plus_n, p)) return false;
  return equal(fp_mul(fp_to_mont(r_plus_n), z2), rp.X);
}

SENTRY_HD SENTRY_INLINE bool verify(const uint8_t pub[64], const uint8_t digest[32],
                                    const uint8_t sig[64]) {
  return verify(read_input(pub, digest, sig));
}

}  // namespace p256
}  // namespace sentry
