// X.509 certificates: PEM bundles split into DER certificates, and certificate chains verified
// as the reference OpenSSF Model Signing tool verifies them (below), through OpenSSL 3 (see
// sentry/crypto.h).
#include "openssl_util.h"

namespace sentry::crypto {
using namespace detail;

namespace {

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {  // H. Hinnant's
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

std::int64_t asn1_time_to_unix(const ASN1_TIME* t, const std::string& what) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) fail("cannot read " + what);
  return days_from_civil(tm.tm_year + 1900, static_cast<unsigned>(tm.tm_mon + 1),
                         static_cast<unsigned>(tm.tm_mday)) *
             86400 +
         tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
}

std::string unix_time_text(std::int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  if (gmtime_r(&tt, &tm) == nullptr) return std::to_string(t);
  char buf[32];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) return std::to_string(t);
  return buf;
}

std::string subject_text(X509* cert) {
  if (cert == nullptr) return "";
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return "";
  if (X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
    return "";
  }
  try {
    return bio_string(bio.get());
  } catch (const CryptoError&) {
    return "";
  }
}

X509Ptr parse_der_certificate(const std::string& der, const std::string& what) {
  if (der.empty()) throw CryptoError(what + " is empty");
  if (der.size() > static_cast<std::size_t>(LONG_MAX)) throw CryptoError(what + " is too large");
  const auto* begin = reinterpret_cast<const unsigned char*>(der.data());
  const unsigned char* p = begin;
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) fail(what + " is not a DER X.509 certificate");
  if (p != begin + der.size()) {
    throw CryptoError(what + " has " + std::to_string(begin + der.size() - p) +
                      " bytes after the DER certificate");
  }
  return cert;
}

PublicKey certificate_key(X509* cert) {
  EVP_PKEY* key = X509_get0_pubkey(cert);
  if (key == nullptr) fail("cannot read the signing certificate's public key");
  try {
    return PublicKey::from_evp(key);
  } catch (const CryptoError& e) {
    throw CryptoError(std::string("the signing certificate's ") + e.what());
  }
}

}  // namespace

std::vector<std::string> certificates_from_pem(std::string_view pem) {
  ClearErrorsOnExit clear;
  BioPtr bio = read_bio(pem, "certificate PEM");
  std::vector<std::string> out;
  for (std::size_t block = 0;; ++block) {
    char* name_raw = nullptr;
    char* header_raw = nullptr;
    unsigned char* data_raw = nullptr;
    long len = 0;
    if (PEM_read_bio(bio.get(), &name_raw, &header_raw, &data_raw, &len) != 1) {
      unsigned long err = ERR_peek_last_error();
      if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) break;
      fail("PEM block " + std::to_string(block + 1) + " is malformed");
    }
    OsslBuf<char> name(name_raw), header(header_raw);
    OsslBuf<unsigned char> data(data_raw);
    // Other blocks (keys, parameters) are skipped, as OpenSSL's own certificate readers do.
    if (std::strcmp(name.get(), PEM_STRING_X509) != 0 &&
        std::strcmp(name.get(), PEM_STRING_X509_OLD) != 0) {
      continue;
    }
    std::string der(reinterpret_cast<const char*>(data.get()), static_cast<std::size_t>(len));
    parse_der_certificate(der, "certificate " + std::to_string(out.size() + 1) + " of the PEM");
    out.push_back(std::move(der));
  }
  if (out.empty()) throw CryptoError("no PEM certificate (\"-----BEGIN CERTIFICATE-----\") found");
  return out;
}

// ---------------------------------------------------------------------------------------------
// Certificate chains
//
// What the reference OpenSSF Model Signing tool (model_signing 1.x,
// _signing/sign_certificate.py, Verifier._verify_certificates) does, and what this matches:
//  - trust anchors: every certificate it was given (its X509Store), and nothing else (it falls
//    back to certifi's bundle when given none; we refuse an empty root list instead);
//  - chain: bundle certificates[0] is the signing certificate, certificates[1:] are untrusted
//    intermediates (X509StoreContext(store, leaf, chain)), verified by OpenSSL's
//    X509_verify_cert with the store's default parameters: no purpose, no policy, no extra
//    flags (no X509_V_FLAG_PARTIAL_CHAIN: the chain must end at a self-signed trusted root;
//    no X509_STRICT);
//  - time: the store's time is set to the signing certificate's notBefore (X509_VERIFY_PARAM
//    set_time(timegm(not_valid_before_utc))), so every certificate of the chain must be valid
//    at the moment the leaf was issued, and a leaf that has expired since still verifies. We do
//    the same when no time is given; at_unix_time overrides it;
//  - key usage, after the chain verifies: keyUsage with digitalSignature, or else
//    extendedKeyUsage containing codeSigning (a keyUsage without digitalSignature is accepted
//    when codeSigning is present; extendedKeyUsage without codeSigning is accepted when
//    digitalSignature is present), else "cannot be used for signing";
//  - the leaf's public key is returned and used with the hash its curve size implies. We also
//    require the curve to be P-256/384/521 (the reference would take any EC curve of those
//    sizes, e.g. secp256k1 or brainpool, here).
// ---------------------------------------------------------------------------------------------

PublicKey verify_certificate_chain(const std::vector<std::string>& chain_der,
                                   const std::vector<std::string>& roots_der,
                                   std::optional<std::int64_t> at_unix_time) {
  ClearErrorsOnExit clear;
  if (chain_der.empty()) throw CryptoError("the certificate chain is empty");
  X509Ptr leaf = parse_der_certificate(chain_der[0], "certificate 0 of the chain (the signing "
                                                     "certificate)");
  X509StackPtr untrusted(sk_X509_new_null());
  if (!untrusted) fail("out of memory");
  for (std::size_t i = 1; i < chain_der.size(); ++i) {
    X509Ptr cert = parse_der_certificate(chain_der[i], "certificate " + std::to_string(i) +
                                                           " of the chain");
    if (!sk_X509_push(untrusted.get(), cert.get())) fail("out of memory");
    cert.release();  // owned by the stack now
  }
  StorePtr store(X509_STORE_new());
  if (!store) fail("out of memory");
  for (std::size_t i = 0; i < roots_der.size(); ++i) {
    X509Ptr root = parse_der_certificate(roots_der[i], "trusted root certificate " +
                                                           std::to_string(i));
    if (X509_STORE_add_cert(store.get(), root.get()) != 1) {  // takes its own reference
      unsigned long err = ERR_peek_last_error();
      if (ERR_GET_REASON(err) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
        fail("cannot add trusted root certificate " + std::to_string(i));
      }
      ERR_clear_error();
    }
  }
  if (roots_der.empty()) {
    throw ChainError("certificate chain not verified: no trusted root certificates were given");
  }

  const bool default_time = !at_unix_time.has_value();
  const std::int64_t when =
      default_time ? asn1_time_to_unix(X509_get0_notBefore(leaf.get()),
                                       "the signing certificate's notBefore")
                   : *at_unix_time;

  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx) fail("out of memory");
  if (X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), untrusted.get()) != 1) {
    fail("cannot set up certificate verification");
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<time_t>(when));
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    int depth = X509_STORE_CTX_get_error_depth(ctx.get());
    std::string subject = subject_text(X509_STORE_CTX_get_current_cert(ctx.get()));
    ERR_clear_error();
    std::string msg = "certificate chain not verified: ";
    msg += X509_verify_cert_error_string(err);
    msg += " (certificate at depth " + std::to_string(depth);
    if (!subject.empty()) msg += ", subject " + subject;
    msg += "; checked at " + unix_time_text(when);
    if (default_time) msg += ", the signing certificate's notBefore";
    msg += ")";
    throw ChainError(msg);
  }

  // Key usage, as the reference tool checks it (see above).
  const uint32_t flags = X509_get_extension_flags(leaf.get());
  bool can_sign = false;
  if ((flags & EXFLAG_KUSAGE) && (X509_get_key_usage(leaf.get()) & KU_DIGITAL_SIGNATURE)) {
    can_sign = true;
  }
  if (!can_sign && (flags & EXFLAG_XKUSAGE) &&
      (X509_get_extended_key_usage(leaf.get()) & XKU_CODE_SIGN)) {
    can_sign = true;
  }
  if (!can_sign) {
    throw ChainError("the signing certificate (" + subject_text(leaf.get()) +
                     ") cannot be used for signing: it has neither keyUsage digitalSignature nor "
                     "extendedKeyUsage codeSigning");
  }

  return certificate_key(leaf.get());
}

PublicKey certificate_public_key(const std::string& der) {
  const X509Ptr cert = parse_der_certificate(der, "certificate");
  return certificate_key(cert.get());
}

}  // namespace sentry::crypto
