// Internal: the in-toto Statement v1 envelope check, shared by the model statement parser and
// the Python layer's statement parsers (dataset manifests, provenance) through the binding.
#pragma once

#include <string>
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

}  // namespace sentry
