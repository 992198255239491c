// CPU kernel of ecdsa_p256_verify: OpenSSL's ECDSA verification (its P-256 code is the
// hand-written nistz256 assembly where available), rows spread over the intra-op thread pool.
//
// The EC_KEY API (deprecated in OpenSSL 3, still its fastest path: no provider lookup, no DER
// round trip per row). Each worker owns its OpenSSL objects. Every row is checked here too, not
// only by OpenSSL: coordinates below p and on the curve, 0 < r, s < n. A row that fails any
// check or any OpenSSL call is false; its OpenSSL errors are cleared, never thrown.
#include <ATen/Parallel.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <torch/library.h>

#include <memory>

#include "../../crypto/openssl_ptr.h"
#include "../ecdsa_common.h"

namespace sentry {
namespace cpu {
namespace {

using EcKeyPtr = OpensslPtr<EC_KEY, EC_KEY_free>;
using PointPtr = OpensslPtr<EC_POINT, EC_POINT_free>;
using BnPtr = OpensslPtr<BIGNUM, BN_free>;
using BnCtxPtr = OpensslPtr<BN_CTX, BN_CTX_free>;
using SigPtr = OpensslPtr<ECDSA_SIG, ECDSA_SIG_free>;

// One worker's OpenSSL state: a P-256 key object whose public point is replaced per row.
class Verifier {
 public:
  Verifier()
      : key_(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1)), ctx_(BN_CTX_new()),
        x_(BN_new()), y_(BN_new()), p_(BN_new()) {
    TORCH_CHECK(key_ && ctx_ && x_ && y_ && p_, "sentry.ecdsa_p256_verify: out of memory");
    group_ = EC_KEY_get0_group(key_.get());
    n_ = EC_GROUP_get0_order(group_);
    point_.reset(EC_POINT_new(group_));
    TORCH_CHECK(point_ && n_ && EC_GROUP_get_curve(group_, p_.get(), nullptr, nullptr, ctx_.get()),
                "sentry.ecdsa_p256_verify: cannot set up OpenSSL's P-256 group");
  }

  bool verify(const uint8_t* pub, const uint8_t* digest, const uint8_t* sig) {
    const bool ok = check(pub, digest, sig);
    if (!ok) ERR_clear_error();
    return ok;
  }

 private:
  bool check(const uint8_t* pub, const uint8_t* digest, const uint8_t* sig) {
    if (!BN_bin2bn(pub, 32, x_.get()) || !BN_bin2bn(pub + 32, 32, y_.get())) return false;
    if (BN_cmp(x_.get(), p_.get()) >= 0 || BN_cmp(y_.get(), p_.get()) >= 0) return false;
    EC_POINT* q = point_.get();
    if (EC_POINT_set_affine_coordinates(group_, q, x_.get(), y_.get(), ctx_.get()) != 1 ||
        EC_POINT_is_on_curve(group_, q, ctx_.get()) != 1 ||
        EC_KEY_set_public_key(key_.get(), q) != 1) {
      return false;
    }
    BnPtr r(BN_bin2bn(sig, 32, nullptr)), s(BN_bin2bn(sig + 32, 32, nullptr));
    if (!r || !s || BN_is_zero(r.get()) || BN_is_zero(s.get()) || BN_cmp(r.get(), n_) >= 0 ||
        BN_cmp(s.get(), n_) >= 0) {
      return false;
    }
    SigPtr signature(ECDSA_SIG_new());
    if (!signature || ECDSA_SIG_set0(signature.get(), r.get(), s.get()) != 1) return false;
    r.release();  // owned by signature now
    s.release();
    return ECDSA_do_verify(digest, 32, signature.get(), key_.get()) == 1;
  }

  EcKeyPtr key_;
  BnCtxPtr ctx_;
  BnPtr x_, y_, p_;
  PointPtr point_;
  const EC_GROUP* group_ = nullptr;
  const BIGNUM* n_ = nullptr;
};

at::Tensor ecdsa_p256_verify_cpu(const at::Tensor& public_keys, const at::Tensor& digests,
                                 const at::Tensor& signatures) {
  const EcdsaInputs in =
      prepare_ecdsa_inputs(public_keys, digests, signatures, "sentry.ecdsa_p256_verify");
  at::Tensor out = at::empty({in.rows}, at::TensorOptions().dtype(at::kBool));
  const uint8_t* pub = in.public_keys.const_data_ptr<uint8_t>();
  const uint8_t* dig = in.digests.const_data_ptr<uint8_t>();
  const uint8_t* sig = in.signatures.const_data_ptr<uint8_t>();
  bool* result = out.data_ptr<bool>();
  // A verification takes tens of microseconds: small grains keep every core busy.
  at::parallel_for(0, in.rows, 16, [&](int64_t begin, int64_t end) {
    Verifier v;
    for (int64_t i = begin; i < end; ++i) {
      result[i] = v.verify(pub + kEcdsaKeyBytes * i, dig + kEcdsaDigestBytes * i,
                           sig + kEcdsaSignatureBytes * i);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CPU, m) { m.impl("ecdsa_p256_verify", &ecdsa_p256_verify_cpu); }

}  // namespace cpu
}  // namespace sentry
