// Opening a bundle: read it, check its signature with the caller's trust, and parse the
// statement (sentry/bundle.h). The statement is parsed on a background thread while the signature
// is checked (the two take about as long), and the parse's result or error is used only once the
// signature has verified: a payload that is not signed is read by the same strict parser as the
// bundle around it, and nothing of it gets out.
#include <pthread.h>

#include <chrono>
#include <list>
#include <mutex>

#include "background.h"
#include "strict_json.h"

namespace sentry {

struct TrustAccess {
  static const crypto::PublicKey& key(const Trust& t) { return *t.key_; }
  static const std::vector<std::string>& roots(const Trust& t) { return t.roots_der_; }
  static const std::string& payload_type(const Trust& t) { return t.payload_type_; }
  static const std::string& payload(const Trust& t) { return t.payload_; }
  static const std::string& memo_identity(const Trust& t) { return t.memo_identity_; }
};

Trust Trust::public_key(crypto::PublicKey key) {
  Trust t(Kind::kPublicKey);
  t.memo_identity_ = "key:" + std::to_string(static_cast<int>(key.curve())) + ":" + key.raw_xy();
  t.key_ = std::move(key);
  return t;
}

Trust Trust::certificate_roots(std::vector<std::string> roots_der) {
  Trust t(Kind::kCertificateRoots);
  t.memo_identity_ = "roots";
  for (const std::string& der : roots_der) {
    t.memo_identity_ += ":" + std::to_string(der.size()) + ":" + der;
  }
  t.roots_der_ = std::move(roots_der);
  return t;
}

Trust Trust::verified_keyless(std::string payload_type, std::string payload) {
  Trust t(Kind::kVerifiedKeyless);
  t.payload_type_ = std::move(payload_type);
  t.payload_ = std::move(payload);
  return t;
}

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// True when the payload is a JSON object whose predicateType is model_signing v0.2's. Says
// nothing about its validity (parse_statement checks that).
bool is_v02_statement(std::string_view payload) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(payload.data(), payload.size()).get(doc) != simdjson::SUCCESS) return false;
  std::string_view type;
  return doc["predicateType"].get_string().get(type) == simdjson::SUCCESS &&
         type == kV02PredicateType;
}

void check_signature(const Bundle& bundle, const crypto::PublicKey& key, const std::string& source) {
  if (key.verify(crypto::dsse_pae(bundle.payload_type, bundle.payload), bundle.signature)) return;
  // model_signing v0.2's key and certificate signers signed another message, with SHA-256 on
  // every curve; only its own statements are checked against that message.
  if (is_v02_statement(bundle.payload) &&
      key.verify(v02_pae(bundle.payload), bundle.signature, "SHA-256")) {
    return;
  }
  std::string other;
  if (!bundle.public_key_hint.empty() && bundle.public_key_hint != key.hint()) {
    other = " (the bundle names key " + bundle.public_key_hint + ", you gave " + key.hint() + ")";
  }
  throw VerificationError(source + ": the signature does not verify with this key" + other);
}

crypto::PublicKey certificate_key(const Bundle& bundle, const std::vector<std::string>& roots,
                                  const std::string& source) {
  if (bundle.certificate_chain.empty()) {
    throw VerificationError(source + ": the bundle carries no certificate chain");
  }
  if (!bundle.tlog_entries.empty()) {
    // A Fulcio certificate chains to the Fulcio CA for any identity: only the keyless checks
    // (identity, issuer, log) make it mean something.
    throw MethodError({{source + ": this is a Sigstore keyless signature (it has a "
                        "transparency-log entry); verify it with "},
                       {"identity", true}, {", "}, {"identity_provider", true}, {" and "},
                       {"trusted_root", true}, {" or "}, {"trust_config", true}});
  }
  try {
    return crypto::verify_certificate_chain(bundle.certificate_chain, roots);
  } catch (const crypto::ChainError& e) {
    throw VerificationError(source + ": " + e.what());
  } catch (const crypto::CryptoError& e) {
    throw FormatError(source + ": " + e.what());
  }
}

crypto::PublicKey keyless_key(const Bundle& bundle, const Trust& trust, const std::string& source) {
  if (bundle.certificate_chain.empty()) {
    throw MethodError({{source + ": the bundle carries no certificate: it was signed with a key, "
                        "not keyless; verify it with "},
                       {"public_key", true}});
  }
  if (TrustAccess::payload_type(trust) != bundle.payload_type ||
      TrustAccess::payload(trust) != bundle.payload) {
    throw VerificationError(source +
                            ": sigstore-python and Sentry read different payloads from the bundle");
  }
  try {
    return crypto::certificate_public_key(bundle.certificate_chain[0]);
  } catch (const crypto::CryptoError& e) {
    throw FormatError(source + ": " + e.what());
  }
}

}  // namespace

SignedStatement open_bundle_data(std::string_view data, const std::string& source,
                                 const Trust& trust) {
  auto t0 = Clock::now();
  Bundle bundle = parse_bundle(data, source);
  const double read_ms = ms_since(t0);
  t0 = Clock::now();
  double parse_ms = 0;
  Task<Statement> parsed([&] {
    const auto start = Clock::now();
    Statement statement = parse_statement(bundle.payload, source);
    parse_ms = ms_since(start);
    return statement;
  });
  std::optional<crypto::PublicKey> key;
  switch (trust.kind()) {
    case Trust::Kind::kPublicKey:
      key = TrustAccess::key(trust);
      check_signature(bundle, *key, source);
      break;
    case Trust::Kind::kCertificateRoots:
      key = certificate_key(bundle, TrustAccess::roots(trust), source);
      check_signature(bundle, *key, source);
      break;
    case Trust::Kind::kVerifiedKeyless:
      key = keyless_key(bundle, trust, source);
      break;
  }
  const double check_ms = ms_since(t0);
  Statement statement = parsed.get();
  return SignedStatement{std::move(bundle), std::move(statement), std::move(*key),
                         {{"read bundle", read_ms},
                          {"check signature", check_ms},
                          {"parse statement", parse_ms}}};
}

SignedStatement open_bundle(const std::string& path, const Trust& trust) {
  const auto t0 = Clock::now();
  const std::string data = read_bundle_file(path);
  const double read_ms = ms_since(t0);
  SignedStatement out = open_bundle_data(data, path, trust);
  out.timings_ms[0].second += read_ms;
  return out;
}

namespace {

struct MemoEntry {
  std::string data, trust;
  std::shared_ptr<const SignedStatement> opened;
};

std::mutex memo_mutex;
std::list<MemoEntry> memo;  // most recently used first
std::uint64_t memo_bytes = 0;

// Held across fork(), so that a child never inherits it locked by a thread it does not have.
void lock_memo() { memo_mutex.lock(); }
void unlock_memo() { memo_mutex.unlock(); }
const int memo_fork_handlers = pthread_atfork(lock_memo, unlock_memo, unlock_memo);

}  // namespace

OpenedBundle open_bundle_memoised(std::string_view data, const std::string& source,
                                  const Trust& trust) {
  const auto t0 = Clock::now();
  // Empty for a keyless trust: those bundles are never memoised.
  const std::string& identity = TrustAccess::memo_identity(trust);
  (void)memo_fork_handlers;
  if (!identity.empty()) {
    std::lock_guard<std::mutex> lock(memo_mutex);
    for (auto it = memo.begin(); it != memo.end(); ++it) {
      if (it->trust == identity && it->data == data) {
        memo.splice(memo.begin(), memo, it);
        return {it->opened, {{"memoised", ms_since(t0)}}};
      }
    }
  }
  auto opened = std::make_shared<const SignedStatement>(open_bundle_data(data, source, trust));
  OpenedBundle out{opened, opened->timings_ms};
  const std::uint64_t cost = data.size() + identity.size();
  if (!identity.empty() && cost <= kBundleMemoBytes / 4) {
    std::lock_guard<std::mutex> lock(memo_mutex);
    memo.push_front({std::string(data), identity, opened});
    memo_bytes += cost;
    while (memo_bytes > kBundleMemoBytes || memo.size() > 8) {
      memo_bytes -= memo.back().data.size() + memo.back().trust.size();
      memo.pop_back();
    }
  }
  return out;
}

void clear_bundle_memo() {
  std::lock_guard<std::mutex> lock(memo_mutex);
  memo.clear();
  memo_bytes = 0;
}

}  // namespace sentry
