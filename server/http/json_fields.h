// Typed reads of optional fields of an untrusted JSON object, shared by the OpenAI wire
// formats (openai_types.cc, openai_fine_tuning_types.cc). Every error is INVALID_ARGUMENT and
// starts with the field's path (prefix + key), e.g. "hyperparameters.n_epochs must be an
// integer, got string", so the HTTP error object can name it as `param`.
// An absent or null field leaves `out` untouched.
#ifndef OFT_SERVER_HTTP_JSON_FIELDS_H_
#define OFT_SERVER_HTTP_JSON_FIELDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace oft {

absl::Status OptionalNumber(const nlohmann::json& obj, const char* key, double lo, double hi,
                            std::optional<double>* out, absl::string_view prefix = "");
absl::Status OptionalInt(const nlohmann::json& obj, const char* key, int64_t lo, int64_t hi,
                         std::optional<int64_t>* out, absl::string_view prefix = "");
absl::Status OptionalBool(const nlohmann::json& obj, const char* key, bool* out,
                          absl::string_view prefix = "");
absl::Status OptionalString(const nlohmann::json& obj, const char* key, std::optional<std::string>* out,
                            absl::string_view prefix = "");

// The leading field path of an error message written by the rules above ("temperature must
// be ...", "messages[2].role must ...", "model \"x\" not found ..."), or "" when the message
// does not start with one.
std::string ParamOfMessage(absl::string_view message);

}  // namespace oft

#endif  // OFT_SERVER_HTTP_JSON_FIELDS_H_
