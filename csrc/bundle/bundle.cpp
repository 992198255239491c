// The bundle: Sigstore bundle v0.3 JSON around a DSSE envelope (sentry/bundle.h). Older forms
// the reference tool wrote or reads are accepted: a public key without a hint (or with rawBytes
// and keyDetails), a single `certificate`, no tlogEntries, no keyid. Keyless bundles keep their
// transparency-log entries for the caller (Sentry's Python layer hands the raw bundle to
// sigstore-python, which checks them).
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "input.h"
#include "strict_json.h"

namespace sentry {

using json::Field;

namespace {

// Cheap structural check of a certificate: one DER SEQUENCE spanning the whole buffer.
void check_der_certificate(const json::Reader& reader, const std::string& der, const Field& field) {
  if (der.empty()) reader.fail(field, "empty certificate");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  if (p[0] != 0x30 || der.size() < 2) {
    reader.fail(field, "not a DER certificate (does not start with a SEQUENCE)");
  }
  std::uint64_t length = p[1], header = 2;
  if (p[1] >= 0x80) {
    const unsigned n = p[1] & 0x7F;
    if (n == 0 || n > 4 || der.size() < 2 + n) {
      reader.fail(field, "not a DER certificate (bad length)");
    }
    length = 0;
    for (unsigned i = 0; i < n; ++i) length = length << 8 | p[2 + i];
    header = 2 + n;
  }
  if (header + length != der.size()) {
    reader.fail(field, "not a DER certificate (" + std::to_string(der.size()) +
                           " bytes, the SEQUENCE says " + std::to_string(header + length) + ")");
  }
}

std::string certificate(const json::Reader& reader, json::element value, const Field& field) {
  const json::object obj = reader.as_object(value, field);
  static constexpr std::array<std::string_view, 1> kKeys{"rawBytes"};
  const auto m = json::members(reader, obj, kKeys, 1, field);
  const Field raw = field.key("rawBytes");
  std::string der = reader.as_base64(*m[0], raw);
  check_der_certificate(reader, der, raw);
  return der;
}

void read_material(const json::Reader& reader, json::element value, const Field& field,
                   Bundle& out) {
  const json::object vm = reader.as_object(value, field);
  static constexpr std::array<std::string_view, 5> kKeys{
      "publicKey", "x509CertificateChain", "certificate", "tlogEntries",
      "timestampVerificationData"};
  const auto m = json::members(reader, vm, kKeys, 0, field);
  std::string kinds;
  int count = 0;
  for (int i = 0; i < 3; ++i) {
    if (m[i]) {
      kinds += std::string(kinds.empty() ? "" : ", ") + json::repr(kKeys[i]);
      ++count;
    }
  }
  if (count != 1) {
    reader.fail(field, "needs exactly one of publicKey, x509CertificateChain, certificate; got [" +
                           kinds + "]");
  }
  if (m[3]) {
    const Field tf = field.key("tlogEntries");
    std::size_t i = 0;
    for (json::element entry : reader.as_array(*m[3], tf)) {
      const Field ef = tf.index(i++);
      reader.as_object(entry, ef);
      out.tlog_entries.push_back(simdjson::minify(entry));
    }
  }
  if (m[4]) reader.as_object(*m[4], field.key("timestampVerificationData"));
  if (m[0]) {
    const Field pf = field.key("publicKey");
    const json::object pk = reader.as_object(*m[0], pf);
    // rawBytes/keyDetails: what pre-1.0 reference releases wrote; ignored, as it does.
    static constexpr std::array<std::string_view, 3> kKeyKeys{"hint", "rawBytes", "keyDetails"};
    const auto k = json::members(reader, pk, kKeyKeys, 0, pf);
    const bool no_hint = !k[0] || k[0]->is_null() ||
                         (k[0]->is_string() && k[0]->get_string().value_unsafe().empty());
    if (!no_hint) {
      const Digest hint = reader.as_digest(*k[0], pf.key("hint"));
      (void)hint;
      out.public_key_hint = std::string(k[0]->get_string().value_unsafe());
    }
  } else if (m[1]) {
    const Field cf = field.key("x509CertificateChain");
    const json::object chain = reader.as_object(*m[1], cf);
    static constexpr std::array<std::string_view, 1> kChainKeys{"certificates"};
    const auto c = json::members(reader, chain, kChainKeys, 1, cf);
    const Field lf = cf.key("certificates");
    const json::array certs = reader.as_array(*c[0], lf);
    if (certs.size() == 0) reader.fail(lf, "empty certificate chain");
    std::size_t i = 0;
    for (json::element cert : certs) {
      const Field ef = lf.index(i++);
      out.certificate_chain.push_back(certificate(reader, cert, ef));
    }
  } else {
    out.certificate_chain.push_back(certificate(reader, *m[2], field.key("certificate")));
  }
}

void read_envelope(const json::Reader& reader, json::element value, const Field& field,
                   Bundle& out) {
  const json::object env = reader.as_object(value, field);
  static constexpr std::array<std::string_view, 3> kKeys{"payload", "payloadType", "signatures"};
  const auto m = json::members(reader, env, kKeys, 3, field);
  const Field pf = field.key("payload");
  out.payload = reader.as_base64(*m[0], pf);
  if (out.payload.empty()) reader.fail(pf, "empty");
  const Field tf = field.key("payloadType");
  out.payload_type = std::string(reader.as_text(*m[1], tf));
  if (out.payload_type != kPayloadType) {
    reader.fail(tf, "expected " + json::repr(kPayloadType) + ", got " + json::repr(*m[1]));
  }
  const Field sf = field.key("signatures");
  const json::array sigs = reader.as_array(*m[2], sf);
  if (sigs.size() != 1) {
    reader.fail(sf, "expected exactly one signature, got " + std::to_string(sigs.size()));
  }
  const Field one = sf.index(0);
  const json::object sig = reader.as_object(sigs.at(0).value_unsafe(), one);
  static constexpr std::array<std::string_view, 2> kSigKeys{"sig", "keyid"};
  const auto s = json::members(reader, sig, kSigKeys, 1, one);
  if (s[1] && !s[1]->is_null()) reader.as_text(*s[1], one.key("keyid"));
  const Field sigf = one.key("sig");
  out.signature = reader.as_base64(*s[0], sigf);
  if (out.signature.empty()) reader.fail(sigf, "empty signature");
}

}  // namespace

Bundle parse_bundle(std::string_view data, const std::string& source) {
  const json::Reader reader(source);
  if (data.size() > kMaxBundleBytes) {
    reader.fail(std::to_string(data.size()) + " bytes is larger than the " +
                std::to_string(kMaxBundleBytes) + "-byte limit for a signature bundle");
  }
  json::SiteParser<struct BundleSite> parser(data.size());
  const Field root = Field::root("bundle");
  const json::object doc = reader.as_object(reader.parse(parser.get(), data, "bundle JSON"), root);
  json::element media;
  if (doc.at_key("mediaType").get(media) != simdjson::SUCCESS) {
    reader.fail(root.key("mediaType"), "missing");
  }
  if (!media.is_string() || media.get_string().value_unsafe() != kBundleMediaType) {
    reader.fail(root.key("mediaType"),
                "expected " + json::repr(kBundleMediaType) + ", got " + json::repr(media));
  }
  json::element ignored;
  if (doc.at_key("messageSignature").get(ignored) == simdjson::SUCCESS) {
    reader.fail(root.key("messageSignature"), "not supported: Sentry reads DSSE envelopes only");
  }
  static constexpr std::array<std::string_view, 3> kKeys{"verificationMaterial", "dsseEnvelope",
                                                         "mediaType"};
  const auto m = json::members(reader, doc, kKeys, 2, root);
  Bundle out;
  const Field vm = root.key("verificationMaterial"), env = root.key("dsseEnvelope");
  read_material(reader, *m[0], vm, out);
  read_envelope(reader, *m[1], env, out);
  return out;
}

std::string read_bundle_file(const std::string& path) {
  const std::string what = "signature bundle";
  OpenInput input;
  open_input(path, what, input);
  const int fd = input.fd;
  const std::uint64_t size = input.size;
  if (size > kMaxBundleBytes) {
    throw FormatError(path + ": " + std::to_string(size) + " bytes is larger than the " +
                      std::to_string(kMaxBundleBytes) + "-byte limit for a " + what);
  }
  // Read to the end, not to the size fstat gave: a file that grew is caught by the limit.
  std::string data(size + 1, '\0');
  std::size_t got = 0;
  while (true) {
    if (got == data.size()) {
      if (data.size() > kMaxBundleBytes) {
        throw FormatError(path + ": grew past the " + std::to_string(kMaxBundleBytes) +
                          "-byte limit for a " + what + " while it was read");
      }
      data.resize(std::min<std::uint64_t>(2 * data.size(), kMaxBundleBytes + 1));
    }
    const ssize_t n = ::pread(fd, data.data() + got, data.size() - got, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw FileError(errno, path);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  data.resize(got);
  return data;
}

}  // namespace sentry
