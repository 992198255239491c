// The bundle reader (sentry/bundle.h): bundles every model_signing release wrote (tests/vectors)
// open with their keys and certificates and list the SHA-256 (OpenSSL) of their files; statements
// signed here with sentry::crypto and base64 by OpenSSL; malformed JSON, envelopes and statements
// are refused naming the field; every truncation and every one-bit flip of a real bundle is an
// error or the very statement that was signed, never a crash (run under -DSENTRY_ASAN=ON).
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../../csrc/bundle/background.h"
#include "sentry/bundle.h"

namespace {

using sentry::FormatError;
using sentry::Trust;
using sentry::VerificationError;

const std::string kVectors = std::string(SENTRY_SOURCE_DIR) + "/tests/vectors/model_signing/";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string base64(const std::string& raw) {  // OpenSSL's encoder: an independent reference
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(raw.data()),
                                static_cast<int>(raw.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string hex(const sentry::Digest& d) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (auto b : d) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

// The message of the FormatError `f` throws ("" when it throws nothing).
std::string format_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

Trust key_trust(const std::string& name) {
  return Trust::public_key(sentry::crypto::PublicKey::from_pem(read_file(kVectors + "keys/" + name)));
}

Trust root_trust() {
  return Trust::certificate_roots(
      sentry::crypto::certificates_from_pem(read_file(kVectors + "keys/ca-cert.pem")));
}

// ---------------------------------------------------------------------------------------------
// the reference tool's bundles

struct Release {
  const char* folder;
  bool certificate;
  const char* key;
};
const Release kReleases[] = {
    {"v0.2.0-key", false, "key-p256.pub"},      {"v0.2.0-key-p384", false, "key-p384.pub"},
    {"v0.2.0-certificate", true, nullptr},      {"v0.3.0-key", false, "key-p256.pub"},
    {"v0.3.1-key", false, "key-p256.pub"},      {"v1.0.0-key", false, "key-p256.pub"},
    {"v1.0.0-certificate", true, nullptr},      {"v1.0.1-key", false, "key-p256.pub"},
    {"v1.0.1-certificate", true, nullptr},      {"v1.1.0-key", false, "key-p256.pub"},
    {"v1.1.0-certificate", true, nullptr},      {"v1.1.1-key", false, "key-p256.pub"},
    {"v1.1.1-certificate", true, nullptr},
};

TEST(ReferenceBundles, EveryReleaseOpensAndListsItsFiles) {
  for (const Release& r : kReleases) {
    SCOPED_TRACE(r.folder);
    const std::string dir = kVectors + r.folder + "/";
    const sentry::SignedStatement s =
        sentry::open_bundle(dir + "model.sig", r.certificate ? root_trust() : key_trust(r.key));
    const sentry::Statement& st = s.statement;
    EXPECT_EQ(st.method, "files");
    EXPECT_EQ(st.hash_type, "sha256");
    ASSERT_EQ(st.resources.size(), 2u);
    for (const auto& res : st.resources) {
      EXPECT_EQ(hex(res.digest), sentry::crypto::sha256_hex(read_file(dir + res.name)));
    }
    EXPECT_EQ(st.resources[0].name, "signme-1");
    EXPECT_EQ(st.resources[1].name, "signme-2");
    EXPECT_EQ(s.bundle.certificate_chain.empty(), !r.certificate);
  }
}

TEST(ReferenceBundles, AnotherSignerIsRefused) {
  EXPECT_THROW(sentry::open_bundle(kVectors + "v1.1.1-key/model.sig", key_trust("key-p384.pub")),
               VerificationError);
  EXPECT_THROW(sentry::open_bundle(kVectors + "v0.2.0-key/model.sig", key_trust("key-p384.pub")),
               VerificationError);
  // A certificate bundle checked against a key it does not carry, and the other way round.
  EXPECT_THROW(sentry::open_bundle(kVectors + "v1.1.1-key/model.sig", root_trust()),
               VerificationError);
}

TEST(ReferenceBundles, SingleFileModelIsOneResourceNamedDot) {
  const auto s = sentry::open_bundle(kVectors + "v1.1.1-key-single-file/model.sig",
                                     key_trust("key-p256.pub"));
  ASSERT_EQ(s.statement.resources.size(), 1u);
  EXPECT_EQ(s.statement.resources[0].name, ".");
}

TEST(ReferenceBundles, MissingFileAndDirectory) {
  EXPECT_THROW(sentry::read_bundle_file(kVectors + "no-such.sig"), sentry::FileError);
  const std::string message = format_error([] { sentry::read_bundle_file(kVectors); });
  EXPECT_NE(message.find("is a directory, not a regular file"), std::string::npos) << message;
}

// ---------------------------------------------------------------------------------------------
// statements signed here

const std::string kDigestA(64, 'a'), kDigestB(64, 'b');

// A statement in the layout sentry.bundle.make_statement writes, with a correct ROOT.
std::string tensor_statement(const std::string& entries_a = "", const std::string& dtype = "F32") {
  std::string raw;
  for (const std::string& h : {kDigestA, kDigestB}) {
    for (std::size_t i = 0; i < 32; ++i) raw += static_cast<char>(std::stoi(h.substr(2 * i, 2), nullptr, 16));
  }
  const std::string root = sentry::crypto::sha256_hex(raw);
  return R"({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "m", "digest": {"sha256": ")" +
         root + R"("}}], "predicateType": "https://model_signing/signature/v1.0", "predicate": {
  "resources": [{"algorithm": "blake3", "digest": ")" + kDigestA + R"(", "name": "a"},
                {"algorithm": "blake3", "digest": ")" + kDigestB + R"(", "name": "b"}],
  "serialization": {"allow_symlinks": false, "hash_type": "blake3", "method": "tensors"},
  "tensors": {"hash_type": "blake3", "entries": [
    {"digest": ")" + kDigestA + R"(", "dtype": ")" + dtype + R"(", "name": "a", "shape": [2, 3])" +
         entries_a + R"(},
    {"digest": ")" + kDigestB + R"(", "dtype": "BF16", "name": "b", "shape": []}]}}})";
}

std::string bundle_json(const std::string& payload, const std::string& signature,
                        const std::string& hint) {
  return R"({"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":")" +
         hint + R"("},"tlogEntries":[]},"dsseEnvelope":{"payload":")" + base64(payload) +
         R"(","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":")" +
         base64(signature) + R"(","keyid":""}]}})";
}

struct Signer {
  sentry::crypto::PrivateKey key = sentry::crypto::PrivateKey::generate();
  std::string sign(const std::string& payload) const {
    const std::string sig =
        key.sign(sentry::crypto::dsse_pae(std::string(sentry::kPayloadType), payload));
    return bundle_json(payload, sig, key.public_key().hint());
  }
  Trust trust() const { return Trust::public_key(key.public_key()); }
};

TEST(SignedHere, TensorListingIsRead) {
  const Signer signer;
  const auto s = sentry::open_bundle_data(signer.sign(tensor_statement()), "t.sig", signer.trust());
  const sentry::Statement& st = s.statement;
  EXPECT_EQ(st.model_name.value(), "m");
  EXPECT_EQ(st.method, "tensors");
  ASSERT_TRUE(st.has_tensors);
  EXPECT_EQ(st.tensor_hash_type, "blake3");
  ASSERT_EQ(st.tensors.size(), 2u);
  EXPECT_EQ(st.tensors[0].name, "a");
  EXPECT_EQ(st.tensors[0].shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(hex(st.tensors[0].digest), kDigestA);
  EXPECT_EQ(st.tensors[1].dtype, "BF16");
  EXPECT_TRUE(st.tensors[1].shape.empty());
  EXPECT_FALSE(st.tensors[1].has_location);
  EXPECT_EQ(s.key.hint(), signer.key.public_key().hint());
}

TEST(SignedHere, AnotherKeyNamesBothHints) {
  const Signer signer, other;
  try {
    sentry::open_bundle_data(signer.sign(tensor_statement()), "t.sig", other.trust());
    FAIL() << "verified with another key";
  } catch (const VerificationError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("t.sig: the signature does not verify with this key"), std::string::npos);
    EXPECT_NE(m.find(other.key.public_key().hint()), std::string::npos);
  }
}

TEST(SignedHere, UnsignedStatementIsNeverReported) {
  // The statement is parsed while the signature is checked; with a bad signature the error is the
  // signature's, whether the statement parses or not, with background threads or without.
  const Signer signer, other;
  for (int threads : {3, 0}) {
    sentry::set_background_threads(threads);
    for (const std::string& statement : {std::string("{not json"), tensor_statement()}) {
      try {
        sentry::open_bundle_data(signer.sign(statement), "t.sig", other.trust());
        FAIL() << "verified with another key";
      } catch (const VerificationError& e) {
        EXPECT_NE(std::string(e.what()).find("does not verify with this key"), std::string::npos);
      }
    }
    // Signed by the right key, the malformed statement's own error is reported.
    EXPECT_NE(format_error([&] {
                sentry::open_bundle_data(signer.sign("{not json"), "t.sig", signer.trust());
              }).find("t.sig: "),
              std::string::npos);
  }
  sentry::set_background_threads(3);
}

TEST(SignedHere, KeylessTrustNeedsTheVerifiedPayload) {
  const Signer signer;
  const std::string data = signer.sign(tensor_statement());
  // No certificate: a key bundle is not keyless; the error names the option to give instead.
  try {
    sentry::open_bundle_data(data, "t.sig", Trust::verified_keyless(
                                                std::string(sentry::kPayloadType), tensor_statement()));
    FAIL() << "a key bundle verified keyless";
  } catch (const sentry::MethodError& e) {
    ASSERT_EQ(e.parts.size(), 2u);
    EXPECT_TRUE(e.parts[1].option);
    EXPECT_EQ(e.parts[1].text, "public_key");
    EXPECT_EQ(std::string(e.what()), "t.sig: the bundle carries no certificate: it was signed "
                                     "with a key, not keyless; verify it with public_key");
  }
}

// ---------------------------------------------------------------------------------------------
// refusals name the field

struct Bad {
  const char* what;
  std::string statement;
  const char* message;
};

TEST(Statement, RefusalsNameTheField) {
  const std::string good = tensor_statement();
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const std::size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  std::string wrong_root = good;
  wrong_root.replace(wrong_root.find("\"sha256\": \"") + 11, 64, std::string(64, '0'));
  const Bad cases[] = {
      {"root", wrong_root, "s.json: subject[0].digest.sha256: subject digest does not match"},
      {"dtype", replace("\"F32\"", "\"F128\""),
       "s.json: predicate.tensors.entries[0].dtype: unknown safetensors dtype 'F128'"},
      {"shape", replace("[2, 3]", "[2, -3]"), "predicate.tensors.entries[0].shape: dimensions"},
      {"shape float", replace("[2, 3]", "[2.0, 3]"), "predicate.tensors.entries[0].shape"},
      {"shape huge", replace("[2, 3]", "[99999999999999999999999, 3]"),
       "predicate.tensors.entries[0].shape[0]: invalid number"},
      {"file alone", tensor_statement(", \"file\": \"x\""),
       "entries[0]: 'file', 'offset' and 'length' go together"},
      {"length", tensor_statement(", \"file\": \"x\", \"offset\": 0, \"length\": 5"),
       "entries[0].length: 5 bytes, but F32 [2, 3] takes 24"},
      {"bits", tensor_statement(", \"file\": \"x\", \"offset\": 0, \"length\": 5", "F6_E2M3"),
       "entries[0]: F6_E2M3 [2, 3]: 6 elements of 6 bits do not end on a byte boundary"},
      {"extra", tensor_statement(", \"stride\": [1]"), "entries[0]: unknown field(s) 'stride'"},
      {"duplicate key", replace("\"name\": \"a\"", "\"name\": \"a\", \"name\": \"a\""),
       "predicate.resources[0]: duplicate key 'name' in a JSON object"},
      {"surrogate", replace("\"name\": \"a\"}", "\"name\": \"a\\ud800\"}"),
       "predicate.resources[0].name: invalid string: a bad escape or a lone surrogate"},
      {"NaN", replace("false", "NaN"), "predicate.serialization.allow_symlinks: NaN is not valid"},
      {"bool", replace("false", "\"false\""), "allow_symlinks: must be true or false, got 'false'"},
      {"method", replace("\"tensors\"}", "\"sharding\"}"), "unsupported method 'sharding'"},
      {"shards", replace("\"tensors\"}", "\"shards\"}"),
       "predicate.serialization: missing 'shard_size'"},
      {"shard_size", replace("\"tensors\"}", "\"tensors\", \"shard_size\": 8}"),
       "predicate.serialization: unknown field(s) 'shard_size'"},
      {"digest", replace(kDigestA, std::string(64, 'A')), "resources[0].digest: must be 64 lower"},
      {"subject field", replace("\"m\"", "\"m\", \"x\": 1"), ""},  // unknown: ignored
      {"unsorted", replace("\"name\": \"a\", \"shape\"", "\"name\": \"c\", \"shape\""),
       "predicate.tensors.entries: not sorted by name"},
      {"type", replace("Statement/v1", "Statement/v0.1"), "s.json: _type: expected"},
      {"trailing", good + " x", "s.json: malformed statement"},
      {"utf8", replace("\"m\"", "\"\xff\""), "s.json: statement is not UTF-8"},
  };
  for (const Bad& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string m = format_error([&] { sentry::parse_statement(c.statement, "s.json"); });
    if (std::string(c.message).empty()) {
      EXPECT_EQ(m, "");
    } else {
      EXPECT_NE(m.find(c.message), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
}

TEST(Statement, DeepNestingIsRefusedNotACrash) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_NE(format_error([&] { sentry::parse_statement(deep, "s"); }), "");
  const std::string deep_bad = "{\"a\":" + std::string(5000, '[') + "\"\\ud800\"" +
                               std::string(5000, ']') + "}";
  EXPECT_NE(format_error([&] { sentry::parse_statement(deep_bad, "s"); }), "");
}

TEST(Bundle, Base64IsStrict) {
  const Signer signer;
  const std::string good = signer.sign(tensor_statement());
  const auto at = good.find("\"sig\":\"") + 7;
  const std::string sig = good.substr(at, good.find('"', at) - at);
  const std::vector<std::pair<std::string, const char*>> bad = {
      {sig.substr(0, sig.size() - 1), "not a multiple of 4"},
      {"@@@@", "outside the standard alphabet"},
      {"MA=A", "outside the standard alphabet"},
      {"MAB=", "canonical"},  // "MAA=" is the canonical form of these two bytes
      {"-_-_", "outside the standard alphabet"},
      {"", "dsseEnvelope.signatures[0].sig: empty signature"},
  };
  for (const auto& [value, message] : bad) {
    SCOPED_TRACE(value);
    std::string data = good;
    data.replace(at, sig.size(), value);
    const std::string m = format_error([&] { sentry::parse_bundle(data, "b.sig"); });
    EXPECT_NE(m.find("b.sig: dsseEnvelope.signatures[0].sig"), std::string::npos) << m;
    EXPECT_NE(m.find(message), std::string::npos) << m;
  }
}

TEST(Bundle, EnvelopeRefusals) {
  const Signer signer;
  const std::string good = signer.sign(tensor_statement());
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    return s.replace(s.find(from), from.size(), to);
  };
  const std::vector<std::pair<std::string, const char*>> cases = {
      {replace("\"tlogEntries\":[]", "\"tlogEntries\":[1]"),
       "verificationMaterial.tlogEntries[0]: must be a JSON object, got int"},
      {replace("v0.3+json", "v0.2+json"), "mediaType: expected"},
      {replace("\"keyid\":\"\"", "\"keyid\":1"), "dsseEnvelope.signatures[0].keyid: must be a string"},
      {replace("{\"hint\"", "{\"x\":1,\"hint\""), "verificationMaterial.publicKey: unknown field(s) 'x'"},
      {replace("\"publicKey\"", "\"certificate\":{\"rawBytes\":\"MAA=\"},\"publicKey\""),
       "verificationMaterial: needs exactly one of"},
      {replace("\"mediaType\"", "\"messageSignature\":{},\"mediaType\""),
       "messageSignature: not supported"},
      {"[]", "bundle: must be a JSON object, got list"},
      {"", "malformed bundle JSON"},
  };
  for (const auto& [data, message] : cases) {
    const std::string m = format_error([&] { sentry::parse_bundle(data, "b.sig"); });
    EXPECT_NE(m.find(message), std::string::npos) << m;
  }
}

// ---------------------------------------------------------------------------------------------
// tensor names repeated across files (two checkpoints side by side), and the expected table

const char* const kFileOne = "ckpt-1/model.safetensors";
const char* const kFileTwo = "ckpt-2/model.safetensors";

// A method-files statement of kFileOne and kFileTwo listing `entries` (JSON objects).
std::string files_statement(const std::vector<std::string>& entries) {
  std::string raw;
  for (const std::string& h : {kDigestA, kDigestB}) {
    for (std::size_t i = 0; i < 32; ++i) raw += static_cast<char>(std::stoi(h.substr(2 * i, 2), nullptr, 16));
  }
  std::string listed;
  for (const std::string& e : entries) listed += (listed.empty() ? "" : ", ") + e;
  return R"({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "m", "digest": {"sha256": ")" +
         sentry::crypto::sha256_hex(raw) +
         R"("}}], "predicateType": "https://model_signing/signature/v1.0", "predicate": {
  "resources": [{"algorithm": "sha256", "digest": ")" + kDigestA + R"(", "name": ")" + kFileOne + R"("},
                {"algorithm": "sha256", "digest": ")" + kDigestB + R"(", "name": ")" + kFileTwo + R"("}],
  "serialization": {"allow_symlinks": false, "hash_type": "sha256", "method": "files"},
  "tensors": {"hash_type": "blake3", "entries": [)" + listed + "]}}}";
}

std::string entry(const std::string& name, const std::string& file, char digest = 'c') {
  return R"({"name": ")" + name + R"(", "dtype": "F32", "shape": [1], "digest": ")" +
         std::string(64, digest) + R"(", "file": ")" + file + R"(", "offset": 8, "length": 4})";
}

TEST(Statement, TensorNamesRepeatAcrossFilesNotWithinOne) {
  const auto st = sentry::parse_statement(
      files_statement({entry("b", kFileOne), entry("b", kFileTwo), entry("w", kFileOne),
                       entry("w", kFileTwo)}),
      "s");
  ASSERT_EQ(st.tensors.size(), 4u);
  EXPECT_EQ(st.tensors[1].name, "b");
  EXPECT_EQ(st.tensors[1].file, kFileTwo);
  const std::pair<std::vector<std::string>, const char*> bad[] = {
      {{entry("w", kFileTwo), entry("w", kFileOne)},
       "s: predicate.tensors.entries: not sorted by name, then file, in code-point order"},
      {{entry("w", kFileOne), entry("w", kFileOne, 'd')},
       "s: predicate.tensors.entries: duplicate tensor name(s) in one file ['w']"},
  };
  for (const auto& [entries, message] : bad) {
    EXPECT_EQ(format_error([&] { sentry::parse_statement(files_statement(entries), "s"); }),
              message);
  }
  // Method tensors names tensors only: the same name twice is refused whatever `file` says
  // (else the second entry would go unchecked against the resources).
  std::string twice = tensor_statement(R"(, "file": "x", "offset": 0, "length": 24)");
  twice.replace(twice.find(R"("name": "b", "shape": [])"), 24,
                R"("name": "a", "shape": [], "file": "y", "offset": 0, "length": 2)");
  EXPECT_EQ(format_error([&] { sentry::parse_statement(twice, "s"); }),
            "s: predicate.tensors.entries: duplicate tensor name(s) ['a']");
}

TEST(ExpectedTensors, AllOrThoseOfTheFilesNamed) {
  const auto st = sentry::parse_statement(
      files_statement({entry("b", kFileOne), entry("b", kFileTwo), entry("w", kFileOne),
                       entry("w", kFileTwo, 'd')}),
      "s");
  // All of them: which file's "w" would a state dict be? Refused, naming names and files.
  EXPECT_EQ(format_error([&] { sentry::expected_tensors(st, "m.sig"); }),
            "m.sig: tensors of the same name are signed in several files: 'b' (" +
                std::string(kFileOne) + " and " + kFileTwo + "), 'w' (" + kFileOne + " and " +
                kFileTwo +
                "); a loaded state dict cannot say which file it came from: name the file its "
                "tensors were loaded from (file=), or verify the files on disk (verify_files)");
  const auto two = sentry::expected_tensors(st, "m.sig", std::vector<std::string>{kFileTwo});
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0]->name, "b");
  EXPECT_EQ(two[1]->name, "w");
  EXPECT_EQ(two[1]->digest[0], 0xdd);
  EXPECT_NE(format_error([&] {
              sentry::expected_tensors(st, "m.sig", std::vector<std::string>{kFileOne, kFileTwo});
            }).find("several files"),
            std::string::npos);
  try {
    sentry::expected_tensors(st, "m.sig", std::vector<std::string>{"ckpt-3/model.safetensors"});
    FAIL() << "a file without tensors";
  } catch (const VerificationError& e) {
    EXPECT_EQ(std::string(e.what()), "m.sig: lists no tensors of ckpt-3/model.safetensors (files "
                                     "with tensors: " + std::string(kFileOne) + ", " + kFileTwo + ")");
  }
  // A tensors-method statement: every entry, in name order.
  const auto tensors = sentry::parse_statement(tensor_statement(), "s");
  EXPECT_EQ(sentry::expected_tensors(tensors, "m.sig").size(), 2u);
  // A statement without a tensor listing has no table.
  const auto plain = sentry::open_bundle(kVectors + "v1.1.1-key/model.sig", key_trust("key-p256.pub"));
  EXPECT_THROW(sentry::expected_tensors(plain.statement, "m.sig"), VerificationError);
}

// ---------------------------------------------------------------------------------------------
// the reference's shards method

struct ShardFile {
  std::string path;
  std::uint64_t size;
};

// A shards statement as model_signing 1.1.1 writes it: shard_size a float, resources in (path
// components, start) order, each digest the SHA-256 of the resource's name (any digest will do).
std::string shards_statement(const std::string& shard_size, std::uint64_t size,
                             const std::vector<ShardFile>& files,
                             const std::function<void(std::vector<std::string>&)>& edit = {}) {
  std::vector<std::string> names;
  for (const ShardFile& f : files) {
    for (std::uint64_t start = 0; start < f.size; start += size) {
      names.push_back(f.path + ":" + std::to_string(start) + ":" +
                      std::to_string(std::min(start + size, f.size)));
    }
  }
  if (edit) edit(names);
  std::string raw, resources;
  for (const std::string& name : names) {
    const std::string digest = sentry::crypto::sha256_hex(name);
    for (std::size_t i = 0; i < 32; ++i) raw += static_cast<char>(std::stoi(digest.substr(2 * i, 2), nullptr, 16));
    resources += std::string(resources.empty() ? "" : ", ") + R"({"algorithm": "sha256-sharded-)" +
                 std::to_string(size) + R"(", "digest": ")" + digest + R"(", "name": ")" + name + R"("})";
  }
  return R"({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "m", "digest": {"sha256": ")" +
         sentry::crypto::sha256_hex(raw) +
         R"("}}], "predicateType": "https://model_signing/signature/v1.0", "predicate": {
  "resources": [)" + resources + R"(],
  "serialization": {"allow_symlinks": false, "hash_type": "sha256", "method": "shards",
                    "shard_size": )" + shard_size + "}}}";
}

TEST(Shards, StatementAsTheReferenceWritesIt) {
  const auto st = sentry::parse_statement(
      shards_statement("1000.0", 1000, {{"a.bin", 2500}, {"b", 1000}}), "s");
  EXPECT_EQ(st.method, "shards");
  EXPECT_EQ(st.shard_size, 1000u);
  ASSERT_EQ(st.shards.size(), 4u);
  EXPECT_EQ(st.shards[2].path, "a.bin");
  EXPECT_EQ(st.shards[2].start, 2000u);
  EXPECT_EQ(st.shards[2].end, 2500u);
  EXPECT_EQ(hex(st.shards[2].digest), sentry::crypto::sha256_hex("a.bin:2000:2500"));
  EXPECT_EQ(st.shards[3].path, "b");
  EXPECT_EQ(st.resources[0].algorithm, "sha256-sharded-1000");
  // Eleven shards: the reference's numeric order (a:900:1000 before a:1000:1050) is not
  // code-point order; an integer shard_size, and paths holding ':', are read too.
  const auto eleven = sentry::parse_statement(shards_statement("100", 100, {{"a", 1050}}), "s");
  EXPECT_EQ(eleven.shards.back().start, 1000u);
  EXPECT_EQ(sentry::parse_statement(shards_statement("7", 7, {{"x:1:2", 8}}), "s").shards[1].path,
            "x:1:2");
  // A single-file model's file is '.'.
  EXPECT_EQ(sentry::parse_statement(shards_statement("7", 7, {{".", 8}}), "s").shards[0].path, ".");
}

TEST(Shards, Refusals) {
  using Edit = std::function<void(std::vector<std::string>&)>;
  const std::vector<ShardFile> files = {{"a.bin", 2500}, {"b", 1000}};
  struct Case {
    const char* what;
    std::string statement;
    const char* message;
  };
  auto edited = [&](const Edit& edit) { return shards_statement("1000.0", 1000, files, edit); };
  const Case cases[] = {
      {"size zero", shards_statement("0", 1000, files), "shard_size: must be a positive integer, got 0"},
      {"size fraction", shards_statement("999.5", 1000, files), "shard_size: must be a positive"},
      {"size negative", shards_statement("-1000", 1000, files), "shard_size: must be a positive"},
      {"size 2^63", shards_statement("9223372036854775808", 1000, files), "shard_size: must be"},
      {"size float 2^63", shards_statement("9.3e18", 1000, files), "shard_size: must be"},
      {"size bool", shards_statement("true", 1000, files), "got True"},
      {"size other", shards_statement("999.0", 1000, files),
       "resources[0].algorithm: unknown algorithm 'sha256-sharded-1000'"},  // as the Python reader said
      {"name", edited([](auto& n) { n[0] = "a.bin:0"; }), "resources[0].name: 'a.bin:0' is not PATH:START:END"},
      {"name sign", edited([](auto& n) { n[0] = "a.bin:+0:1000"; }), "is not PATH:START:END"},
      {"leading zero", edited([](auto& n) { n[1] = "a.bin:01000:2000"; }), "is not PATH:START:END"},
      {"beyond 64 bits", edited([](auto& n) { n[2] = "a.bin:2000:99999999999999999999"; }),
       "is not PATH:START:END"},
      {"gap", edited([](auto& n) { n.erase(n.begin() + 1); }),
       "predicate.resources: the shards of 'a.bin' do not cut it into consecutive 1000-byte "
       "pieces (shard 2000:2500)"},
      {"short middle", edited([](auto& n) { n[1] = "a.bin:1000:1999"; }), "do not cut it"},
      {"long last", edited([](auto& n) { n[2] = "a.bin:2000:3001"; }), "do not cut it"},
      {"empty last", edited([](auto& n) { n[2] = "a.bin:2000:2000"; }), "do not cut it"},
      {"not from 0", edited([](auto& n) { n[3] = "b:1000:2000"; }), "do not cut it"},
      {"order", edited([](auto& n) { std::swap(n[0], n[1]); }), "predicate.resources: not sorted"},
      {"duplicate", edited([](auto& n) { n[1] = n[0]; }), "duplicate resource 'a.bin:0:1000'"},
      {"path", edited([](auto& n) { n[3] = "../b:0:1000"; }), "has an empty, '.' or '..' component"},
      {"dot among files", edited([](auto& n) { n.back() = ".:0:1000"; std::rotate(n.rbegin(), n.rbegin() + 1, n.rend()); }),
       "'.' (a single-file model) among other files"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string m = format_error([&] { sentry::parse_statement(c.statement, "s"); });
    EXPECT_NE(m.find(c.message), std::string::npos) << m;
  }
  // Sentry's tensor listing has no place in a shards statement.
  std::string with_tensors = shards_statement("1000.0", 1000, files);
  with_tensors.insert(with_tensors.size() - 2, R"(, "tensors": {"hash_type": "blake3", "entries": []})");
  EXPECT_NE(format_error([&] { sentry::parse_statement(with_tensors, "s"); })
                .find("predicate.tensors: not used with method 'shards'"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// every truncation and every bit flip of a real bundle

TEST(Fuzz, EveryTruncationOfABundleIsAnError) {
  const std::string data = read_file(kVectors + "v1.1.1-key/model.sig");
  const Trust trust = key_trust("key-p256.pub");
  for (std::size_t n = 0; n < data.size(); ++n) {
    EXPECT_THROW(sentry::open_bundle_data(std::string_view(data).substr(0, n), "t", trust),
                 FormatError)
        << n;
  }
  EXPECT_NO_THROW(sentry::open_bundle_data(data, "t", trust));
}

TEST(Fuzz, EveryTruncationOfAStatementIsAnError) {
  const std::string statement = tensor_statement();
  for (std::size_t n = 0; n < statement.size(); ++n) {
    EXPECT_THROW(sentry::parse_statement(std::string_view(statement).substr(0, n), "s"), FormatError)
        << n;
  }
}

TEST(Fuzz, EveryBitFlipIsAnErrorOrTheSignedStatement) {
  const Signer signer;
  const std::string data = signer.sign(tensor_statement());
  const Trust trust = signer.trust();
  const auto want = sentry::open_bundle_data(data, "t", trust).statement;
  std::size_t accepted = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    for (int bit : {0, 5, 7}) {
      std::string flipped = data;
      flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
      try {
        const auto got = sentry::open_bundle_data(flipped, "t", trust).statement;
        ++accepted;  // e.g. the key hint, which names the key but is not signed
        ASSERT_EQ(got.tensors.size(), want.tensors.size());
        for (std::size_t k = 0; k < got.tensors.size(); ++k) {
          EXPECT_EQ(got.tensors[k].name, want.tensors[k].name);
          EXPECT_EQ(got.tensors[k].digest, want.tensors[k].digest);
        }
      } catch (const FormatError&) {
      } catch (const VerificationError&) {
      }
    }
  }
  EXPECT_LT(accepted, 3 * 64u);  // only flips inside the 64 hint characters can pass
}

// ---------------------------------------------------------------------------------------------
// model_signing v0.2.0's PAE

TEST(V02, PaeIsPythonsBytesRepr) {
  const std::string prefix = "DSSEV1 28 application/vnd.in-toto+json ";
  EXPECT_EQ(sentry::v02_pae("it's"), prefix + "4 b\"it's\"");
  EXPECT_EQ(sentry::v02_pae("both ' and \""), prefix + "12 b'both \\' and \"'");
  EXPECT_EQ(sentry::v02_pae(std::string("a\\\t\r\n\0\x7f\xff", 8)),
            prefix + "8 b'a\\\\\\t\\r\\n\\x00\\x7f\\xff'");
  EXPECT_EQ(sentry::v02_pae(""), prefix + "0 b''");
}


// ---------------------------------------------------------------------------------------------
// background tasks (csrc/bundle/background.h)

TEST(Background, ResultsAndErrorsComeBack) {
  for (int threads : {3, 0}) {
    sentry::set_background_threads(threads);
    sentry::Task<int> six([] { return 6; });
    sentry::Task<int> bad([]() -> int { throw FormatError("x.sig: bad"); });
    EXPECT_EQ(six.get(), 6);
    EXPECT_THROW(bad.get(), FormatError);
  }
  sentry::set_background_threads(3);
}

TEST(Background, WorkRunsBesideTheCallerOrOnItWithNoThreads) {
  const auto caller = std::this_thread::get_id();
  sentry::set_background_threads(3);
  std::atomic<bool> started{false};
  sentry::Task<std::thread::id> where([&] {
    started = true;
    return std::this_thread::get_id();
  });
  // A worker takes it up while this thread waits (get() would otherwise run it here).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!started && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  EXPECT_NE(where.get(), caller);
  sentry::set_background_threads(0);
  sentry::Task<std::thread::id> here([] { return std::this_thread::get_id(); });
  EXPECT_EQ(here.get(), caller);
  EXPECT_EQ(sentry::background_threads(), 0);
  sentry::set_background_threads(3);
}

TEST(Background, TasksOfTasksNeverWaitForAThread) {
  // One worker, busy with a task that waits for another: the waiter runs the inner one itself.
  sentry::set_background_threads(1);
  std::atomic<bool> started{false};
  sentry::Task<int> outer([&] {
    started = true;
    sentry::Task<int> inner([] { return 20; });
    sentry::Task<int> inner2([] { return 22; });
    return inner.get() + inner2.get();
  });
  while (!started) std::this_thread::yield();  // the only worker is the one running `outer`
  EXPECT_EQ(outer.get(), 42);
  sentry::set_background_threads(3);
}

TEST(Background, AnAbandonedTaskIsWaitedForOrCancelled) {
  std::atomic<int> runs{0};
  {
    sentry::Task<int> never_asked([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return ++runs;
    });
  }  // its destructor returned: the work either ran to its end or will never run
  const int after = runs.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(runs.load(), after);
  EXPECT_LE(after, 1);
}

TEST(Background, AForkedChildGetsThreadsOfItsOwn) {
  // The parent's workers are not in the child: it must make its own, not wait on theirs.
  sentry::set_background_threads(3);
  sentry::Task<int> warm([] { return 1; });
  ASSERT_EQ(warm.get(), 1);
  const Signer signer;
  const std::string data = signer.sign(tensor_statement());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(20);  // a hang fails the test instead of stalling it
    std::atomic<bool> started{false};
    sentry::Task<int> t([&] {
      started = true;
      return 7;
    });
    while (!started) std::this_thread::yield();
    const auto s = sentry::open_bundle_data(data, "t.sig", signer.trust());
    _exit(t.get() == 7 && s.statement.tensors.size() == 2 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}


// A statement of `count` tensors t0000, t0001, ... (shape [i], digest i in hex) whose entry i
// can be rewritten by `edit` (its JSON text in, out): large enough to be read in two halves.
std::string large_statement(std::size_t count,
                            const std::function<std::string(std::size_t, std::string)>& edit) {
  std::string resources, entries, raw;
  for (std::size_t i = 0; i < count; ++i) {
    char name[16], digest[65];
    std::snprintf(name, sizeof name, "t%04zu", i);
    std::snprintf(digest, sizeof digest, "%064zx", i);
    for (std::size_t b = 0; b < 32; ++b) raw += static_cast<char>(std::stoi(std::string(digest + 2 * b, 2), nullptr, 16));
    resources += std::string(i ? ", " : "") + R"({"algorithm": "blake3", "digest": ")" + digest +
                 R"(", "name": ")" + name + R"("})";
    const std::string entry = R"({"digest": ")" + std::string(digest) +
                              R"(", "dtype": "F32", "name": ")" + name + R"(", "shape": [)" +
                              std::to_string(i) + "]}";
    entries += std::string(i ? ",\n" : "") + edit(i, entry);
  }
  return R"({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "m", "digest": {"sha256": ")" +
         sentry::crypto::sha256_hex(raw) +
         R"("}}], "predicateType": "https://model_signing/signature/v1.0", "predicate": {"resources": [)" +
         resources +
         R"(], "serialization": {"allow_symlinks": false, "hash_type": "blake3", "method": "tensors"},
         "tensors": {"hash_type": "blake3", "entries": [)" + entries + "]}}}";
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const std::size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(Background, ALargeStatementReadsTheSameOnAnyNumberOfThreads) {
  const auto unchanged = [](std::size_t, std::string entry) { return entry; };
  const std::string statement = large_statement(1000, unchanged);
  ASSERT_GT(statement.size(), std::size_t(64) << 10);  // past the concurrent paths' thresholds
  for (int threads : {3, 0, 1}) {
    sentry::set_background_threads(threads);
    const sentry::Statement st = sentry::parse_statement(statement, "m.sig");
    ASSERT_EQ(st.tensors.size(), 1000u);
    for (std::size_t i = 0; i < 1000; ++i) {
      char name[16];
      std::snprintf(name, sizeof name, "t%04zu", i);
      ASSERT_EQ(st.tensors[i].name, name);
      ASSERT_EQ(st.tensors[i].shape, std::vector<std::int64_t>{static_cast<std::int64_t>(i)});
      ASSERT_EQ(st.tensors[i].digest[31], static_cast<std::uint8_t>(i & 0xFF));
      ASSERT_EQ(st.resources[i].name, name);
    }
  }
  sentry::set_background_threads(3);
}

TEST(Background, ALargeStatementReportsTheErrorAReadingInOrderMeetsFirst) {
  // Errors in both halves of the entries: the first half's.
  const auto two_bad_dtypes = [](std::size_t i, std::string entry) {
    return i == 100 || i == 900 ? replaced(entry, "\"F32\"", "\"F31\"") : entry;
  };
  // A duplicate key late in the document and a bad entry early: the duplicate key, as when
  // duplicates were looked for before any field was read.
  const auto late_duplicate = [](std::size_t i, std::string entry) {
    if (i == 10) return replaced(entry, "\"F32\"", "\"F31\"");
    if (i == 990) return replaced(entry, "\"dtype\": \"F32\"", "\"dtype\": \"F32\", \"dtype\": \"F32\"");
    return entry;
  };
  for (int threads : {3, 0}) {
    sentry::set_background_threads(threads);
    const std::string first = format_error([&] {
      sentry::parse_statement(large_statement(1000, two_bad_dtypes), "m.sig");
    });
    EXPECT_EQ(first, "m.sig: predicate.tensors.entries[100].dtype: unknown safetensors dtype 'F31'");
    const std::string duplicate = format_error([&] {
      sentry::parse_statement(large_statement(1000, late_duplicate), "m.sig");
    });
    EXPECT_EQ(duplicate, "m.sig: predicate.tensors.entries[990]: duplicate key 'dtype' in a JSON object");
  }
  sentry::set_background_threads(3);
}

TEST(Background, ConcurrentOpensNeverMixTheirStatements) {
  // One thread opens a signed large statement again and again while two open an unsigned one
  // of other content: a waiting thread must not run the other call's parse over the
  // document it still reads (it did once: the signed bundle failed, quoting the other one).
  const auto unchanged = [](std::size_t, std::string entry) { return entry; };
  const Signer signer, attacker;
  const std::string good = signer.sign(large_statement(1000, unchanged));
  const std::string evil = attacker.sign(large_statement(1500, [](std::size_t, std::string entry) {
    return replaced(entry, "\"digest\": \"0", "\"digest\": \"f");
  }));
  for (int threads : {1, 3}) {
    sentry::set_background_threads(threads);
    const sentry::Statement want =
        sentry::open_bundle_data(good, "good.sig", signer.trust()).statement;
    std::atomic<bool> stop{false};
    std::vector<std::thread> others;
    for (int k = 0; k < 2; ++k) {
      others.emplace_back([&] {
        while (!stop) {
          EXPECT_THROW(sentry::open_bundle_data(evil, "evil.sig", signer.trust()),
                       VerificationError);
        }
      });
    }
    int failures = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (std::chrono::steady_clock::now() < deadline && failures < 3) {
      try {
        const sentry::Statement st =
            sentry::open_bundle_data(good, "good.sig", signer.trust()).statement;
        bool same = st.tensors.size() == want.tensors.size();
        for (std::size_t i = 0; same && i < st.tensors.size(); ++i) {
          same = st.tensors[i].name == want.tensors[i].name &&
                 st.tensors[i].digest == want.tensors[i].digest;
        }
        if (!same) ++failures;
        EXPECT_TRUE(same) << "the signed statement was read with another's entries";
      } catch (const std::exception& e) {
        ++failures;
        ADD_FAILURE() << "the signed bundle failed: " << std::string(e.what()).substr(0, 300);
      }
    }
    stop = true;
    for (std::thread& t : others) t.join();
  }
  sentry::set_background_threads(3);
}

}  // namespace
