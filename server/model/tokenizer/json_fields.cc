#include "server/model/tokenizer/json_fields.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/model/tokenizer/utf8.h"

namespace oft::tokenizer {

absl::Status Invalid(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", path, ": ", what));
}

std::string Key(absl::string_view path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

std::string Index(absl::string_view path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

// The member `key` of `obj`, or nullptr when it is absent or null.
const Json* Member(const Json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<const Json*> RequireMember(const Json& obj, const char* key,
                                          absl::string_view path) {
  if (!obj.is_object())
    return Invalid(path, absl::StrCat("expected an object, got ", obj.type_name()));
  const Json* m = Member(obj, key);
  if (m == nullptr) return Invalid(Key(path, key), "missing required field");
  return m;
}

absl::StatusOr<std::string> RequireString(const Json& obj, const char* key,
                                          absl::string_view path) {
  OFT_ASSIGN_OR_RETURN(const Json* m, RequireMember(obj, key, path));
  if (!m->is_string()) {
    return Invalid(Key(path, key), absl::StrCat("expected a string, got ", m->type_name()));
  }
  return m->get<std::string>();
}

absl::StatusOr<std::optional<std::string>> OptionalString(const Json& obj, const char* key,
                                                          absl::string_view path) {
  const Json* m = Member(obj, key);
  if (m == nullptr) return std::optional<std::string>();
  if (!m->is_string()) {
    return Invalid(Key(path, key), absl::StrCat("expected a string, got ", m->type_name()));
  }
  return std::optional<std::string>(m->get<std::string>());
}

absl::StatusOr<bool> OptionalBool(const Json& obj, const char* key, absl::string_view path,
                                  bool default_value) {
  const Json* m = Member(obj, key);
  if (m == nullptr) return default_value;
  if (!m->is_boolean()) {
    return Invalid(Key(path, key), absl::StrCat("expected a boolean, got ", m->type_name()));
  }
  return m->get<bool>();
}

absl::StatusOr<size_t> OptionalCount(const Json& obj, const char* key, absl::string_view path,
                                     size_t default_value) {
  const Json* m = Member(obj, key);
  if (m == nullptr) return default_value;
  if (!m->is_number_unsigned()) {
    return Invalid(Key(path, key), "expected a non-negative integer");
  }
  return m->get<size_t>();
}

absl::StatusOr<int32_t> AsId(const Json& j, absl::string_view path) {
  if (!j.is_number_integer() || j.get<int64_t>() < 0 ||
      j.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
    return Invalid(path,
                   absl::StrCat("expected a token id (integer in [0, 2^31)), got ", j.dump()));
  }
  return static_cast<int32_t>(j.get<int64_t>());
}

// A single code point string, as used by Metaspace and Strip.
absl::StatusOr<std::string> RequireChar(const Json& obj, const char* key, absl::string_view path) {
  OFT_ASSIGN_OR_RETURN(std::string s, RequireString(obj, key, path));
  if (s.empty() || Utf8SeqLen(s[0]) != s.size() || !IsValidUtf8(s)) {
    return Invalid(Key(path, key), absl::StrCat("expected a single character, got \"", s, "\""));
  }
  return s;
}

absl::Status Unsupported(absl::string_view path, absl::string_view kind, absl::string_view type,
                         absl::string_view supported) {
  return absl::UnimplementedError(
      absl::StrCat("tokenizer.json: ", Key(path, "type"), " is \"", type, "\": this ", kind,
                   " type is not supported (supported: ", supported, ")"));
}

}  // namespace oft::tokenizer
