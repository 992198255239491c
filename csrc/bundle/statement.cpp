// The statement a bundle signs (sentry/bundle.h): OpenSSF Model Signing v1.0 with Sentry's
// predicate.tensors extension, and model_signing v0.2.0's Digests/v0.1 (docs/FORMAT.md §6).
//
// Unknown fields at the statement's top level, in the subject and in the predicate are ignored
// (as in-toto and OMS v1.0 say); unknown fields in serialization, in resources and in Sentry's
// tensors extension are refused. Resources are accepted in code-point order (what Sentry and the
// OMS spec write) or in the reference tool's path-component order, nothing else.
#include "statement.h"

#include "background.h"

#include <algorithm>
#include <optional>
#include <unordered_map>
#include <unordered_set>

namespace sentry {

using json::Field;

namespace {

const char* const kMethods = "['files', 'tensors', 'shards']";

// Work split over background threads only for documents this large: a handoff costs more than
// reading a small one.
constexpr std::size_t kSplitEntries = 256;               // tensor entries
constexpr std::size_t kConcurrentDuplicateWalk = 64 << 10;  // statement bytes

// Python's repr() of a list of strings: ['a', 'b'].
std::string repr_list(const std::vector<std::string_view>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + json::repr(items[i]);
  return out + "]";
}

}  // namespace

int compare_components(std::string_view a, std::string_view b) {
  while (true) {
    const std::size_t ea = std::min(a.find('/'), a.size()), eb = std::min(b.find('/'), b.size());
    const int c = a.substr(0, ea).compare(b.substr(0, eb));
    if (c != 0) return c;
    const bool more_a = ea < a.size(), more_b = eb < b.size();
    if (!more_a || !more_b) return int(more_a) - int(more_b);
    a.remove_prefix(ea + 1);
    b.remove_prefix(eb + 1);
  }
}

namespace {

template <class Names>
bool strictly_increasing(const Names& names, bool by_components) {
  for (std::size_t i = 1; i < names.size(); ++i) {
    const int c = by_components ? compare_components(names[i - 1], names[i])
                                : names[i - 1].compare(names[i]);
    if (c >= 0) return false;
  }
  return true;
}

std::string digests_root_hex(const std::vector<Resource>& resources) {
  std::string raw;
  raw.reserve(32 * resources.size());
  for (const Resource& r : resources) raw.append(reinterpret_cast<const char*>(r.digest.data()), 32);
  return crypto::sha256_hex(raw);
}

Digest digest_from_hex(std::string_view hex) {
  Digest out{};
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (std::size_t i = 0; i < 32; ++i) out[i] = std::uint8_t(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return out;
}

// The subject digest must be exactly {"sha256": hex}.
std::string_view subject_sha256(const json::Reader& reader, json::element value, const Field& field) {
  const json::object digest = reader.as_object(value, field);
  std::vector<std::string_view> keys;
  json::element sha;
  for (auto member : digest) {
    keys.push_back(member.key);
    sha = member.value;
  }
  if (keys.size() != 1 || keys[0] != "sha256") {
    std::sort(keys.begin(), keys.end());
    reader.fail(field, "expected exactly {'sha256'}, got " + repr_list(keys));
  }
  const Field hf = field.key("sha256");
  reader.as_digest(sha, hf);
  return sha.get_string().value_unsafe();
}

json::element lookup(json::object obj, std::string_view key) {
  json::element out;
  return obj.at_key(key).get(out) == simdjson::SUCCESS ? out : json::element();
}

bool has(json::object obj, std::string_view key) {
  json::element out;
  return obj.at_key(key).get(out) == simdjson::SUCCESS;
}

// ---------------------------------------------------------------------------------------------
// model_signing v0.2.0

constexpr std::string_view kV02HashAlgorithm = "file-sha256";

Statement parse_v02(const json::Reader& reader, json::object doc, const Field& root) {
  const Field tf = root.key("_type");
  json::element type;
  if (doc.at_key("_type").get(type) != simdjson::SUCCESS || !type.is_string() ||
      type.get_string().value_unsafe() != kStatementType) {
    reader.fail(tf, "expected " + json::repr(kStatementType) + ", got " +
                        (has(doc, "_type") ? json::repr(type) : "None"));
  }
  const Field sf = root.key("subject");
  json::element subjects_value;
  if (doc.at_key("subject").get(subjects_value) != simdjson::SUCCESS) {
    reader.fail(sf, "must be a JSON array, got NoneType");
  }
  const json::array subjects = reader.as_array(subjects_value, sf);
  if (subjects.size() == 0) {
    reader.fail(sf, "no subject: a model_signing v0.2 statement lists its files");
  }
  Statement out;
  std::unordered_set<std::string_view> seen;
  std::size_t i = 0;
  for (json::element item : subjects) {
    const Field field = sf.index(i++);
    const json::object subject = reader.as_object(item, field);
    const Field nf = field.key("name");
    json::element name_value;
    if (subject.at_key("name").get(name_value) != simdjson::SUCCESS) {
      reader.fail(nf, "must be a string, got NoneType");
    }
    const std::string_view name = reader.as_text(name_value, nf);
    if (!(name == "." && subjects.size() == 1)) reader.check_relative_path(name, nf);
    if (!seen.insert(name).second) reader.fail(nf, "duplicate subject " + json::repr(name));
    const Field df = field.key("digest");
    json::element digest_value;
    if (subject.at_key("digest").get(digest_value) != simdjson::SUCCESS) {
      reader.fail(df, "must be a JSON object, got NoneType");
    }
    const std::string_view hex = subject_sha256(reader, digest_value, df);
    json::element annotations_value;
    if (subject.at_key("annotations").get(annotations_value) == simdjson::SUCCESS) {
      const Field af = field.key("annotations");
      const json::object annotations = reader.as_object(annotations_value, af);
      json::element actual;
      if (annotations.at_key("actual_hash_algorithm").get(actual) == simdjson::SUCCESS &&
          !(actual.is_string() && actual.get_string().value_unsafe() == kV02HashAlgorithm)) {
        reader.fail(af.key("actual_hash_algorithm"),
                    "unsupported " + json::repr(actual) +
                        "; model_signing v0.2 bundles verify with 'file-sha256' only");
      }
    }
    out.resources.push_back(Resource{std::string(name), "sha256", digest_from_hex(hex)});
  }
  // Nothing in v0.2 digests the list, so its order is not significant.
  std::sort(out.resources.begin(), out.resources.end(),
            [](const Resource& a, const Resource& b) { return a.name < b.name; });
  out.root = digest_from_hex(digests_root_hex(out.resources));
  out.method = "files";
  out.hash_type = "sha256";
  return out;
}

// ---------------------------------------------------------------------------------------------
// OMS v1.0

struct MethodInfo {
  std::string_view name;
  std::array<std::string_view, 2> hash_types;
  std::size_t hash_type_count;
  std::string_view listed;  // for messages
};
constexpr MethodInfo kMethodInfo[] = {
    {"files", {"sha256", "blake3"}, 2, "['sha256', 'blake3']"},
    {"tensors", {"blake3", "sha256-tree"}, 2, "['blake3', 'sha256-tree']"},
    {"shards", {"sha256", ""}, 1, "['sha256']"},  // the reference's blake2 Sentry lacks
};

void read_serialization(const json::Reader& reader, json::element value, const Field& field,
                        Statement& out) {
  const json::object ser = reader.as_object(value, field);
  json::element method_value;
  const bool sharded = ser.at_key("method").get(method_value) == simdjson::SUCCESS &&
                       method_value.is_string() &&
                       method_value.get_string().value_unsafe() == "shards";
  // shard_size is required with method shards and unknown (refused) otherwise.
  static constexpr std::array<std::string_view, 5> kKeys{"method", "hash_type", "allow_symlinks",
                                                         "shard_size", "ignore_paths"};
  static constexpr std::array<std::string_view, 4> kPlainKeys{"method", "hash_type",
                                                              "allow_symlinks", "ignore_paths"};
  json::Members<5> m;
  if (sharded) {
    m = json::members(reader, ser, kKeys, 4, field);
  } else {
    const auto plain = json::members(reader, ser, kPlainKeys, 3, field);
    for (std::size_t k = 0; k < 3; ++k) m.values[k] = plain.values[k];
    m.values[4] = plain.values[3];
  }
  const Field mf = field.key("method");
  const std::string_view method = reader.as_text(*m[0], mf);
  const MethodInfo* info = nullptr;
  for (const MethodInfo& candidate : kMethodInfo) {
    if (candidate.name == method) info = &candidate;
  }
  if (!info) {
    reader.fail(mf, "unsupported method " + json::repr(method) + "; Sentry verifies " + kMethods);
  }
  const Field hf = field.key("hash_type");
  const std::string_view hash_type = reader.as_text(*m[1], hf);
  if (std::find(info->hash_types.begin(), info->hash_types.begin() + info->hash_type_count,
                hash_type) == info->hash_types.begin() + info->hash_type_count) {
    reader.fail(hf, "unsupported " + json::repr(hash_type) + " for method " + json::repr(method) +
                        "; expected one of " + std::string(info->listed));
  }
  out.method = std::string(method);
  out.hash_type = std::string(hash_type);
  out.allow_symlinks = reader.as_bool(*m[2], field.key("allow_symlinks"));
  if (m[4]) {
    const Field pf = field.key("ignore_paths");
    std::size_t i = 0;
    for (json::element path : reader.as_array(*m[4], pf)) {
      const Field ef = pf.index(i++);
      out.ignore_paths.emplace_back(reader.as_relative_path(path, ef));
    }
  }
  if (sharded) out.shard_size = shards::read_size(reader, *m[3], field.key("shard_size"));
}

// Whether names seen so far are unique, cheaply while they come in increasing order.
class UniqueNames {
 public:
  // False when `name` was inserted before. Views must outlive this object.
  bool insert(std::string_view name) {
    if (set_.empty()) {
      if (count_ == 0 || last_ < name) {
        last_ = name;
        seen_.push_back(name);
        ++count_;
        return true;
      }
      set_.insert(seen_.begin(), seen_.end());
      seen_.clear();
    }
    ++count_;
    return set_.insert(name).second;
  }

 private:
  std::size_t count_ = 0;
  std::string_view last_;
  std::vector<std::string_view> seen_;  // until the order breaks
  std::unordered_set<std::string_view> set_;
};

void read_resources(const json::Reader& reader, json::element value, const Field& field,
                    Statement& out) {
  const json::array items = reader.as_array(value, field);
  const bool files = out.method == "files";
  const bool sharded = out.method == "shards";
  // What each resource's algorithm must be: the hash type, or sha256-sharded-SIZE.
  const std::string expected_algorithm =
      sharded ? shards::algorithm(out.hash_type, out.shard_size) : out.hash_type;
  std::vector<shards::Name> shard_names;
  if (sharded) shard_names.reserve(items.size());
  const std::size_t count = items.size();
  out.resources.reserve(count);
  // Names in strictly increasing code-point order (how Sentry and OMS list them) are unique;
  // a set is built only once that order breaks.
  UniqueNames seen;
  std::vector<std::string_view> names;
  names.reserve(count);
  std::size_t i = 0;
  static constexpr std::array<std::string_view, 3> kKeys{"name", "algorithm", "digest"};
  for (json::element item : items) {
    const Field rf = field.index(i++);
    const auto m = json::members(reader, reader.as_object(item, rf), kKeys, 3, rf);
    const Field nf = rf.key("name");
    const std::string_view name = reader.as_text(*m[0], nf);
    if (files) {
      if (!(name == "." && count == 1)) reader.check_relative_path(name, nf);  // "." is one file
    } else if (sharded) {
      shard_names.push_back(shards::parse_name(reader, name, nf));
      const std::string_view path = shard_names.back().path;
      if (path != ".") reader.check_relative_path(path, nf);  // "." is a single-file model
    } else if (name.empty()) {
      reader.fail(nf, "empty name");
    }
    if (!seen.insert(name)) reader.fail(nf, "duplicate resource " + json::repr(name));
    const Field af = rf.key("algorithm");
    const std::string_view algorithm = reader.as_text(*m[1], af);
    if (algorithm != expected_algorithm) {
      if (algorithm != "sha256" && algorithm != "blake3" && algorithm != "sha256-tree") {
        reader.fail(af, "unknown algorithm " + json::repr(algorithm));
      }
      reader.fail(af, json::repr(algorithm) + " differs from serialization.hash_type " +
                          json::repr(expected_algorithm));
    }
    out.resources.push_back(
        Resource{std::string(name), std::string(algorithm), reader.as_digest(*m[2], rf.key("digest"))});
    names.push_back(name);
  }
  bool in_order = strictly_increasing(names, false);
  if (!in_order && sharded) {
    in_order = std::adjacent_find(shard_names.begin(), shard_names.end(),
                                  [](const shards::Name& a, const shards::Name& b) {
                                    return !shards::less(a, b);
                                  }) == shard_names.end();
  } else if (!in_order) {
    in_order = strictly_increasing(names, true);
  }
  if (!in_order) {
    reader.fail(field, "not sorted by name (neither in code-point order nor by path components)");
  }
  if (sharded) shards::collect(reader, shard_names, field, out);
}

// Bytes a tensor of this dtype and shape takes; FormatError (on `field`) when they do not end on
// a byte boundary. Saturates far above any 64-bit length.
unsigned __int128 byte_length(const json::Reader& reader, std::string_view dtype, int bits,
                              const std::vector<std::int64_t>& shape, const Field& field) {
  constexpr unsigned __int128 kCap = static_cast<unsigned __int128>(1) << 100;
  unsigned __int128 numel = 1;
  for (std::int64_t d : shape) numel = std::min<unsigned __int128>(numel * std::uint64_t(d), kCap);
  const unsigned __int128 total_bits = numel * unsigned(bits);
  if (total_bits % 8 != 0) {
    std::string dims = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
    reader.fail(field, std::string(dtype) + " " + dims + "]: " +
                           std::to_string(static_cast<std::uint64_t>(numel)) + " elements of " +
                           std::to_string(bits) + " bits do not end on a byte boundary");
  }
  return total_bits / 8;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// What entries are checked against: the resources' names (a set only for method "files", the
// one that needs it) and whether the model is a single file, its resource named ".". Read-only
// once made, so both halves of the entries share it.
class SignedNames {
 public:
  SignedNames(const std::vector<Resource>& resources, bool needed) {
    for (const Resource& r : resources) {
      single_file_ = single_file_ || r.name == ".";
      if (needed) set_.insert(r.name);
    }
  }
  bool single_file() const { return single_file_; }
  bool contains(std::string_view name) const { return set_.count(name) != 0; }

 private:
  bool single_file_ = false;
  std::unordered_set<std::string_view> set_;
};

void read_tensor_entry(const json::Reader& reader, json::element item, const Field& ef,
                       const Statement& st, const SignedNames& signed_files, TensorEntry& e) {
  static constexpr std::array<std::string_view, 7> kKeys{"name",   "dtype", "shape", "digest",
                                                         "file",   "offset", "length"};
  const auto m = json::members(reader, reader.as_object(item, ef), kKeys, 4, ef);
  const Field nf = ef.key("name");
  const std::string_view name = reader.as_text(*m[0], nf);
  if (name.empty()) reader.fail(nf, "empty name");
  e.name = std::string(name);
  const Field df = ef.key("dtype");
  const std::string_view dtype = reader.as_text(*m[1], df);
  const int bits = safetensors_dtype_bits(dtype);
  if (bits == 0) reader.fail(df, "unknown safetensors dtype " + json::repr(dtype));
  e.dtype = std::string(dtype);
  const Field sf = ef.key("shape");
  const json::array shape = reader.as_array(*m[2], sf);
  e.shape.reserve(shape.size());
  for (json::element d : shape) {
    const std::optional<std::uint64_t> v = json::non_negative_integer(d);
    if (!v || *v > static_cast<std::uint64_t>(INT64_MAX)) {
      reader.fail(sf, "dimensions must be non-negative integers below 2^63, got " +
                          json::repr(*m[2]));
    }
    e.shape.push_back(static_cast<std::int64_t>(*v));
  }
  e.digest = reader.as_digest(*m[3], ef.key("digest"));
  const int present = int(m[4].has_value()) + int(m[5].has_value()) + int(m[6].has_value());
  if (present != 0 && present != 3) reader.fail(ef, "'file', 'offset' and 'length' go together");
  if (present == 3) {
    e.has_location = true;
    const Field ff = ef.key("file");
    if (m[4]->is_string() && m[4]->get_string().value_unsafe() == "." &&
        signed_files.single_file()) {
      e.file = ".";  // a single-file model
    } else {
      e.file = std::string(reader.as_relative_path(*m[4], ff));
    }
    for (int k = 5; k <= 6; ++k) {
      const Field kf = ef.key(kKeys[k]);
      const std::optional<std::uint64_t> v = json::non_negative_integer(*m[k]);
      if (!v) reader.fail(kf, "must be a non-negative integer, got " + json::repr(*m[k]));
      (k == 5 ? e.offset : e.length) = *v;
    }
    const unsigned __int128 expected = byte_length(reader, dtype, bits, e.shape, ef);
    if (expected != e.length) {
      const std::string takes = expected > UINT64_MAX
                                    ? "more than " + std::to_string(UINT64_MAX)
                                    : std::to_string(static_cast<std::uint64_t>(expected));
      reader.fail(ef.key("length"), std::to_string(e.length) + " bytes, but " + e.dtype + " " +
                                        shape_text(e.shape) + " takes " + takes);
    }
  }
  if (st.method == "files") {
    if (!e.has_location) {
      reader.fail(ef, "method 'files' needs the tensor's 'file', 'offset', 'length'");
    }
    if (!signed_files.contains(e.file)) {
      reader.fail(ef.key("file"), json::repr(e.file) + " is not a signed resource");
    }
  }
}

}  // namespace


// Method "files": entries name their file, a name unique in its file. Method "tensors": the
// entries are the resources. Otherwise (a weight manifest's listing, no method): names unique.
void read_tensors(const json::Reader& reader, json::element value, const Field& field,
                  Statement& out) {
  const json::object ext = reader.as_object(value, field);
  static constexpr std::array<std::string_view, 2> kKeys{"hash_type", "entries"};
  const auto m = json::members(reader, ext, kKeys, 2, field);
  const Field hf = field.key("hash_type");
  const std::string_view hash_type = reader.as_text(*m[0], hf);
  if (hash_type != "blake3" && hash_type != "sha256-tree") {
    reader.fail(hf, "unsupported " + json::repr(hash_type) +
                        "; expected one of ['blake3', 'sha256-tree']");
  }
  const Field lf = field.key("entries");
  const json::array entries = reader.as_array(*m[1], lf);
  const SignedNames signed_files(out.resources, out.method == "files");
  const std::size_t count = entries.size();
  out.tensors.resize(count);
  auto read_range = [&](json::array::iterator it, std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i, ++it) {
      const Field ef = lf.index(i);
      read_tensor_entry(reader, *it, ef, out, signed_files, out.tensors[i]);
    }
  };
  // A long listing is read in two halves at once (the entries were a third of the parse). The
  // first half's error is reported first: the one a reading in order would meet first.
  const std::size_t half = count >= kSplitEntries ? count / 2 : count;
  json::array::iterator middle = entries.begin();
  for (std::size_t i = 0; i < half; ++i) ++middle;
  std::optional<Task<bool>> second_half;
  if (half < count) {
    second_half.emplace([&] {
      read_range(middle, half, count);
      return true;
    });
  }
  read_range(entries.begin(), 0, half);
  if (second_half) second_half->get();
  // Order and uniqueness by (name, file): two files of a model may hold the same names (file is
  // empty for an entry without one). Method tensors names tensors only: a name is its resource.
  const bool per_file = out.method == "files";
  auto key_less = [&](const TensorEntry& a, const TensorEntry& b) {
    const int c = a.name.compare(b.name);
    return c < 0 || (c == 0 && per_file && a.file < b.file);
  };
  bool increasing = true;
  for (std::size_t k = 1; increasing && k < out.tensors.size(); ++k) {
    increasing = key_less(out.tensors[k - 1], out.tensors[k]);
  }
  if (!increasing) {
    std::vector<const TensorEntry*> sorted;
    sorted.reserve(out.tensors.size());
    for (const TensorEntry& e : out.tensors) sorted.push_back(&e);
    std::sort(sorted.begin(), sorted.end(),
              [&](const TensorEntry* a, const TensorEntry* b) { return key_less(*a, *b); });
    std::vector<std::string_view> dups;
    for (std::size_t k = 1; k < sorted.size() && dups.size() < 5; ++k) {
      const bool same = !key_less(*sorted[k - 1], *sorted[k]);
      if (same && (dups.empty() || dups.back() != sorted[k]->name)) dups.push_back(sorted[k]->name);
    }
    if (!dups.empty()) {
      reader.fail(lf, std::string("duplicate tensor name(s)") + (per_file ? " in one file " : " ") +
                          repr_list(dups));
    }
    reader.fail(lf, per_file ? "not sorted by name, then file, in code-point order"
                             : "not sorted by name in code-point order");
  }
  out.has_tensors = true;
  out.tensor_hash_type = std::string(hash_type);
  if (out.method != "tensors") return;
  if (out.tensor_hash_type != out.hash_type) {
    reader.fail(hf, json::repr(hash_type) + " differs from serialization.hash_type " +
                        json::repr(out.hash_type));
  }
  // The same names and digests as the resources (which may be listed in component order).
  bool same = out.resources.size() == out.tensors.size();
  for (std::size_t k = 0; same && k < out.tensors.size(); ++k) {
    same = out.resources[k].name == out.tensors[k].name &&
           out.resources[k].digest == out.tensors[k].digest;
  }
  if (!same && out.resources.size() == out.tensors.size()) {
    std::unordered_map<std::string_view, const Digest*> by_name;
    for (const Resource& r : out.resources) by_name.emplace(r.name, &r.digest);
    same = true;
    for (const TensorEntry& e : out.tensors) {
      auto it = by_name.find(e.name);
      same = same && it != by_name.end() && *it->second == e.digest;
    }
  }
  if (!same) reader.fail(field, "entries do not match predicate.resources (names and digests)");
}

int safetensors_dtype_bits(std::string_view dtype) {
  static const std::unordered_map<std::string_view, int> kBits = {
      {"BOOL", 8},        {"U8", 8},           {"I8", 8},           {"F8_E5M2", 8},
      {"F8_E4M3", 8},     {"F8_E8M0", 8},      {"F8_E4M3FNUZ", 8},  {"F8_E5M2FNUZ", 8},
      {"I16", 16},        {"U16", 16},         {"F16", 16},         {"BF16", 16},
      {"I32", 32},        {"U32", 32},         {"F32", 32},         {"I64", 64},
      {"U64", 64},        {"F64", 64},         {"C64", 64},         {"F4", 4},
      {"F6_E2M3", 6},     {"F6_E3M2", 6},
  };
  auto it = kBits.find(dtype);
  return it == kBits.end() ? 0 : it->second;
}

StatementSubject check_statement_envelope(const json::Reader& reader, json::object doc,
                                          std::string_view predicate_type, std::string_view what) {
  const Field root = Field::root("statement");
  json::element type, subjects_value, predicate_type_value;
  for (std::string_view key : {"_type", "subject", "predicateType", "predicate"}) {
    if (!has(doc, key)) reader.fail(root.key(key), "missing");
  }
  type = lookup(doc, "_type");
  if (!type.is_string() || type.get_string().value_unsafe() != kStatementType) {
    reader.fail(root.key("_type"),
                "expected " + json::repr(kStatementType) + ", got " + json::repr(type));
  }
  predicate_type_value = lookup(doc, "predicateType");
  if (!predicate_type_value.is_string() ||
      predicate_type_value.get_string().value_unsafe() != predicate_type) {
    reader.fail(root.key("predicateType"), "expected " + json::repr(predicate_type) + " (" +
                                               std::string(what) + "), got " +
                                               json::repr(predicate_type_value));
  }
  const Field sf = root.key("subject");
  const json::array subjects = reader.as_array(lookup(doc, "subject"), sf);
  if (subjects.size() != 1) {
    reader.fail(sf, "expected exactly one subject, got " + std::to_string(subjects.size()));
  }
  const Field s0 = sf.index(0);
  const json::object subject = reader.as_object(subjects.at(0).value_unsafe(), s0);
  const Field nf = s0.key("name");
  json::element name;
  if (subject.at_key("name").get(name) != simdjson::SUCCESS) reader.fail(nf, "missing");
  StatementSubject out;
  out.name = reader.as_text(name, nf);
  const Field df = s0.key("digest");
  json::element digest;
  if (subject.at_key("digest").get(digest) != simdjson::SUCCESS) {
    reader.fail(df, "must be a JSON object, got NoneType");
  }
  out.sha256_hex = subject_sha256(reader, digest, df);
  return out;
}

namespace {

Statement read_statement(const json::Reader& reader, json::element value) {
  const Field root = Field::root("statement");
  const json::object doc = reader.as_object(value, root);
  json::element predicate_type;
  if (doc.at_key("predicateType").get(predicate_type) == simdjson::SUCCESS &&
      predicate_type.is_string() && predicate_type.get_string().value_unsafe() == kV02PredicateType) {
    return parse_v02(reader, doc, root);
  }
  const StatementSubject subject =
      check_statement_envelope(reader, doc, kPredicateType, "OpenSSF Model Signing v1.0");
  Statement out;
  out.model_name = std::string(subject.name);
  const Field pf = root.key("predicate");
  const json::object predicate = reader.as_object(lookup(doc, "predicate"), pf);
  for (std::string_view key : {"serialization", "resources"}) {
    if (!has(predicate, key)) reader.fail(pf.key(key), "missing");
  }
  const Field serf = pf.key("serialization"), resf = pf.key("resources");
  read_serialization(reader, lookup(predicate, "serialization"), serf, out);
  read_resources(reader, lookup(predicate, "resources"), resf, out);
  if (digests_root_hex(out.resources) != subject.sha256_hex) {
    const Field subjects = root.key("subject");
    const Field s0 = subjects.index(0);
    const Field df = s0.key("digest");
    reader.fail(df.key("sha256"), "subject digest does not match resources");
  }
  out.root = digest_from_hex(subject.sha256_hex);
  const Field tf = pf.key("tensors");
  json::element tensors;
  if (out.method == "shards" && has(predicate, "tensors")) {
    reader.fail(tf, "not used with method 'shards'");
  }
  if (predicate.at_key("tensors").get(tensors) == simdjson::SUCCESS) {
    read_tensors(reader, tensors, tf, out);
  } else if (out.method == "tensors") {
    reader.fail(tf, "missing (required for method 'tensors')");
  }
  return out;
}

}  // namespace

// Duplicate keys are looked for on a background thread while the fields are read (the walk was
// a seventh of the parse), and reported first, as when the walk came first.
Statement parse_statement(std::string_view payload, const std::string& source) {
  const json::Reader reader(source);
  json::SiteParser<struct StatementSite> parser(payload.size());
  if (payload.size() < kConcurrentDuplicateWalk) {
    return read_statement(reader, reader.parse(parser.get(), payload, "statement"));
  }
  const json::element root = reader.parse_allowing_duplicates(parser.get(), payload, "statement");
  Task<bool> duplicates([&] {
    reader.refuse_duplicate_keys(root, "statement");
    return true;
  });
  Statement out;
  try {
    out = read_statement(reader, root);
  } catch (const FormatError&) {
    duplicates.get();  // a duplicate key, if any, is the error reported
    throw;
  }
  duplicates.get();
  return out;
}

std::vector<const TensorEntry*> expected_tensors(
    const Statement& st, const std::string& source,
    const std::optional<std::vector<std::string>>& files) {
  if (!st.has_tensors) {
    throw VerificationError(source + ": this signature lists no tensors (method " + st.method +
                            "); verify its files with verify_files");
  }
  std::vector<const TensorEntry*> out;
  out.reserve(st.tensors.size());
  if (files) {
    std::vector<std::string_view> listed;  // files with tensors, sorted
    for (const TensorEntry& e : st.tensors) {
      if (e.has_location) listed.push_back(e.file);
    }
    std::sort(listed.begin(), listed.end());
    listed.erase(std::unique(listed.begin(), listed.end()), listed.end());
    std::string unknown;
    for (const std::string& f : *files) {
      if (!std::binary_search(listed.begin(), listed.end(), std::string_view(f))) {
        unknown += (unknown.empty() ? "" : ", ") + f;
      }
    }
    if (!unknown.empty()) {
      std::string with;
      for (std::string_view f : listed) with += (with.empty() ? "" : ", ") + std::string(f);
      throw VerificationError(source + ": lists no tensors of " + unknown +
                              " (files with tensors: " + (with.empty() ? "none" : with) + ")");
    }
    for (const TensorEntry& e : st.tensors) {
      if (e.has_location && std::find(files->begin(), files->end(), e.file) != files->end()) {
        out.push_back(&e);
      }
    }
  } else {
    for (const TensorEntry& e : st.tensors) out.push_back(&e);
  }
  // Entries are sorted by (name, file): a repeated name is a run of neighbours.
  std::string shown;
  std::size_t repeated = 0;
  for (std::size_t i = 0; i < out.size();) {
    std::size_t j = i + 1;
    while (j < out.size() && out[j]->name == out[i]->name) ++j;
    if (j - i > 1 && ++repeated <= 3) {
      std::string where;
      for (std::size_t k = i; k < j; ++k) where += (k > i ? " and " : "") + out[k]->file;
      shown += (shown.empty() ? "'" : ", '") + out[i]->name + "' (" + where + ")";
    }
    i = j;
  }
  if (repeated) {
    throw FormatError(source + ": tensors of the same name are signed in several files: " + shown +
                      (repeated > 3 ? ", ..." : "") +
                      "; a loaded state dict cannot say which file it came from: name the file "
                      "its tensors were loaded from (file=), or verify the files on disk "
                      "(verify_files)");
  }
  return out;
}

namespace {

// Python's repr() of bytes: b'...' (b"..." when the bytes hold ' and no ").
std::string python_bytes_repr(std::string_view data) {
  const bool double_quote = data.find('\'') != std::string_view::npos &&
                            data.find('"') == std::string_view::npos;
  const char quote = double_quote ? '"' : '\'';
  static const char* kHex = "0123456789abcdef";
  std::string out = "b";
  out += quote;
  for (unsigned char c : data) {
    if (c == static_cast<unsigned char>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c >= 0x7F) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

}  // namespace

std::string v02_pae(std::string_view payload) {
  return "DSSEV1 " + std::to_string(kPayloadType.size()) + " " + std::string(kPayloadType) + " " +
         std::to_string(payload.size()) + " " + python_bytes_repr(payload);
}

}  // namespace sentry
