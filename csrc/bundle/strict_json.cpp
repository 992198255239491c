// Strict JSON reading (strict_json.h). simdjson's DOM parser validates the whole document (UTF-8,
// grammar, unescaped control characters, numbers, depth) but keeps duplicate keys and reports a
// bad string or number without saying where: duplicates are found by one walk over the parsed
// document, and a document the DOM parser refuses is walked again with the On-Demand API, which
// meets the bad value at its own field, so that the message can name it.
#include "strict_json.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace sentry::json {

namespace ondemand = simdjson::ondemand;

// ---------------------------------------------------------------------------------------------
// fields and values in messages

void Field::append(std::string& out) const {
  if (kind_ == kRoot) return;
  if (parent_) parent_->append(out);
  if (kind_ == kIndex) {
    out += '[';
    out += std::to_string(index_);
    out += ']';
  } else {
    if (!out.empty()) out += '.';
    out += key_;
  }
}

std::string Field::str() const {
  if (kind_ == kRoot) return std::string(key_);
  std::string out;
  append(out);
  return out;
}

namespace {

constexpr std::size_t kReprLimit = 200;  // characters of a value shown in a message

// Length of the UTF-8 sequence starting at s[i] (the text is valid UTF-8: the parser checked).
std::size_t utf8_length(unsigned char c) {
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

}  // namespace

std::string repr(std::string_view text) {
  const bool single = text.find('\'') == std::string_view::npos ||
                      text.find('"') != std::string_view::npos;
  const char quote = single ? '\'' : '"';
  std::string out(1, quote);
  static const char* kHex = "0123456789abcdef";
  for (std::size_t i = 0; i < text.size();) {
    if (out.size() > kReprLimit) {
      out += "...";
      break;
    }
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {  // shown as it is, as Python shows printable non-ASCII text
      const std::size_t n = std::min(utf8_length(c), text.size() - i);
      out.append(text.substr(i, n));
      i += n;
      continue;
    }
    if (c == '\\' || c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
    ++i;
  }
  out += quote;
  return out;
}

const char* type_name(element value) {
  switch (value.type()) {
    case simdjson::dom::element_type::OBJECT: return "dict";
    case simdjson::dom::element_type::ARRAY: return "list";
    case simdjson::dom::element_type::STRING: return "str";
    case simdjson::dom::element_type::INT64:
    case simdjson::dom::element_type::UINT64: return "int";
    case simdjson::dom::element_type::DOUBLE: return "float";
    case simdjson::dom::element_type::BOOL: return "bool";
    case simdjson::dom::element_type::NULL_VALUE: return "NoneType";
  }
  return "unknown";
}

std::string repr(element value) {
  switch (value.type()) {
    case simdjson::dom::element_type::STRING: return repr(value.get_string().value_unsafe());
    case simdjson::dom::element_type::BOOL: return value.get_bool().value_unsafe() ? "True" : "False";
    case simdjson::dom::element_type::NULL_VALUE: return "None";
    default: {
      std::string text = simdjson::minify(value);
      if (text.size() > kReprLimit) text = text.substr(0, kReprLimit) + "...";
      return text;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// parsing

namespace {

// Duplicate keys anywhere in the document: the Python reader refused them, and two readers that
// pick different duplicates would disagree about what was signed.
void refuse_duplicate_keys(const Reader& reader, element value, const Field& field) {
  if (value.type() == simdjson::dom::element_type::ARRAY) {
    std::size_t i = 0;
    const array items = value.get_array().value_unsafe();  // a copy: the result is a temporary
    for (element item : items) {
      const Field f = field.index(i++);
      refuse_duplicate_keys(reader, item, f);
    }
    return;
  }
  if (value.type() != simdjson::dom::element_type::OBJECT) return;
  const object obj = value.get_object().value_unsafe();
  constexpr std::size_t kSmall = 12;  // compare pairs below this many keys, sort above
  std::string_view small[kSmall];
  std::size_t n = 0;
  std::vector<std::string_view> many;
  for (auto member : obj) {
    if (n < kSmall) {
      const std::string_view key = member.key;
      for (std::size_t j = 0; j < n; ++j) {
        // Length and first byte first: a memcmp call per pair cost more than the rest.
        if (small[j].size() == key.size() && (key.empty() || small[j][0] == key[0]) &&
            small[j] == key) {
          reader.fail(field, "duplicate key " + repr(member.key) + " in a JSON object");
        }
      }
      small[n++] = member.key;
    } else {
      if (many.empty()) many.assign(small, small + kSmall);
      many.push_back(member.key);
    }
    const Field f = field.key(member.key);
    refuse_duplicate_keys(reader, member.value, f);
  }
  if (!many.empty()) {
    std::sort(many.begin(), many.end());
    auto dup = std::adjacent_find(many.begin(), many.end());
    if (dup != many.end()) reader.fail(field, "duplicate key " + repr(*dup) + " in a JSON object");
  }
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

// Walks a document the DOM parser refused and fails at the first value On-Demand cannot read,
// naming its field. Returns normally when it finds nothing (the caller then reports the DOM
// parser's own message).
class Diagnosis {
 public:
  explicit Diagnosis(const Reader& reader) : reader_(reader) {}

  void walk(ondemand::value value, const Field& field, int depth) {
    if (depth > 1024) return;
    ondemand::json_type type;
    if (value.type().get(type) != simdjson::SUCCESS) {
      const std::string_view token = value.raw_json_token();
      for (std::string_view word : {"NaN", "Infinity", "-Infinity"}) {
        if (starts_with(token, word)) {
          reader_.fail(field, std::string(word) + " is not valid JSON");
        }
      }
      return;
    }
    switch (type) {
      case ondemand::json_type::object: {
        ondemand::object obj;
        if (value.get_object().get(obj) != simdjson::SUCCESS) return;
        for (auto member : obj) {
          ondemand::field f;
          if (std::move(member).get(f) != simdjson::SUCCESS) return;
          std::string_view key;
          if (f.unescaped_key().get(key) != simdjson::SUCCESS) {
            reader_.fail(field, "a key is not a valid JSON string (a bad escape or a lone "
                                "surrogate: not valid Unicode)");
          }
          const Field child = field.key(key);
          walk(f.value(), child, depth + 1);
        }
        return;
      }
      case ondemand::json_type::array: {
        ondemand::array arr;
        if (value.get_array().get(arr) != simdjson::SUCCESS) return;
        std::size_t i = 0;
        for (auto item : arr) {
          ondemand::value v;
          if (std::move(item).get(v) != simdjson::SUCCESS) return;
          const Field child = field.index(i++);
          walk(v, child, depth + 1);
        }
        return;
      }
      case ondemand::json_type::string: {
        std::string_view text;
        if (value.get_string().get(text) != simdjson::SUCCESS) {
          reader_.fail(field, "invalid string: a bad escape or a lone surrogate (not valid "
                              "Unicode)");
        }
        return;
      }
      case ondemand::json_type::number: {
        ondemand::number number;
        if (value.get_number().get(number) != simdjson::SUCCESS) {
          const std::string_view token = value.raw_json_token();
          reader_.fail(field, "invalid number, or one out of range: " + repr(token.substr(0, 40)));
        }
        return;
      }
      default:
        return;
    }
  }

 private:
  const Reader& reader_;
};

}  // namespace

element Reader::parse(simdjson::dom::parser& parser, std::string_view data,
                      std::string_view what) const {
  const element root = parse_allowing_duplicates(parser, data, what);
  refuse_duplicate_keys(root, what);
  return root;
}

void Reader::refuse_duplicate_keys(element root, std::string_view what) const {
  json::refuse_duplicate_keys(*this, root, Field::root(what));
}

element Reader::parse_allowing_duplicates(simdjson::dom::parser& parser, std::string_view data,
                                          std::string_view what) const {
  element root;
  const simdjson::error_code error = parser.parse(data.data(), data.size()).get(root);
  if (error == simdjson::SUCCESS) return root;
  if (error == simdjson::UTF8_ERROR) fail(std::string(what) + " is not UTF-8");
  if (error == simdjson::STRING_ERROR || error == simdjson::NUMBER_ERROR ||
      error == simdjson::TAPE_ERROR ||
      error == simdjson::T_ATOM_ERROR || error == simdjson::F_ATOM_ERROR ||
      error == simdjson::N_ATOM_ERROR) {
    simdjson::padded_string padded(data);
    ondemand::parser od;
    ondemand::document doc;
    if (od.iterate(padded).get(doc) == simdjson::SUCCESS) {
      ondemand::value value;
      Diagnosis diagnosis(*this);
      if (doc.get_value().get(value) == simdjson::SUCCESS) {
        diagnosis.walk(value, Field::root(what), 0);
      }
    }
  }
  fail("malformed " + std::string(what) + ": " + simdjson::error_message(error));
}

// ---------------------------------------------------------------------------------------------
// checks

void Reader::fail(const Field& field, std::string_view problem) const {
  std::string message = source_.empty() ? "" : source_ + ": ";
  message += field.str();
  message += ": ";
  message += problem;
  throw FormatError(message);
}

void Reader::fail(std::string_view problem) const {
  std::string message = source_.empty() ? "" : source_ + ": ";
  message += problem;
  throw FormatError(message);
}

object Reader::as_object(element value, const Field& field) const {
  object out;
  if (value.get_object().get(out) != simdjson::SUCCESS) {
    fail(field, std::string("must be a JSON object, got ") + type_name(value));
  }
  return out;
}

array Reader::as_array(element value, const Field& field) const {
  array out;
  if (value.get_array().get(out) != simdjson::SUCCESS) {
    fail(field, std::string("must be a JSON array, got ") + type_name(value));
  }
  return out;
}

std::string_view Reader::as_text(element value, const Field& field) const {
  std::string_view out;
  if (value.get_string().get(out) != simdjson::SUCCESS) {
    fail(field, std::string("must be a string, got ") + type_name(value));
  }
  return out;
}

bool Reader::as_bool(element value, const Field& field) const {
  bool out = false;
  if (value.get_bool().get(out) != simdjson::SUCCESS) {
    fail(field, "must be true or false, got " + repr(value));
  }
  return out;
}

namespace {

// Value of a lower-case hex digit, 0xFF for anything else (upper case too: digests are written
// in lower case only). A table: a statement holds thousands of digests.
struct HexTable {
  std::uint8_t value[256];
  constexpr HexTable() : value() {
    for (int i = 0; i < 256; ++i) value[i] = 0xFF;
    for (int i = 0; i < 10; ++i) value['0' + i] = static_cast<std::uint8_t>(i);
    for (int i = 0; i < 6; ++i) value['a' + i] = static_cast<std::uint8_t>(10 + i);
  }
};
constexpr HexTable kHex;

}  // namespace

Digest Reader::as_digest(element value, const Field& field) const {
  const std::string_view text = as_text(value, field);
  Digest out{};
  std::uint8_t bad = text.size() == 64 ? 0 : 0xFF;
  if (!bad) {
    const auto* in = reinterpret_cast<const unsigned char*>(text.data());
    for (std::size_t i = 0; i < 32; ++i) {
      const std::uint8_t hi = kHex.value[in[2 * i]], lo = kHex.value[in[2 * i + 1]];
      bad |= hi | lo;  // 0xFF has bits no digit has
      out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
  }
  if (bad & 0xF0) {
    fail(field, "must be 64 lower-case hex characters (a 32-byte digest), got " + repr(text));
  }
  return out;
}

namespace {

// 6-bit value of a base64 character, 64 for '=', 255 for anything else.
struct Base64Table {
  std::uint8_t value[256];
  constexpr Base64Table() : value() {
    for (int i = 0; i < 256; ++i) value[i] = 255;
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) value[static_cast<unsigned char>(alphabet[i])] = i;
    value[static_cast<unsigned char>('=')] = 64;
  }
};
constexpr Base64Table kBase64;

// For the unpadded blocks: each character's 6 bits already at their place in the three output
// bytes as a little-endian word stores them, so a block is four lookups ORed and one store;
// anything but the 64 alphabet characters sets bit 24 (a payload is hundreds of kB: this is
// about twice as fast as shifting and testing each value).
struct Base64Placed {
  std::uint32_t at[4][256];
  constexpr Base64Placed() : at() {
    for (int c = 0; c < 256; ++c) {
      const std::uint32_t v = kBase64.value[c];
      for (int k = 0; k < 4; ++k) at[k][c] = std::uint32_t(1) << 24;
      if (v >= 64) continue;
      // Bits of the block's 24-bit value: a<<18 | b<<12 | c<<6 | d, written big-endian.
      at[0][c] = v << 2;                                         // byte 0, high 6 bits
      at[1][c] = (v >> 4) | ((v & 15) << 12);                    // byte 0 low 2, byte 1 high 4
      at[2][c] = ((v >> 2) << 8) | ((v & 3) << 22);              // byte 1 low 4, byte 2 high 2
      at[3][c] = v << 16;                                        // byte 2, low 6 bits
    }
  }
};
constexpr Base64Placed kBase64Placed;
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kBase64Placed is laid out for it");

}  // namespace

std::string Reader::as_base64(element value, const Field& field) const {
  const std::string_view text = as_text(value, field);
  if (text.size() % 4 != 0) {
    fail(field, "invalid base64 (" + std::to_string(text.size()) +
                    " characters: not a multiple of 4; padding is required)");
  }
  const std::size_t padding = text.empty() ? 0
                              : text.size() >= 2 && text[text.size() - 2] == '=' ? 2
                              : text.back() == '=' ? 1 : 0;
  std::string out((text.size() / 4) * 3 - padding, '\0');
  const auto* in = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t blocks = text.size() / 4;
  std::uint32_t bad = 0;  // bit 24 set by '=' or a character outside the alphabet
  // Through a raw pointer: writes through std::string::operator[] keep the compiler from
  // keeping anything in registers across them (a payload is hundreds of kB).
  auto* dst = reinterpret_cast<unsigned char*>(out.data());
  // Every block but the last has no padding: four 6-bit values make three bytes, stored as a
  // 4-byte word whose last byte the next block overwrites (the last block has at least one).
  for (std::size_t b = 0; b + 1 < blocks; ++b, in += 4, dst += 3) {
    const std::uint32_t v = kBase64Placed.at[0][in[0]] | kBase64Placed.at[1][in[1]] |
                            kBase64Placed.at[2][in[2]] | kBase64Placed.at[3][in[3]];
    bad |= v;
    std::memcpy(dst, &v, 4);
  }
  std::size_t o = static_cast<std::size_t>(dst - reinterpret_cast<unsigned char*>(out.data()));
  if ((bad >> 24) != 0) {
    fail(field, "invalid base64 (a character outside the standard alphabet, or '=' before "
                "the end)");
  }
  if (blocks > 0) {
    const std::uint8_t a = kBase64.value[in[0]], c = kBase64.value[in[1]],
                       d = kBase64.value[in[2]], e = kBase64.value[in[3]];
    const bool alphabet_ok = a < 64 && c < 64 && (padding == 2 ? d == 64 : d < 64) &&
                             (padding >= 1 ? e == 64 : e < 64);
    if (!alphabet_ok) {
      fail(field, "invalid base64 (a character outside the standard alphabet, or '=' before "
                  "the end)");
    }
    const std::uint32_t v = std::uint32_t(a) << 18 | std::uint32_t(c) << 12 |
                            std::uint32_t(d & 63) << 6 | (e & 63);
    // Canonical: the bits that padding leaves over are zero (one encoding per byte string).
    const std::uint32_t spare = padding == 2 ? (v & 0xFFFF) : padding == 1 ? (v & 0xFF) : 0;
    if (spare != 0) fail(field, "invalid base64 (not in canonical padded form)");
    out[o++] = static_cast<char>(v >> 16);
    if (padding < 2) out[o++] = static_cast<char>(v >> 8);
    if (padding < 1) out[o++] = static_cast<char>(v);
  }
  return out;
}

void Reader::check_relative_path(std::string_view name, const Field& field) const {
  if (name.empty()) fail(field, "empty path");
  if (name.front() == '/') {
    fail(field, repr(name) + " is absolute; names are relative to the model directory");
  }
  if (name.find('\\') != std::string_view::npos) {
    fail(field, repr(name) + " contains a backslash; names are POSIX paths");
  }
  if (name.find('\0') != std::string_view::npos) {
    fail(field, repr(name) + " contains a NUL character");
  }
  std::size_t start = 0;
  while (true) {
    const std::size_t end = std::min(name.find('/', start), name.size());
    const std::string_view part = name.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      fail(field, repr(name) + " has an empty, '.' or '..' component");
    }
    if (end == name.size()) break;
    start = end + 1;
  }
}

std::string_view Reader::as_relative_path(element value, const Field& field) const {
  const std::string_view name = as_text(value, field);
  check_relative_path(name, field);
  return name;
}

std::optional<std::uint64_t> non_negative_integer(element value) {
  if (value.type() == simdjson::dom::element_type::UINT64) return value.get_uint64().value_unsafe();
  if (value.type() == simdjson::dom::element_type::INT64) {
    const std::int64_t v = value.get_int64().value_unsafe();
    if (v >= 0) return static_cast<std::uint64_t>(v);
  }
  return std::nullopt;
}

void refuse_members(const Reader& reader, object obj, const std::string_view* keys,
                    std::size_t count, std::size_t required, const Field& field,
                    const std::optional<element>* found, bool open) {
  std::string missing;
  for (std::size_t i = 0; i < required; ++i) {
    if (!found[i]) missing += (missing.empty() ? "" : ", ") + repr(keys[i]);
  }
  if (!missing.empty()) reader.fail(field, "missing " + missing);
  if (open) return;
  std::vector<std::string_view> unknown;
  for (auto member : obj) {
    if (std::find(keys, keys + count, member.key) == keys + count) unknown.push_back(member.key);
  }
  std::sort(unknown.begin(), unknown.end());
  std::string names;
  for (auto k : unknown) names += (names.empty() ? "" : ", ") + repr(k);
  reader.fail(field, "unknown field(s) " + names);
}

}  // namespace sentry::json
