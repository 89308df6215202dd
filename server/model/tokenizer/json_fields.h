// Typed access to tokenizer.json fields with errors that name the JSON path (internal to
// oft_tokenizer). Every error is INVALID_ARGUMENT "tokenizer.json: <path>: <what>", except
// Unsupported, which is UNIMPLEMENTED. A `path` is the dotted location of `obj` in the file
// ("" for the root, "model", "normalizer.normalizers[1]").
#ifndef OFT_SERVER_MODEL_TOKENIZER_JSON_FIELDS_H_
#define OFT_SERVER_MODEL_TOKENIZER_JSON_FIELDS_H_

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oft::tokenizer {

using Json = nlohmann::json;

// INVALID_ARGUMENT "tokenizer.json: <path>: <what>".
absl::Status Invalid(absl::string_view path, absl::string_view what);
// UNIMPLEMENTED naming `<path>.type`, the unsupported `type` of a `kind` of component and
// the `supported` types.
absl::Status Unsupported(absl::string_view path, absl::string_view kind, absl::string_view type,
                         absl::string_view supported);

// "path.key" ("key" at the root) and "path[i]".
std::string Key(absl::string_view path, absl::string_view key);
std::string Index(absl::string_view path, size_t i);

// The member `key` of `obj`, or nullptr when `obj` is not an object or `key` is absent or null.
const Json* Member(const Json& obj, const char* key);
// The member `key`; an error when `obj` is not an object or the member is absent or null.
absl::StatusOr<const Json*> RequireMember(const Json& obj, const char* key, absl::string_view path);
absl::StatusOr<std::string> RequireString(const Json& obj, const char* key, absl::string_view path);
// A string of exactly one code point (Metaspace replacement, Strip content).
absl::StatusOr<std::string> RequireChar(const Json& obj, const char* key, absl::string_view path);
// Absent or null gives nullopt / `default_value`; a value of another type is an error.
absl::StatusOr<std::optional<std::string>> OptionalString(const Json& obj, const char* key,
                                                          absl::string_view path);
absl::StatusOr<bool> OptionalBool(const Json& obj, const char* key, absl::string_view path,
                                  bool default_value);
absl::StatusOr<size_t> OptionalCount(const Json& obj, const char* key, absl::string_view path,
                                     size_t default_value);
// A token id: an integer in [0, 2^31).
absl::StatusOr<int32_t> AsId(const Json& j, absl::string_view path);

}  // namespace oft::tokenizer

#endif  // OFT_SERVER_MODEL_TOKENIZER_JSON_FIELDS_H_
