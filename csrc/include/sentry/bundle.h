// Sentry's signature bundles: reading a Sigstore bundle v0.3 (DSSE envelope), checking its
// signature, and reading the in-toto statement it signs (OpenSSF Model Signing v1.0, with
// Sentry's per-tensor listing, or model_signing v0.2.0's statement). docs/FORMAT.md §6.
//
// Torch-free: it needs OpenSSL's libcrypto and simdjson (link the sentry_ops library, which
// contains both). Every input is untrusted: every field is checked before use, JSON is read
// strictly (UTF-8, no duplicate keys, nothing after the document), and every problem throws
// FormatError with one line naming the file and the field, e.g.
//   "model.sig: dsseEnvelope.signatures[0].sig: invalid base64 (...)".
// A signature that does not verify throws VerificationError.
#pragma once

#include <array>
#include <memory>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "crypto.h"

namespace sentry {

// Malformed or unsupported input; the message names the file and the field.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A check failed: a signature, a certificate chain, or (verify_model) tensors that differ from
// what was signed, listed by name. what() is `brief` followed by the lists, e.g.
// "m.sig: the model does not match its signature; changed: fc.weight; missing: fc.bias".
class VerificationError : public std::runtime_error {
 public:
  explicit VerificationError(const std::string& message, std::vector<std::string> changed = {},
                             std::vector<std::string> missing = {},
                             std::vector<std::string> unexpected = {})
      : std::runtime_error(with_lists(message, changed, missing, unexpected)),
        brief(message),
        changed(std::move(changed)),
        missing(std::move(missing)),
        unexpected(std::move(unexpected)) {}
  std::string brief;                    // the message without the lists
  std::vector<std::string> changed;     // signed, present, but different
  std::vector<std::string> missing;     // signed but absent
  std::vector<std::string> unexpected;  // present but not signed

 private:
  // The first ten names of each list (as Sentry's Python VerificationError shows them).
  static std::string with_lists(const std::string& message, const std::vector<std::string>& changed,
                                const std::vector<std::string>& missing,
                                const std::vector<std::string>& unexpected) {
    std::string out = message;
    const std::pair<const char*, const std::vector<std::string>*> lists[] = {
        {"changed", &changed}, {"missing", &missing}, {"unexpected", &unexpected}};
    for (const auto& [label, names] : lists) {
      if (names->empty()) continue;
      out += std::string("; ") + label + ": ";
      for (std::size_t i = 0; i < names->size() && i < 10; ++i) out += (i ? ", " : "") + (*names)[i];
      if (names->size() > 10) out += ", ... (" + std::to_string(names->size()) + " in all)";
    }
    return out;
  }
};

// The signature was made by another method than the trust given (a keyless bundle checked with
// certificate roots, a key bundle checked keyless): the message says which options to give.
// `parts` is the message in pieces, the options marked, so that each interface can spell them
// its own way (Python keywords, the CLI's --flags); what() spells them as Python keywords.
class MethodError : public VerificationError {
 public:
  struct Part {
    std::string text;
    bool option = false;  // text is an option's Python keyword
  };
  explicit MethodError(std::vector<Part> parts)
      : VerificationError(join(parts)), parts(std::move(parts)) {}
  std::vector<Part> parts;

 private:
  static std::string join(const std::vector<Part>& parts) {
    std::string out;
    for (const Part& p : parts) out += p.text;
    return out;
  }
};

// A file that cannot be opened or read: the errno value (code()) and the file.
class FileError : public std::system_error {
 public:
  FileError(int error, const std::string& file)
      : std::system_error(error, std::generic_category(), file), path(file) {}
  std::string path;
};

using Digest = std::array<std::uint8_t, 32>;

inline constexpr std::string_view kBundleMediaType =
    "application/vnd.dev.sigstore.bundle.v0.3+json";
inline constexpr std::string_view kPayloadType = "application/vnd.in-toto+json";
inline constexpr std::string_view kStatementType = "https://in-toto.io/Statement/v1";
inline constexpr std::string_view kPredicateType = "https://model_signing/signature/v1.0";
inline constexpr std::string_view kV02PredicateType = "https://model_signing/Digests/v0.1";
// A bundle file larger than this is refused before it is read.
inline constexpr std::uint64_t kMaxBundleBytes = 64ull * 1024 * 1024;

// The DSSE envelope of a bundle and the material to check it with, as read (not yet checked).
struct Bundle {
  std::string payload_type;
  std::string payload;    // the statement's JSON bytes
  std::string signature;  // DER ECDSA
  std::string public_key_hint;                  // hex; empty when the bundle names none
  std::vector<std::string> certificate_chain;   // DER, leaf first; empty for a key bundle
  std::vector<std::string> tlog_entries;        // keyless: each entry as compact JSON
};

// Parses bundle JSON (FormatError naming `source` and the field).
Bundle parse_bundle(std::string_view json, const std::string& source);

// A bundle file's bytes: opened without blocking, refused unless a regular file of at most
// kMaxBundleBytes (FormatError naming the file; a missing or unreadable file too).
std::string read_bundle_file(const std::string& path);

// One signed resource: a file (method "files") or a tensor (method "tensors").
struct Resource {
  std::string name;
  std::string algorithm;  // "sha256", "blake3" or "sha256-tree"
  Digest digest;
};

// One shard of a file (method "shards", the reference's): bytes [start, end) of `path` and
// their SHA-256.
struct Shard {
  std::string path;  // "." for a single-file model
  std::uint64_t start = 0, end = 0;
  Digest digest;
};

// One tensor of predicate.tensors. `file`, `offset` and `length` are given together or not at
// all (has_location); `length` then equals the bytes dtype and shape take.
struct TensorEntry {
  std::string name;
  std::string dtype;  // safetensors name: F32, BF16, ...
  std::vector<std::int64_t> shape;
  Digest digest;
  bool has_location = false;
  std::string file;  // a signed resource ("." for a single-file model)
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

// A validated statement. Resources and tensors are as listed: tensors sorted by (name, file), a
// name unique in its file (two files may hold the same names; method "tensors": unique).
struct Statement {
  std::optional<std::string> model_name;  // none for model_signing v0.2.0 statements
  Digest root;                            // subject[0].digest.sha256 (ROOT)
  std::string method;                     // "files", "tensors" or "shards"
  std::string hash_type;
  bool allow_symlinks = false;
  std::vector<std::string> ignore_paths;
  std::vector<Resource> resources;
  // Method "shards": bytes per shard, and the resources as shards, file by file (in the order
  // first listed), each file's in order: they cut the file exactly.
  std::uint64_t shard_size = 0;
  std::vector<Shard> shards;
  bool has_tensors = false;  // predicate.tensors is present
  std::string tensor_hash_type;
  std::vector<TensorEntry> tensors;
};

// Validates a statement completely (OMS v1.0 with Sentry's tensors extension or the reference's
// shards serialization, or model_signing v0.2.0's Digests/v0.1) and returns it; FormatError naming `source` and the field.
Statement parse_statement(std::string_view payload, const std::string& source);

// The table of expected tensor digests: the predicate.tensors entries of every file, or of
// `files` (as the signature names them) when given, one per name, sorted by name.
// VerificationError when the statement lists no tensors or none of a file named; FormatError
// when a name is signed in more than one of the files concerned (a state dict's keys cannot say
// which file a tensor came from, so no choice between them would be sound).
std::vector<const TensorEntry*> expected_tensors(
    const Statement& statement, const std::string& source,
    const std::optional<std::vector<std::string>>& files = std::nullopt);

// Bits per element of a safetensors dtype name; 0 when the name is unknown.
int safetensors_dtype_bits(std::string_view dtype);

// How a bundle's signature is checked.
class Trust {
 public:
  // The signer's public key.
  static Trust public_key(crypto::PublicKey key);
  // Trust anchors (DER) the bundle's certificate chain must lead to (model_signing's
  // certificate method: the chain is valid at the leaf's notBefore).
  static Trust certificate_roots(std::vector<std::string> roots_der);
  // A Sigstore keyless bundle the caller has already verified by other means (Sentry's Python
  // layer: sigstore-python), which returned this envelope payload: the bundle read here must
  // carry exactly that payload. The key is the bundle's leaf certificate's.
  static Trust verified_keyless(std::string payload_type, std::string payload);

  enum class Kind { kPublicKey, kCertificateRoots, kVerifiedKeyless };
  Kind kind() const { return kind_; }

 private:
  friend struct TrustAccess;
  Trust(Kind kind) : kind_(kind) {}
  Kind kind_;
  std::optional<crypto::PublicKey> key_;
  std::vector<std::string> roots_der_;
  std::string payload_type_, payload_;
  std::string memo_identity_;  // the key or the roots, as the bundle memo compares them
};

// A bundle whose signature verified, its statement, and the key that verified it.
struct SignedStatement {
  Bundle bundle;
  Statement statement;
  crypto::PublicKey key;
  // Milliseconds spent: "read bundle", "check signature", "parse statement" (the last two run
  // at the same time, on two threads: see set_background_threads).
  std::vector<std::pair<std::string, double>> timings_ms;
};

// Reads the bundle file, checks its signature with `trust` (VerificationError when it does not
// verify) and parses the statement, on a background thread while the signature is checked.
// Nothing of the statement is used, and no error of its parse is reported, unless the signature
// verified.
SignedStatement open_bundle(const std::string& path, const Trust& trust);
// The same over bundle bytes already read; `source` names them in messages.
SignedStatement open_bundle_data(std::string_view data, const std::string& source,
                                 const Trust& trust);

// open_bundle_data through a memo of the bundles whose signature verified in this process (the
// last few, at most kBundleMemoBytes in all): the same bytes checked with the same trust (a key,
// or certificate roots) give the same statement, so a repeat skips the signature check and the
// parse; its timings say "memoised" instead. Nothing that failed is remembered, and keyless trust
// (checked by the caller before each call) is never memoised. Thread-safe.
struct OpenedBundle {
  std::shared_ptr<const SignedStatement> opened;  // shared with the memo
  std::vector<std::pair<std::string, double>> timings_ms;  // of this open
};
OpenedBundle open_bundle_memoised(std::string_view data, const std::string& source,
                                  const Trust& trust);
inline constexpr std::uint64_t kBundleMemoBytes = 64ull * 1024 * 1024;

// Forgets every memoised bundle (benchmarks measure a first open with it).
void clear_bundle_memo();

// Threads kept for the host steps that overlap (opening a bundle while the GPU hash launches,
// parsing a statement while its signature is checked, reading a large statement's entries in two
// halves), made on first use: 3 by default, at most one fewer than the cores. 0 runs every step
// in order on the calling thread. Whatever the number, errors are the ones an in-order reading
// reports (a statement's only if its signature verified).
void set_background_threads(int threads);
int background_threads();

// What model_signing v0.2.0's key and certificate signers signed instead of the DSSE PAE:
// "DSSEV1 <len type> <type> <len payload> " followed by Python's repr() of the payload bytes.
std::string v02_pae(std::string_view payload);

}  // namespace sentry
