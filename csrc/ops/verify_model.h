// sentry::verify_model in two steps, for callers that can start opening the bundle before their
// tensors are ready (the Python binding starts it before converting its arguments).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../bundle/background.h"
#include "../include/sentry/sentry.h"

namespace sentry {

// The work of opening a bundle file or bytes (open_bundle_memoised); the arguments are referred
// to, not copied, and must outlive the Task that runs it.
std::function<OpenedBundle()> bundle_file_opener(const std::string& path, const Trust& trust);
std::function<OpenedBundle()> bundle_data_opener(std::string_view data, const std::string& source,
                                                 const Trust& trust);

// verify_model with the bundle's opening already started.
VerifiedModel verify_model_opening(const NamedTensors& state, const std::string& source,
                                   const std::optional<std::vector<std::string>>& files,
                                   Task<OpenedBundle>& opening);

}  // namespace sentry
