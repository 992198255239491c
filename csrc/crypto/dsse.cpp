// DSSE's pre-authentication encoding (what a bundle's signature signs) and the SHA-256 hex
// digest that key hints are made of (see sentry/crypto.h).
#include "openssl_util.h"

namespace sentry::crypto {
using namespace detail;

std::string dsse_pae(std::string_view payload_type, std::string_view payload) {
  std::string out = "DSSEv1 ";
  out += std::to_string(payload_type.size());
  out += ' ';
  out += payload_type;
  out += ' ';
  out += std::to_string(payload.size());
  out += ' ';
  out += payload;
  return out;
}

std::string sha256_hex(std::string_view data) {
  ClearErrorsOnExit clear;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    fail("SHA-256 failed");
  }
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

}  // namespace sentry::crypto
