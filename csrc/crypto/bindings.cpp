// sentry_ops._C.crypto: Python bindings of Sentry's signature crypto (sentry/crypto.h).
//
// Bytes in and out are Python bytes. sentry::crypto::CryptoError becomes
// sentry_ops._C.crypto.CryptoError (a ValueError), ChainError becomes
// sentry_ops._C.crypto.ChainError (a CryptoError); sentry/crypto.py maps them to
// sentry.FormatError and sentry.VerificationError. OpenSSL work runs without the GIL.
#include "bindings.h"

#include <pybind11/stl.h>

#include "crypto.h"

namespace py = pybind11;
using namespace sentry::crypto;
using sentry::bindings::strings;
using sentry::bindings::view;

void sentry_register_crypto(py::module_& m) {
  py::module_ c = m.def_submodule(
      "crypto", "ECDSA (P-256/384/521) keys and signatures, DSSE PAE and X.509 chains (OpenSSL)");

  // Translators run newest first, so ChainError (a CryptoError) is registered second.
  auto& crypto_error = py::register_local_exception<CryptoError>(c, "CryptoError", PyExc_ValueError);
  py::register_local_exception<ChainError>(c, "ChainError", crypto_error.ptr());

  py::class_<PublicKey>(c, "PublicKey")
      .def_static(
          "from_pem", [](const py::bytes& pem) { return PublicKey::from_pem(view(pem)); },
          py::arg("pem"), "Load a SubjectPublicKeyInfo PEM of an EC key on P-256/384/521.")
      .def(
          "pem", [](const PublicKey& k) { return py::bytes(k.pem()); },
          "The SubjectPublicKeyInfo PEM (as OpenSSL's PEM_write_bio_PUBKEY writes it).")
      .def("hint", &PublicKey::hint, "Hex SHA-256 of pem().")
      .def_property_readonly("curve", [](const PublicKey& k) { return curve_name(k.curve()); })
      .def_property_readonly("hash_name",
                             [](const PublicKey& k) { return curve_hash_name(k.curve()); })
      .def(
          "verify",
          [](const PublicKey& k, const py::bytes& data, const py::bytes& signature,
             const std::optional<std::string>& hash) {
            std::string_view d = view(data), s = view(signature);
            py::gil_scoped_release release;
            return hash ? k.verify(d, s, *hash) : k.verify(d, s);
          },
          py::arg("data"), py::arg("signature"), py::arg("hash") = py::none(),
          "True if signature (DER ECDSA) is valid for data; False for any bad signature. hash: "
          "'SHA-256', 'SHA-384' or 'SHA-512' instead of the curve's (None).")
      .def(
          "raw_xy", [](const PublicKey& k) { return py::bytes(k.raw_xy()); },
          "x || y, big-endian, 64/96/132 bytes.");

  py::class_<PrivateKey>(c, "PrivateKey")
      .def_static(
          "from_pem",
          [](const py::bytes& pem, std::optional<std::string> password) {
            return PrivateKey::from_pem(view(pem), password);
          },
          py::arg("pem"), py::arg("password") = py::none(),
          "Load a PKCS#8 or traditional EC PEM private key (encrypted ones with password).")
      .def_static(
          "generate", [](const std::string& curve) { return PrivateKey::generate(curve_from_name(curve)); },
          py::arg("curve") = "P-256")
      .def(
          "to_pem",
          [](const PrivateKey& k, std::optional<std::string> password) {
            return py::bytes(k.to_pem(password));
          },
          py::arg("password") = py::none(),
          "PKCS#8 PEM, encrypted with AES-256-CBC when a password is given.")
      .def("public_key", &PrivateKey::public_key)
      .def_property_readonly("curve", [](const PrivateKey& k) { return curve_name(k.curve()); })
      .def(
          "sign",
          [](const PrivateKey& k, const py::bytes& data) {
            std::string_view d = view(data);
            std::string sig;
            {
              py::gil_scoped_release release;
              sig = k.sign(d);
            }
            return py::bytes(sig);
          },
          py::arg("data"), "DER ECDSA signature of data with the curve's hash.");

  c.def(
      "generate_private_key",
      [](const std::string& curve) { return PrivateKey::generate(curve_from_name(curve)); },
      py::arg("curve") = "P-256");
  c.def(
      "dsse_pae",
      [](const py::bytes& payload_type, const py::bytes& payload) {
        return py::bytes(dsse_pae(view(payload_type), view(payload)));
      },
      py::arg("payload_type"), py::arg("payload"),
      "DSSE v1 PAE: b'DSSEv1 <len(type)> <type> <len(payload)> <payload>'.");
  c.def(
      "der_signatures_to_raw",
      [](const std::vector<py::bytes>& signatures, const std::string& curve) {
        const Curve c = curve_from_name(curve);
        const std::size_t width = 2 * curve_coordinate_size(c);
        std::vector<std::string_view> views;
        views.reserve(signatures.size());
        for (const auto& s : signatures) views.push_back(view(s));
        std::string raw(views.size() * width, '\0');
        std::vector<bool> ok(views.size());
        {
          py::gil_scoped_release release;
          for (std::size_t i = 0; i < views.size(); ++i) {
            const std::optional<std::string> one = der_signature_to_raw(views[i], c);
            ok[i] = one.has_value();
            if (ok[i]) raw.replace(i * width, width, *one);
          }
        }
        return py::make_tuple(py::bytes(raw), ok);
      },
      py::arg("signatures"), py::arg("curve") = "P-256",
      "(r || s of every DER signature, concatenated, zeros where one is not strict DER or does "
      "not fit the curve; [parsed?]) for batched verification.");
  c.def(
      "sha256_hex", [](const py::bytes& data) { return sha256_hex(view(data)); },
      py::arg("data"));
  c.def(
      "certificates_from_pem",
      [](const py::bytes& pem) {
        std::vector<py::bytes> out;
        for (auto& der : certificates_from_pem(view(pem))) out.emplace_back(der);
        return out;
      },
      py::arg("pem"), "The DER of every CERTIFICATE block of a PEM text, in order.");
  c.def(
      "verify_certificate_chain",
      [](const std::vector<py::bytes>& chain_der, const std::vector<py::bytes>& roots_der,
         std::optional<std::int64_t> at_unix_time) {
        std::vector<std::string> chain = strings(chain_der), roots = strings(roots_der);
        py::gil_scoped_release release;
        return verify_certificate_chain(chain, roots, at_unix_time);
      },
      py::arg("chain_der"), py::arg("roots_der"), py::arg("at_unix_time") = py::none(),
      "Verify a DER chain (leaf first) against DER roots at a time (default: the leaf's "
      "notBefore) and return the leaf's PublicKey.");
  c.def(
      "certificate_public_key",
      [](const py::bytes& der) { return certificate_public_key(std::string(der)); },
      py::arg("der"), "The PublicKey of a DER certificate (no chain check).");
}
