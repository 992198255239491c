// The test vector files of tests/vectors (copied into the repository; provenance and licences in
// tests/vectors/README.md) and checked readers for them. The JSON files are read without a JSON
// library (their layout is fixed), so every step is checked: a missing, truncated or malformed
// file is a GoogleTest failure that names the file, never an exception or a crash.
#pragma once
#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace sentry {
namespace test {

// $SENTRY_VECTORS_DIR when set (a binary built on one machine and run on another, the GPU one,
// is pointed at that machine's checkout), else tests/vectors of the source tree.
inline std::string vectors_dir() {
  const char* env = std::getenv("SENTRY_VECTORS_DIR");
  if (env != nullptr && *env != 0) return env;
  return std::string(SENTRY_SOURCE_DIR) + "/tests/vectors";
}

inline std::string vector_path(const std::string& name) { return vectors_dir() + "/" + name; }

// The whole file at `path` into *out.
inline ::testing::AssertionResult read_vector_file(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    return ::testing::AssertionFailure()
           << "cannot open test vector file " << path << " (see tests/vectors/README.md)";
  }
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return ::testing::AssertionFailure() << "cannot read test vector file " << path;
  *out = ss.str();
  return ::testing::AssertionSuccess();
}

// Hex text to bytes; false on an odd length or a character that is not a hex digit.
inline bool unhex(const std::string& h, std::vector<uint8_t>* out) {
  if (h.size() % 2 != 0) return false;
  out->assign(h.size() / 2, 0);
  for (size_t i = 0; i < h.size(); ++i) {
    const int c = std::tolower(static_cast<unsigned char>(h[i]));
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else {
      return false;
    }
    (*out)[i / 2] = uint8_t((*out)[i / 2] << 4 | v);
  }
  return true;
}

// The value of the first `"name": ` at or after *pos, when it is a string ("..." without
// escapes) or an unsigned integer, as text; *pos moves past it. False when there is none.
inline bool next_field(const std::string& json, const std::string& name, size_t* pos,
                       std::string* value) {
  const std::string tag = "\"" + name + "\":";
  size_t at = json.find(tag, *pos);
  if (at == std::string::npos) return false;
  at += tag.size();
  while (at < json.size() && json[at] == ' ') ++at;
  if (at < json.size() && json[at] == '"') {
    const size_t end = json.find('"', at + 1);
    if (end == std::string::npos) return false;
    *value = json.substr(at + 1, end - at - 1);
    *pos = end + 1;
    return true;
  }
  size_t end = at;
  while (end < json.size() && end - at < 18 && std::isdigit(static_cast<unsigned char>(json[end])))
    ++end;
  if (end == at) return false;
  *value = json.substr(at, end - at);
  *pos = end;
  return true;
}

// The unsigned integer of `"name": N` at or after *pos.
inline bool next_number(const std::string& json, const std::string& name, size_t* pos,
                        size_t* value) {
  std::string text;
  if (!next_field(json, name, pos, &text) || text.empty() ||
      !std::isdigit(static_cast<unsigned char>(text[0]))) {
    return false;
  }
  *value = std::strtoull(text.c_str(), nullptr, 10);
  return true;
}

}  // namespace test
}  // namespace sentry
