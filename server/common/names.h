// Validation of client-supplied names (tenants, adapters, datasets, jobs). Names are
// matched against a strict pattern and never become paths on their own: a valid name
// has 1-64 characters from [A-Za-z0-9._-], starts with a letter or digit, and is not
// "." or ".." (so it cannot escape a directory when joined to one).
#ifndef OFT_SERVER_COMMON_NAMES_H_
#define OFT_SERVER_COMMON_NAMES_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace oft {

inline constexpr size_t kMaxNameLength = 64;

// INVALID_ARGUMENT naming `field` and the rule when `name` is not valid.
absl::Status ValidateName(absl::string_view field, absl::string_view name);

}  // namespace oft

#endif  // OFT_SERVER_COMMON_NAMES_H_
