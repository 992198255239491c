// Strict JSON over simdjson's DOM, for untrusted documents: the whole document is validated
// (UTF-8, grammar, nothing after it), duplicate keys are refused anywhere in it, and every
// failure is a sentry::FormatError of one line naming the file (`source`) and the field, with
// the field written as Sentry's Python layer writes it: predicate.resources[3].name.
#pragma once

#include <simdjson.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "../include/sentry/bundle.h"

namespace sentry::json {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

// Where a value sits in the document, e.g. predicate.resources[3].name. Built on the stack
// from its parent (which must outlive it) and formatted only when an error is raised.
class Field {
 public:
  // The document itself, called `name` in messages ("statement", "bundle").
  static Field root(std::string_view name) { return Field(nullptr, name, 0, kRoot); }
  Field key(std::string_view k) const& { return Field(this, k, 0, kKey); }
  Field index(std::size_t i) const& { return Field(this, {}, i, kIndex); }
  // A child keeps a pointer to its parent: never make one of a temporary.
  Field key(std::string_view k) const&& = delete;
  Field index(std::size_t i) const&& = delete;
  std::string str() const;

 private:
  enum Kind { kRoot, kKey, kIndex };
  Field(const Field* parent, std::string_view key, std::size_t index, Kind kind)
      : parent_(parent), key_(key), index_(index), kind_(kind) {}
  void append(std::string& out) const;
  const Field* parent_;
  std::string_view key_;
  std::size_t index_;
  Kind kind_;
};

// Python's repr() of a string (the form Sentry's messages quote values in), shortened when long.
std::string repr(std::string_view text);
// The value as Python's repr() would show it once loaded (strings quoted, true as True, ...).
std::string repr(element value);
// Python's name of the value's type once loaded: dict, list, str, int, float, bool, NoneType.
const char* type_name(element value);

// Checks values of one document, naming `source` in every error.
class Reader {
 public:
  explicit Reader(const std::string& source) : source_(source) {}
  const std::string& source() const { return source_; }

  // Parses `data` strictly; `what` names the document in messages ("statement", "bundle JSON").
  // The parser owns the result; it stays valid until the parser parses again.
  element parse(simdjson::dom::parser& parser, std::string_view data, std::string_view what) const;
  // parse() in two steps, for a caller that looks for duplicate keys on another thread while it
  // reads the document: every error but a duplicate key, then the duplicate keys.
  element parse_allowing_duplicates(simdjson::dom::parser& parser, std::string_view data,
                                    std::string_view what) const;
  void refuse_duplicate_keys(element root, std::string_view what) const;

  [[noreturn]] void fail(const Field& field, std::string_view problem) const;
  [[noreturn]] void fail(std::string_view problem) const;

  object as_object(element value, const Field& field) const;
  array as_array(element value, const Field& field) const;
  std::string_view as_text(element value, const Field& field) const;
  bool as_bool(element value, const Field& field) const;
  // 64 lower-case hex characters, as the 32 bytes they spell.
  Digest as_digest(element value, const Field& field) const;
  // Standard, padded, canonical base64 only.
  std::string as_base64(element value, const Field& field) const;
  // A canonical relative POSIX path (no empty, '.' or '..' component, no backslash or NUL).
  std::string_view as_relative_path(element value, const Field& field) const;
  void check_relative_path(std::string_view name, const Field& field) const;

 private:
  const std::string& source_;
};

// The parser to read a document of `size` bytes with: for documents up to kReusedParserBytes, one
// kept per thread and call site (`Site`, a tag type of the caller), whose buffers stay allocated
// between documents (allocating and touching them is most of the cost of parsing a statement of
// a few hundred kB); for larger ones a fresh one, freed with this object. Nothing the parser
// returned may outlive the next parse at the same call site on the thread.
inline constexpr std::size_t kReusedParserBytes = std::size_t(4) << 20;
template <class Site>
class SiteParser {
 public:
  // A thread whose reused parser still holds a live document further up its stack (it waits
  // for a background task and runs another job meanwhile) gets a fresh one.
  explicit SiteParser(std::size_t size)
      : parser_(size <= kReusedParserBytes && !busy() ? (busy() = true, reused()) : fresh_),
        owns_reused_(&parser_ != &fresh_) {}
  ~SiteParser() {
    if (owns_reused_) busy() = false;
  }
  SiteParser(const SiteParser&) = delete;
  SiteParser& operator=(const SiteParser&) = delete;
  simdjson::dom::parser& get() { return parser_; }

 private:
  static simdjson::dom::parser& reused() {
    thread_local simdjson::dom::parser parser;
    return parser;
  }
  static bool& busy() {
    thread_local bool in_use = false;
    return in_use;
  }
  simdjson::dom::parser fresh_;  // allocates nothing until it parses
  simdjson::dom::parser& parser_;
  bool owns_reused_;
};

// A JSON integer that Python would read as a non-negative int, if it is one.
std::optional<std::uint64_t> non_negative_integer(element value);

// One pass over an object's members into slots by key: `keys` lists the known keys, `required`
// how many of them (the first ones) must be present. Unknown keys are refused unless `open`.
// Missing keys are reported before unknown ones, as Sentry's Python layer did.
template <std::size_t N>
struct Members {
  std::array<std::optional<element>, N> values{};
  const std::optional<element>& operator[](std::size_t i) const { return values[i]; }
};

void refuse_members(const Reader& reader, object obj, const std::string_view* keys,
                    std::size_t count, std::size_t required, const Field& field,
                    const std::optional<element>* found, bool open);

template <std::size_t N>
Members<N> members(const Reader& reader, object obj, const std::array<std::string_view, N>& keys,
                   std::size_t required, const Field& field, bool open = false) {
  Members<N> out;
  bool unknown = false;
  for (auto member : obj) {
    std::size_t i = 0;
    // Length and first byte first: most keys differ in one of them (a memcmp call per pair
    // was 4% of a statement's parse).
    const std::string_view key = member.key;
    while (i < N && !(keys[i].size() == key.size() && !key.empty() && keys[i][0] == key[0] &&
                      keys[i] == key)) {
      ++i;
    }
    if (i < N) {
      out.values[i] = member.value;
    } else {
      unknown = true;
    }
  }
  bool complete = true;
  for (std::size_t i = 0; i < required; ++i) complete = complete && out.values[i].has_value();
  if (!complete || (unknown && !open)) {
    refuse_members(reader, obj, keys.data(), N, required, field, out.values.data(), open);
  }
  return out;
}

}  // namespace sentry::json
