// Internal: the in-toto Statement v1 envelope check, shared by the model statement parser and
// the Python layer's statement parsers (dataset manifests, provenance) through the binding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>
#include <string_view>

#include "strict_json.h"

namespace sentry {

struct StatementSubject {
  std::string_view name;         // subject[0].name
  std::string_view sha256_hex;   // subject[0].digest.sha256, checked: 64 lower-case hex
};

// Checks _type, predicateType (`what` names the expected predicate in the message) and the one
// subject with exactly a sha256 digest. Unknown fields are ignored, as in-toto says.
StatementSubject check_statement_envelope(const json::Reader& reader, json::object doc,
                                          std::string_view predicate_type, std::string_view what);

// Reads a tensor listing ({hash_type, entries}, Sentry's predicate.tensors) into
// out.tensor_hash_type and out.tensors, by out.method's rules: "files" (each entry's file a
// signed resource, a name unique in its file), "tensors" (the entries are out.resources), or
// none, for a listing outside a statement (a weight manifest's): names unique.
void read_tensors(const json::Reader& reader, json::element value, const json::Field& field,
                  Statement& out);

// The reference's order of paths: pathlib.PurePosixPath compares the lists of components.
int compare_components(std::string_view a, std::string_view b);

// Method "shards" (shards.cpp).
namespace shards {

// A resource name PATH:START:END (the path may hold ':'), as views into the name.
struct Name {
  std::string_view path;
  std::uint64_t start = 0, end = 0;
};

// serialization.shard_size: a positive integer below 2^63, written as an int or an integral
// float (the reference writes 1000000.0).
std::uint64_t read_size(const json::Reader& reader, json::element value, const json::Field& field);
// What the reference writes as each shard resource's algorithm: sha256-sharded-SIZE.
std::string algorithm(std::string_view hash_type, std::uint64_t size);
// FormatError on `field` unless `name` is PATH:START:END with decimal offsets.
Name parse_name(const json::Reader& reader, std::string_view name, const json::Field& field);
// The reference's order of shard resources: path components, then start, then end.
bool less(const Name& a, const Name& b);
// Fills st.shards from the resources (names[i] is st.resources[i]'s), checking that they cut
// each file exactly as the reference does: from 0, in steps of st.shard_size, the last shard
// not empty; '.' (a single-file model) alone. FormatError on `field` otherwise.
void collect(const json::Reader& reader, const std::vector<Name>& names, const json::Field& field,
             Statement& st);

}  // namespace shards

}  // namespace sentry
