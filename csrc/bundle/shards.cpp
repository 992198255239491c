// The reference tool's `shards` serialization (model_signing 1.1.1, _serialization/
// file_shard.py), read by parse_statement (statement.cpp).
//
// Each file of the model is cut into consecutive shards of shard_size bytes (the last one
// shorter; an empty file has none, so it is not a resource), and each shard is one resource
// named PATH:START:END (bytes [START, END)) with algorithm sha256-sharded-SHARD_SIZE and the
// SHA-256 of those bytes. The reference lists them in (path components, start, end) order.
// It writes shard_size through a protobuf Struct, so it comes out as a JSON float (1000000.0):
// an integral float is accepted. (model_signing 1.1.1's own verify then fails on its shard
// bundles: it passes that float to range(); only Sentry verifies them.)
#include <algorithm>
#include <unordered_map>

#include "statement.h"

namespace sentry::shards {

namespace {

constexpr double kTwoTo63 = 9223372036854775808.0;

// A decimal offset as the reference writes it (0 or no leading zero, no sign), if it is one
// and fits in 64 bits.
std::optional<std::uint64_t> offset(std::string_view digits) {
  if (digits.empty() || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    const std::uint64_t digit = std::uint64_t(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

}  // namespace

std::uint64_t read_size(const json::Reader& reader, json::element value, const json::Field& field) {
  std::optional<std::uint64_t> size = json::non_negative_integer(value);
  double d = 0;
  if (!size && value.get_double().get(d) == simdjson::SUCCESS &&
      value.type() == simdjson::dom::element_type::DOUBLE && d >= 0 && d < kTwoTo63 &&
      d == static_cast<double>(static_cast<std::uint64_t>(d))) {
    size = static_cast<std::uint64_t>(d);  // the reference's integral float
  }
  if (!size || *size == 0 || *size >= (std::uint64_t(1) << 63)) {
    reader.fail(field, "must be a positive integer, got " + json::repr(value));
  }
  return *size;
}

std::string algorithm(std::string_view hash_type, std::uint64_t size) {
  return std::string(hash_type) + "-sharded-" + std::to_string(size);
}

Name parse_name(const json::Reader& reader, std::string_view name, const json::Field& field) {
  const std::size_t last = name.rfind(':');
  const std::size_t middle = last == std::string_view::npos || last == 0
                                 ? std::string_view::npos
                                 : name.rfind(':', last - 1);
  std::optional<std::uint64_t> start, end;
  if (middle != std::string_view::npos) {
    start = offset(name.substr(middle + 1, last - middle - 1));
    end = offset(name.substr(last + 1));
  }
  if (!start || !end) reader.fail(field, json::repr(name) + " is not PATH:START:END");
  return Name{name.substr(0, middle), *start, *end};
}

bool less(const Name& a, const Name& b) {
  const int c = compare_components(a.path, b.path);
  if (c != 0) return c < 0;
  return a.start != b.start ? a.start < b.start : a.end < b.end;
}

void collect(const json::Reader& reader, const std::vector<Name>& names, const json::Field& field,
             Statement& st) {
  // Files in the order first listed, each with its shards.
  std::unordered_map<std::string_view, std::size_t> file_index;
  std::vector<std::vector<std::size_t>> by_file;  // indices into names / st.resources
  std::vector<std::string_view> paths;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto [it, added] = file_index.emplace(names[i].path, by_file.size());
    if (added) {
      by_file.emplace_back();
      paths.push_back(names[i].path);
    }
    by_file[it->second].push_back(i);
  }
  if (file_index.count(".") && paths.size() > 1) {
    reader.fail(field, "'.' (a single-file model) among other files");
  }
  const std::uint64_t size = st.shard_size;
  st.shards.reserve(names.size());
  for (std::size_t f = 0; f < by_file.size(); ++f) {
    std::vector<std::size_t>& shards = by_file[f];
    std::sort(shards.begin(), shards.end(), [&](std::size_t a, std::size_t b) {
      return names[a].start != names[b].start ? names[a].start < names[b].start
                                              : names[a].end < names[b].end;
    });
    for (std::size_t k = 0; k < shards.size(); ++k) {
      const Name& n = names[shards[k]];
      const bool last = k + 1 == shards.size();
      // From 0, in steps of shard_size, the last shard not empty (exactly the reference's cut).
      const bool cut = static_cast<unsigned __int128>(k) * size == n.start && n.end > n.start &&
                       n.end - n.start <= size && (last || n.end - n.start == size);
      if (!cut) {
        reader.fail(field, "the shards of " + json::repr(n.path) + " do not cut it into "
                           "consecutive " + std::to_string(size) + "-byte pieces (shard " +
                           std::to_string(n.start) + ":" + std::to_string(n.end) + ")");
      }
      st.shards.push_back(Shard{std::string(n.path), n.start, n.end, st.resources[shards[k]].digest});
    }
  }
}

}  // namespace sentry::shards
