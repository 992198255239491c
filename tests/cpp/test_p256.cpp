// The torch-free P-256 core (csrc/core/p256*.h, the code the CUDA kernel runs) against OpenSSL:
//  * carry primitives against 64-bit arithmetic;
//  * wide products, both reductions, field and scalar operations against BIGNUM, on random and
//    extreme values;
//  * point doubling and additions (every special case) against EC_POINT, the G table entry by
//    entry, Booth digits, u1 G + u2 Q against EC_POINT_mul;
//  * verify() on OpenSSL signatures with bit flips, range and key checks, and every Wycheproof
//    ECDSA P-256/SHA-256 case (DER and P1363 files).
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "p256.h"
#include "p256_cases.h"

namespace {

using namespace sentry::p256;
namespace mp = sentry::mp;

// ---- OpenSSL helpers ------------------------------------------------------------------------

using Bn = sentry::OpensslPtr<BIGNUM, BN_free>;
using Point = sentry::OpensslPtr<EC_POINT, EC_POINT_free>;

struct Ctx {
  BN_CTX* bn = BN_CTX_new();
  EC_GROUP* group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
  ~Ctx() {
    EC_GROUP_free(group);
    BN_CTX_free(bn);
  }
};
Ctx& ctx() {
  static Ctx c;
  return c;
}

Bn bn(const U256& a) {
  uint8_t be[32];
  to_be_bytes(a, be);
  return Bn(BN_bin2bn(be, 32, nullptr));
}

U256 u256(const BIGNUM* b) {
  uint8_t be[32];
  EXPECT_EQ(BN_bn2binpad(b, be, 32), 32);
  return from_be_bytes(be);
}

Bn P() { return bn(prime_p()); }
Bn N() { return bn(order_n()); }
Bn R() {  // 2^256
  Bn r(BN_new());
  BN_set_bit(r.get(), 256);
  return r;
}

// (a op b) mod m.
Bn mod_mul(const BIGNUM* a, const BIGNUM* b, const BIGNUM* m) {
  Bn r(BN_new());
  BN_mod_mul(r.get(), a, b, m, ctx().bn);
  return r;
}
Bn mod_inv(const BIGNUM* a, const BIGNUM* m) {
  return Bn(BN_mod_inverse(nullptr, a, m, ctx().bn));
}
Bn r_inv(const BIGNUM* m) {
  Bn rm(BN_new());
  BN_nnmod(rm.get(), R().get(), m, ctx().bn);
  return mod_inv(rm.get(), m);
}

::testing::AssertionResult same(const U256& got, const BIGNUM* want) {
  Bn g = bn(got);
  if (BN_cmp(g.get(), want) == 0) return ::testing::AssertionSuccess();
  char* a = BN_bn2hex(g.get());
  char* b = BN_bn2hex(want);
  auto r = ::testing::AssertionFailure() << "got " << a << " want " << b;
  OPENSSL_free(a);
  OPENSSL_free(b);
  return r;
}

std::mt19937_64& rng() {
  static std::mt19937_64 g(20240601);
  return g;
}

U256 random_u256() {
  U256 a;
  for (auto& w : a.w) w = uint32_t(rng()());
  return a;
}

// Random value below m, with a bias towards words of all zeros or all ones (carry extremes).
U256 random_below(const U256& m) {
  for (;;) {
    U256 a = random_u256();
    const uint64_t pick = rng()() % 4;
    if (pick == 0) {
      for (auto& w : a.w) w = (rng()() & 1) ? 0xffffffffu : w;
    } else if (pick == 1) {
      for (auto& w : a.w) w = (rng()() & 1) ? 0u : w;
    }
    if (less(a, m)) return a;
  }
}

U256 sub_small(const U256& a, uint32_t v) {
  Bn b = bn(a);
  BN_sub_word(b.get(), v);
  return u256(b.get());
}

// Values every modular routine is checked on, besides random ones.
std::vector<U256> edge_values(const U256& m) {
  std::vector<U256> v = {u256_small(0), u256_small(1), u256_small(2), u256_small(3),
                         sub_small(m, 1), sub_small(m, 2), sub_small(m, 3)};
  U256 top{};
  top.w[7] = 0x80000000u;  // 2^255 (below both p and n)
  v.push_back(top);
  U256 low_ones{};
  for (int i = 0; i < 4; ++i) low_ones.w[i] = 0xffffffffu;  // 2^128 - 1
  v.push_back(low_ones);
  U256 alt;
  for (int i = 0; i < 8; ++i) alt.w[i] = (i % 2) ? 0xffffffffu : 0u;
  if (less(alt, m)) v.push_back(alt);
  v.push_back(one_mont_p());
  return v;
}

// ---- carry primitives -----------------------------------------------------------------------

TEST(Carry, PrimitivesMatchWideArithmetic) {
  const uint32_t specials[] = {0u, 1u, 2u, 0x7fffffffu, 0x80000000u, 0xfffffffeu, 0xffffffffu};
  std::vector<uint32_t> vals(std::begin(specials), std::end(specials));
  for (int i = 0; i < 20; ++i) vals.push_back(uint32_t(rng()()));
  for (uint32_t a : vals) {
    for (uint32_t b : vals) {
      for (uint32_t cin = 0; cin < 2; ++cin) {
        const uint32_t d = vals[(a ^ b ^ cin) % vals.size()];
        mp::Carry c;
        const uint64_t sum = uint64_t(a) + b + cin;
        c.cf = cin;
        EXPECT_EQ(mp::addc_cc(a, b, c), uint32_t(sum));
        EXPECT_EQ(c.cf, uint32_t(sum >> 32));
        c.cf = cin;
        EXPECT_EQ(mp::addc(a, b, c), uint32_t(sum));
        EXPECT_EQ(c.cf, cin);
        EXPECT_EQ(mp::add_cc(a, b, c), uint32_t(uint64_t(a) + b));
        EXPECT_EQ(c.cf, uint32_t((uint64_t(a) + b) >> 32));
        c.cf = cin;
        EXPECT_EQ(mp::subc_cc(a, b, c), uint32_t(uint64_t(a) - b - cin));
        EXPECT_EQ(c.cf, uint64_t(a) < uint64_t(b) + cin ? 1u : 0u);
        c.cf = cin;
        EXPECT_EQ(mp::subc(a, b, c), uint32_t(uint64_t(a) - b - cin));
        EXPECT_EQ(c.cf, cin);
        EXPECT_EQ(mp::sub_cc(a, b, c), a - b);
        EXPECT_EQ(c.cf, a < b ? 1u : 0u);
        const uint64_t prod = uint64_t(a) * b;
        const uint64_t lo = (prod & 0xffffffffu) + d + cin, hi = (prod >> 32) + d + cin;
        c.cf = cin;
        EXPECT_EQ(mp::madc_lo_cc(a, b, d, c), uint32_t(lo));
        EXPECT_EQ(c.cf, uint32_t(lo >> 32));
        c.cf = cin;
        EXPECT_EQ(mp::madc_hi_cc(a, b, d, c), uint32_t(hi));
        EXPECT_EQ(c.cf, uint32_t(hi >> 32));
        c.cf = cin;
        EXPECT_EQ(mp::madc_hi(a, b, d, c), uint32_t(hi));
        EXPECT_EQ(c.cf, cin);
        EXPECT_EQ(mp::mad_lo_cc(a, b, d, c), uint32_t((prod & 0xffffffffu) + d));
        EXPECT_EQ(c.cf, uint32_t(((prod & 0xffffffffu) + d) >> 32));
        EXPECT_EQ(mp::mad_hi_cc(a, b, d, c), uint32_t((prod >> 32) + d));
        EXPECT_EQ(c.cf, uint32_t(((prod >> 32) + d) >> 32));
      }
    }
  }
}

// ---- products and reductions ----------------------------------------------------------------

Bn wide_bn(const uint32_t t[16]) {
  uint8_t be[64];
  for (int i = 0; i < 16; ++i)
    for (int b = 0; b < 4; ++b) be[63 - 4 * i - b] = uint8_t(t[i] >> (8 * b));
  return Bn(BN_bin2bn(be, 64, nullptr));
}

TEST(P256Field, WideProductsMatchBignum) {
  std::vector<U256> vals;
  U256 ones;
  for (auto& w : ones.w) w = 0xffffffffu;
  vals.push_back(ones);  // 2^256 - 1: the largest carries
  for (const U256& v : edge_values(prime_p())) vals.push_back(v);
  for (int i = 0; i < 40; ++i) vals.push_back(random_u256());
  for (const U256& a : vals) {
    uint32_t t[16];
    sqr_wide(a, t);
    Bn want(BN_new());
    BN_sqr(want.get(), bn(a).get(), ctx().bn);
    EXPECT_EQ(BN_cmp(wide_bn(t).get(), want.get()), 0);
    for (const U256& b : vals) {
      mul_wide(a, b, t);
      BN_mul(want.get(), bn(a).get(), bn(b).get(), ctx().bn);
      ASSERT_EQ(BN_cmp(wide_bn(t).get(), want.get()), 0);
    }
  }
}

// t * 2^-256 mod m for wide t < m * 2^256, on random t and the largest allowed one.
template <class Redc>
void check_redc(const U256& m_words, Redc redc) {
  const Bn m = bn(m_words);
  const Bn rinv = r_inv(m.get());
  Bn limit(BN_new());
  BN_mul(limit.get(), m.get(), R().get(), ctx().bn);  // m * 2^256
  std::vector<Bn> ts;
  Bn top(BN_dup(limit.get()));
  BN_sub_word(top.get(), 1);
  ts.push_back(std::move(top));
  ts.push_back(Bn(BN_new()));  // 0
  for (int i = 0; i < 300; ++i) {
    Bn t(BN_new());
    BN_rand_range(t.get(), limit.get());
    ts.push_back(std::move(t));
  }
  for (const Bn& t : ts) {
    uint8_t be[64];
    ASSERT_EQ(BN_bn2binpad(t.get(), be, 64), 64);
    uint32_t w[16];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(be[63 - 4 * i - 3]) << 24) | (uint32_t(be[63 - 4 * i - 2]) << 16) |
             (uint32_t(be[63 - 4 * i - 1]) << 8) | be[63 - 4 * i];
    Bn want(BN_new());
    BN_mod_mul(want.get(), t.get(), rinv.get(), m.get(), ctx().bn);
    ASSERT_TRUE(same(redc(w), want.get()));
  }
}

TEST(P256Field, MontgomeryReductionModP) {
  check_redc(prime_p(), [](uint32_t* t) { return fp_redc(t); });
}
TEST(P256Field, MontgomeryReductionModN) {
  check_redc(order_n(), [](uint32_t* t) { return fn_redc(t); });
}

TEST(P256Field, ConstantsMatchTheirDefinitions) {
  const Bn p = P(), n = N();
  Bn rp(BN_new()), rn(BN_new()), r2p(BN_new()), r2n(BN_new());
  BN_nnmod(rp.get(), R().get(), p.get(), ctx().bn);
  BN_nnmod(rn.get(), R().get(), n.get(), ctx().bn);
  BN_mod_sqr(r2p.get(), rp.get(), p.get(), ctx().bn);
  BN_mod_sqr(r2n.get(), rn.get(), n.get(), ctx().bn);
  EXPECT_TRUE(same(one_mont_p(), rp.get()));
  EXPECT_TRUE(same(one_mont_n(), rn.get()));
  EXPECT_TRUE(same(r2_mod_p(), r2p.get()));
  EXPECT_TRUE(same(r2_mod_n(), r2n.get()));
  EXPECT_TRUE(same(prime_p(), EC_GROUP_get0_field(ctx().group)));
  EXPECT_TRUE(same(order_n(), EC_GROUP_get0_order(ctx().group)));
  // -n^-1 mod 2^32
  EXPECT_EQ(uint32_t(order_n().w[0] * kNInv), 0xffffffffu);
  Bn b(BN_new());
  EC_GROUP_get_curve(ctx().group, nullptr, nullptr, b.get(), ctx().bn);
  EXPECT_TRUE(same(curve_b_mont(), mod_mul(b.get(), rp.get(), p.get()).get()));
}

// Every field operation against BIGNUM on edge and random operands.
TEST(P256Field, OperationsMatchBignum) {
  const Bn p = P();
  const Bn rinv = r_inv(p.get());
  std::vector<U256> vals = edge_values(prime_p());
  for (int i = 0; i < 60; ++i) vals.push_back(random_below(prime_p()));
  for (const U256& a : vals) {
    const Bn A = bn(a);
    EXPECT_TRUE(same(fp_sqr(a), mod_mul(mod_mul(A.get(), A.get(), p.get()).get(), rinv.get(),
                                        p.get()).get()));
    Bn neg(BN_new()), zero(BN_new());
    BN_mod_sub(neg.get(), zero.get(), A.get(), p.get(), ctx().bn);
    EXPECT_TRUE(same(fp_neg(a), neg.get()));
    EXPECT_TRUE(equal(fp_from_mont(fp_to_mont(a)), a));
    EXPECT_TRUE(same(fp_from_mont(a), mod_mul(A.get(), rinv.get(), p.get()).get()));
    if (!is_zero(a)) {
      // Montgomery inverse: (a R^-1)^-1 R = a^-1 R^2.
      Bn want = mod_inv(A.get(), p.get());
      Bn r2 = bn(r2_mod_p());
      want = mod_mul(want.get(), r2.get(), p.get());
      EXPECT_TRUE(same(fp_inv(a), want.get()));
    } else {
      EXPECT_TRUE(is_zero(fp_inv(a)));
    }
    for (const U256& b : vals) {
      const Bn B = bn(b);
      Bn want(BN_new());
      BN_mod_add(want.get(), A.get(), B.get(), p.get(), ctx().bn);
      ASSERT_TRUE(same(fp_add(a, b), want.get()));
      BN_mod_sub(want.get(), A.get(), B.get(), p.get(), ctx().bn);
      ASSERT_TRUE(same(fp_sub(a, b), want.get()));
      want = mod_mul(mod_mul(A.get(), B.get(), p.get()).get(), rinv.get(), p.get());
      ASSERT_TRUE(same(fp_mul(a, b), want.get()));
    }
  }
}

TEST(P256Scalar, MultiplyAndInverseMatchBignum) {
  const Bn n = N();
  const Bn rinv = r_inv(n.get());
  std::vector<U256> vals = edge_values(order_n());
  for (int i = 0; i < 60; ++i) vals.push_back(random_below(order_n()));
  for (const U256& a : vals) {
    const Bn A = bn(a);
    EXPECT_TRUE(same(fn_sqr(a), mod_mul(mod_mul(A.get(), A.get(), n.get()).get(), rinv.get(),
                                        n.get()).get()));
    const U256 am = fn_to_mont(a);
    Bn rn(BN_new());
    BN_nnmod(rn.get(), R().get(), n.get(), ctx().bn);
    EXPECT_TRUE(same(am, mod_mul(A.get(), rn.get(), n.get()).get()));
    if (!is_zero(a)) {
      // fn_inv(a R) = a^-1 R; times 1 (fn_mul by plain 1) leaves a^-1.
      const U256 inv = fn_mul(fn_inv(am), u256_small(1));
      EXPECT_TRUE(same(inv, mod_inv(A.get(), n.get()).get()));
    }
    for (const U256& b : vals) {
      const Bn want = mod_mul(mod_mul(A.get(), bn(b).get(), n.get()).get(), rinv.get(), n.get());
      ASSERT_TRUE(same(fn_mul(a, b), want.get()));
    }
  }
}

// ---- points ---------------------------------------------------------------------------------

struct Plain {  // affine, plain integers; inf for the point at infinity
  bool inf;
  U256 x, y;
};

Plain to_plain(const Jacobian& j) {
  if (is_infinity(j)) return {true, {}, {}};
  const U256 zi = fp_inv(j.Z);
  const U256 zi2 = fp_sqr(zi);
  return {false, fp_from_mont(fp_mul(j.X, zi2)), fp_from_mont(fp_mul(j.Y, fp_mul(zi2, zi)))};
}

Plain to_plain(const EC_POINT* p) {
  if (EC_POINT_is_at_infinity(ctx().group, p)) return {true, {}, {}};
  Bn x(BN_new()), y(BN_new());
  EXPECT_EQ(EC_POINT_get_affine_coordinates(ctx().group, p, x.get(), y.get(), ctx().bn), 1);
  return {false, u256(x.get()), u256(y.get())};
}

::testing::AssertionResult same_point(const Plain& a, const Plain& b) {
  if (a.inf && b.inf) return ::testing::AssertionSuccess();
  if (a.inf != b.inf) {
    return ::testing::AssertionFailure() << "infinity " << a.inf << " vs " << b.inf;
  }
  if (equal(a.x, b.x) && equal(a.y, b.y)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "coordinates differ";
}

Point mul_g(const BIGNUM* k) {
  Point p(EC_POINT_new(ctx().group));
  EXPECT_EQ(EC_POINT_mul(ctx().group, p.get(), k, nullptr, nullptr, ctx().bn), 1);
  return p;
}

Bn random_scalar() {
  Bn k(BN_new());
  BN_rand_range(k.get(), N().get());
  if (BN_is_zero(k.get())) BN_one(k.get());
  return k;
}

Affine to_affine_mont(const Plain& p) { return {fp_to_mont(p.x), fp_to_mont(p.y)}; }

// The same point with a random Z (X = x z^2, Y = y z^3), so that Z = 1 is not all we test.
Jacobian to_jacobian(const Plain& p) {
  const Affine a = to_affine_mont(p);
  U256 z = fp_to_mont(random_below(prime_p()));
  if (is_zero(z)) z = one_mont_p();  // Z = 0 would be the point at infinity
  const U256 z2 = fp_sqr(z);
  return {fp_mul(a.x, z2), fp_mul(a.y, fp_mul(z2, z)), z};
}

TEST(P256Point, DoubleAndAddMatchOpenSSL) {
  EC_GROUP* g = ctx().group;
  for (int i = 0; i < 40; ++i) {
    const Bn k1 = random_scalar(), k2 = random_scalar();
    Point p1 = mul_g(k1.get()), p2 = mul_g(k2.get());
    const Plain a = to_plain(p1.get()), b = to_plain(p2.get());
    Point want(EC_POINT_new(g));
    EC_POINT_dbl(g, want.get(), p1.get(), ctx().bn);
    EXPECT_TRUE(same_point(to_plain(dbl(to_jacobian(a))), to_plain(want.get())));
    EC_POINT_add(g, want.get(), p1.get(), p2.get(), ctx().bn);
    EXPECT_TRUE(same_point(to_plain(add(to_jacobian(a), to_jacobian(b))), to_plain(want.get())));
    EXPECT_TRUE(same_point(to_plain(add_affine(to_jacobian(a), to_affine_mont(b))),
                           to_plain(want.get())));
    // P + P doubles, P + (-P) is infinity, infinity is neutral.
    EC_POINT_dbl(g, want.get(), p1.get(), ctx().bn);
    EXPECT_TRUE(same_point(to_plain(add(to_jacobian(a), to_jacobian(a))), to_plain(want.get())));
    EXPECT_TRUE(same_point(to_plain(add_affine(to_jacobian(a), to_affine_mont(a))),
                           to_plain(want.get())));
    Jacobian neg = to_jacobian(a);
    neg.Y = fp_neg(neg.Y);
    EXPECT_TRUE(is_infinity(add(to_jacobian(a), neg)));
    Affine neg_aff = to_affine_mont(a);
    neg_aff.y = fp_neg(neg_aff.y);
    EXPECT_TRUE(is_infinity(add_affine(to_jacobian(a), neg_aff)));
    EXPECT_TRUE(same_point(to_plain(add(infinity(), to_jacobian(a))), a));
    EXPECT_TRUE(same_point(to_plain(add(to_jacobian(a), infinity())), a));
    EXPECT_TRUE(same_point(to_plain(add_affine(infinity(), to_affine_mont(a))), a));
    EXPECT_TRUE(is_infinity(dbl(infinity())));
    EXPECT_TRUE(on_curve(to_affine_mont(a)));
  }
}

TEST(P256Point, OnCurveRejectsOtherPoints) {
  const Plain g = to_plain(EC_GROUP_get0_generator(ctx().group));
  EXPECT_TRUE(on_curve(to_affine_mont(g)));
  Plain bad = g;
  bad.y.w[0] ^= 1;
  EXPECT_FALSE(on_curve(to_affine_mont(bad)));
  EXPECT_FALSE(on_curve(Affine{u256_small(0), u256_small(0)}));
}

TEST(P256Point, GeneratorTableMatchesOpenSSL) {
  const Bn p = P();
  Bn rp(BN_new());
  BN_nnmod(rp.get(), R().get(), p.get(), ctx().bn);
  for (int k = 1; k <= kGTableSize; ++k) {
    Bn kb(BN_new());
    BN_set_word(kb.get(), k);
    const Plain want = to_plain(mul_g(kb.get()).get());
    const Affine got = g_multiple(k - 1);
    ASSERT_TRUE(same(got.x, mod_mul(bn(want.x).get(), rp.get(), p.get()).get())) << k << "G";
    ASSERT_TRUE(same(got.y, mod_mul(bn(want.y).get(), rp.get(), p.get()).get())) << k << "G";
  }
}

TEST(P256Point, BoothDigitsSumToTheScalar) {
  std::vector<U256> ks = {u256_small(0), u256_small(1), order_n(), sub_small(order_n(), 1)};
  U256 ones;
  for (auto& w : ones.w) w = 0xffffffffu;
  ks.push_back(ones);
  for (int i = 0; i < 50; ++i) ks.push_back(random_u256());
  for (int w : {kQWindow, kGWindow}) {
    for (const U256& k : ks) {
      Bn sum(BN_new()), term(BN_new());
      for (int pos = 0; pos <= 256; pos += w) {
        const int d = booth_digit(k, pos, w);
        ASSERT_LE(d, 1 << (w - 1));
        ASSERT_GE(d, -(1 << (w - 1)));
        BN_set_word(term.get(), d < 0 ? -d : d);
        BN_lshift(term.get(), term.get(), pos);
        if (d < 0) BN_sub(sum.get(), sum.get(), term.get());
        else BN_add(sum.get(), sum.get(), term.get());
      }
      ASSERT_TRUE(same(k, sum.get()));
    }
  }
}

// u1 G + u2 Q against OpenSSL, including results and intermediate sums at infinity.
TEST(P256Point, JointMultiplicationMatchesOpenSSL) {
  EC_GROUP* g = ctx().group;
  const Bn n = N();
  auto check = [&](const BIGNUM* u1, const BIGNUM* u2, const EC_POINT* q) {
    Point want(EC_POINT_new(g));
    ASSERT_EQ(EC_POINT_mul(g, want.get(), u1, q, u2, ctx().bn), 1);
    const Plain qp = to_plain(q);
    const Jacobian got = mul_add(u256(u1), u256(u2), to_affine_mont(qp));
    EXPECT_TRUE(same_point(to_plain(got), to_plain(want.get())));
  };
  const Bn zero(BN_new()), one(BN_dup(BN_value_one()));
  Bn nm1(BN_dup(n.get()));
  BN_sub_word(nm1.get(), 1);
  for (int i = 0; i < 25; ++i) {
    const Bn k = random_scalar(), u1 = random_scalar(), u2 = random_scalar();
    Point q = mul_g(k.get());
    check(u1.get(), u2.get(), q.get());
    check(zero.get(), u2.get(), q.get());
    check(u1.get(), one.get(), q.get());
    check(nm1.get(), nm1.get(), q.get());
    // u1 = -u2 k: R = infinity. u1 = u2 k: R = 2 u2 Q (the add doubles).
    Bn t = mod_mul(u2.get(), k.get(), n.get());
    check(t.get(), u2.get(), q.get());
    Bn neg(BN_new());
    BN_mod_sub(neg.get(), n.get(), t.get(), n.get(), ctx().bn);
    check(neg.get(), u2.get(), q.get());
  }
  // Q = G: both tables hold multiples of one point.
  const Bn u1 = random_scalar(), u2 = random_scalar();
  check(u1.get(), u2.get(), EC_GROUP_get0_generator(g));
}

// ---- verify ---------------------------------------------------------------------------------

using sentry::test::Case;
using sentry::test::Key;
using sentry::test::new_key;

bool run(const Case& c) { return verify(c.pub, c.digest, c.sig); }

Case signed_case(EC_KEY* key) { return sentry::test::openssl_signed_case(key, rng()); }

TEST(P256Verify, OpenSSLSignaturesVerifyAndEveryBitFlipFails) {
  for (int i = 0; i < 60; ++i) {
    Key key = new_key();
    const Case good = signed_case(key.get());
    ASSERT_TRUE(run(good)) << i;
    // One random bit in each of r, s, the digest and the key.
    for (int part = 0; part < 4; ++part) {
      Case bad = good;
      const int bit = sentry::test::flip_random_bit(&bad, part, rng());
      EXPECT_FALSE(run(bad)) << "part " << part << " bit " << bit;
    }
  }
}

// A valid (digest, signature) pair for any public point, without its private key: with
// R = a G + b Q, r = x(R) mod n, s = r / b and e = a s, verification recomputes u1 = a, u2 = b.
Case forged_case(const EC_POINT* q) {
  EC_GROUP* g = ctx().group;
  const Bn n = N();
  for (;;) {
    const Bn a = random_scalar(), b = random_scalar();
    Point rp(EC_POINT_new(g));
    EC_POINT_mul(g, rp.get(), a.get(), q, b.get(), ctx().bn);
    const Plain rpl = to_plain(rp.get());
    Bn r(BN_new());
    BN_nnmod(r.get(), bn(rpl.x).get(), n.get(), ctx().bn);
    if (BN_is_zero(r.get())) continue;
    const Bn s = mod_mul(r.get(), mod_inv(b.get(), n.get()).get(), n.get());
    const Bn e = mod_mul(a.get(), s.get(), n.get());
    Case c;
    BN_bn2binpad(e.get(), c.digest, 32);
    BN_bn2binpad(r.get(), c.sig, 32);
    BN_bn2binpad(s.get(), c.sig + 32, 32);
    const Plain qp = to_plain(q);
    to_be_bytes(qp.x, c.pub);
    to_be_bytes(qp.y, c.pub + 32);
    return c;
  }
}

TEST(P256Verify, RejectsOutOfRangeScalarsAndBadKeys) {
  Key key = new_key();
  const Case good = signed_case(key.get());
  ASSERT_TRUE(run(good));
  auto with_scalar = [&](int which, const U256& v) {
    Case c = good;
    to_be_bytes(v, c.sig + 32 * which);
    return c;
  };
  const U256 n = order_n();
  U256 ones;
  for (auto& w : ones.w) w = 0xffffffffu;
  for (int which = 0; which < 2; ++which) {
    EXPECT_FALSE(run(with_scalar(which, u256_small(0))));
    EXPECT_FALSE(run(with_scalar(which, n)));
    EXPECT_FALSE(run(with_scalar(which, ones)));
    // r + n and s + n (when below 2^256) name the same residues: still refused.
    uint32_t carry;
    const U256 orig = from_be_bytes(good.sig + 32 * which);
    const U256 plus_n = add_raw(orig, n, &carry);
    if (carry == 0) {
      EXPECT_FALSE(run(with_scalar(which, plus_n)));
    }
  }
  // s and n - s both verify (ECDSA is malleable; Wycheproof lists n - s as valid).
  Bn s_neg(BN_new());
  BN_sub(s_neg.get(), N().get(), bn(from_be_bytes(good.sig + 32)).get());
  EXPECT_TRUE(run(with_scalar(1, u256(s_neg.get()))));

  // Off-curve keys and non-canonical coordinates.
  Case c = good;
  std::memset(c.pub, 0, 64);
  EXPECT_FALSE(run(c));  // (0, 0): no encoding of infinity
  c = good;
  to_be_bytes(prime_p(), c.pub + 32);
  EXPECT_FALSE(run(c));
  c = good;
  std::memset(c.pub, 0xff, 32);
  EXPECT_FALSE(run(c));
}

TEST(P256Verify, RejectsAKeyWhoseXIsNotReduced) {
  // A point with a small x (found by trying x = 1, 2, ...), so that x + p still fits 256 bits.
  EC_GROUP* g = ctx().group;
  Point q(EC_POINT_new(g));
  for (unsigned long x = 1;; ++x) {
    Bn xb(BN_new());
    BN_set_word(xb.get(), x);
    if (EC_POINT_set_compressed_coordinates(g, q.get(), xb.get(), 0, ctx().bn) == 1) break;
  }
  const Case good = forged_case(q.get());
  ASSERT_TRUE(run(good));
  Case bad = good;
  uint32_t carry;
  to_be_bytes(add_raw(from_be_bytes(good.pub), prime_p(), &carry), bad.pub);
  ASSERT_EQ(carry, 0u);
  EXPECT_FALSE(run(bad));
}

TEST(P256Verify, DigestIsReducedModN) {
  // A digest below 2^256 - n (top word 0), signed by OpenSSL; e + n is the same e mod n.
  Key key = new_key();
  for (int i = 0; i < 5; ++i) {
    uint8_t digest[32];
    for (auto& b : digest) b = uint8_t(rng()());
    std::memset(digest, 0, 4);
    const Case good = sentry::test::openssl_signed_case(key.get(), digest);
    uint32_t carry;
    const U256 e_plus_n = add_raw(from_be_bytes(good.digest), order_n(), &carry);
    ASSERT_EQ(carry, 0u);
    Case c = good;
    to_be_bytes(e_plus_n, c.digest);
    EXPECT_TRUE(run(good));
    EXPECT_TRUE(run(c));
  }
}

TEST(P256Verify, ResultAtInfinityIsRejected) {
  // With Q = k G, a digest e = -r k mod n gives u1 G + u2 Q = (e + r k) / s G = infinity.
  Key key = new_key();
  const BIGNUM* k = EC_KEY_get0_private_key(key.get());
  const Case base = signed_case(key.get());
  const Bn n = N();
  const Bn rk = mod_mul(bn(from_be_bytes(base.sig)).get(), k, n.get());
  Bn e(BN_new());
  BN_sub(e.get(), n.get(), rk.get());
  Case c = base;
  BN_bn2binpad(e.get(), c.digest, 32);
  const VerifyInput in = read_input(c.pub, c.digest, c.sig);
  const U256 w = fn_inv(fn_to_mont(in.s));
  const Affine q{fp_to_mont(in.x), fp_to_mont(in.y)};
  EXPECT_TRUE(is_infinity(mul_add(fn_mul(in.e, w), fn_mul(in.r, w), q)));
  EXPECT_FALSE(run(c));
}

// ---- Wycheproof -----------------------------------------------------------------------------

void check_wycheproof(const std::string& file, bool der) {
  std::vector<sentry::test::WycheproofCase> cases;
  ASSERT_TRUE(sentry::test::load_wycheproof(sentry::test::vector_path(file), &cases));
  ASSERT_FALSE(cases.empty());
  int valid = 0, invalid = 0, unparsed = 0;
  for (const auto& c : cases) {
    Case in;
    const bool parsed = sentry::test::wycheproof_case(c, der, &in);
    const bool got = parsed && run(in);
    ASSERT_NE(c.result, "acceptable") << "tcId " << c.id << ": decide and document it";
    const bool want = c.result == "valid";
    EXPECT_EQ(got, want) << file << " tcId " << c.id;
    (want ? valid : invalid) += 1;
    unparsed += parsed ? 0 : 1;
  }
  EXPECT_GT(valid, 100);
  EXPECT_GT(invalid, 80);
  EXPECT_GT(unparsed, 0);
}

TEST(P256Wycheproof, DerCases) {
  check_wycheproof("wycheproof_ecdsa_secp256r1_sha256_test.json", true);
}
TEST(P256Wycheproof, P1363Cases) {
  check_wycheproof("wycheproof_ecdsa_secp256r1_sha256_p1363_test.json", false);
}

// A missing or cut-short vector file is a failure that names the file, not an exception.
TEST(P256Wycheproof, MissingOrTruncatedFileIsANamedFailure) {
  std::vector<sentry::test::WycheproofCase> cases;
  const std::string nowhere = sentry::test::vector_path("no_such_file.json");
  const auto missing = sentry::test::load_wycheproof(nowhere, &cases);
  EXPECT_FALSE(missing);
  EXPECT_NE(std::string(missing.message()).find(nowhere), std::string::npos)
      << missing.message();

  const std::string name = "wycheproof_ecdsa_secp256r1_sha256_test.json";
  std::string whole;
  ASSERT_TRUE(sentry::test::read_vector_file(sentry::test::vector_path(name), &whole));
  const std::string cut = ::testing::TempDir() + "/sentry_truncated_" + name;
  // Cut inside a test's "sig" value, and just after a "tcId": both once broke the reader.
  for (const size_t at : {whole.find("\"sig\": \"") + 12, whole.find("\"tcId\":") + 7}) {
    std::ofstream(cut, std::ios::binary) << whole.substr(0, at);
    const auto truncated = sentry::test::load_wycheproof(cut, &cases);
    EXPECT_FALSE(truncated) << "cut at byte " << at;
    EXPECT_NE(std::string(truncated.message()).find(cut), std::string::npos)
        << truncated.message();
  }
  std::remove(cut.c_str());
}

}  // namespace
