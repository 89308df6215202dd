#include "server/http/json_fields.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace oft {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view prefix, const char* key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(prefix, key, " ", what));
}

}  // namespace

absl::Status OptionalNumber(const json& obj, const char* key, double lo, double hi,
                            std::optional<double>* out, absl::string_view prefix) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Invalid(prefix, key, absl::StrCat("must be a number, got ", it->type_name()));
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi)) return Invalid(prefix, key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  *out = v;
  return absl::OkStatus();
}

absl::Status OptionalInt(const json& obj, const char* key, int64_t lo, int64_t hi,
                         std::optional<int64_t>* out, absl::string_view prefix) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) {
    return Invalid(prefix, key, absl::StrCat("must be an integer, got ", it->type_name()));
  }
  // Unsigned values above int64 come through as unsigned; compare in the right domain.
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return Invalid(prefix, key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", it->get<uint64_t>()));
  }
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) return Invalid(prefix, key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  *out = v;
  return absl::OkStatus();
}

absl::Status OptionalBool(const json& obj, const char* key, bool* out, absl::string_view prefix) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Invalid(prefix, key, absl::StrCat("must be a boolean, got ", it->type_name()));
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status OptionalString(const json& obj, const char* key, std::optional<std::string>* out,
                            absl::string_view prefix) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return Invalid(prefix, key, absl::StrCat("must be a string, got ", it->type_name()));
  *out = it->get<std::string>();
  return absl::OkStatus();
}

std::string ParamOfMessage(absl::string_view message) {
  size_t n = 0;
  while (n < message.size()) {
    const char c = message[n];
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '[' ||
          c == ']')) {
      break;
    }
    ++n;
  }
  // A field path is followed by a space or ':' and starts with a lowercase letter (messages
  // that start with a capitalised word or a quote are sentences, not fields).
  if (n == 0 || n == message.size() || (message[n] != ' ' && message[n] != ':')) return "";
  if (!absl::ascii_islower(static_cast<unsigned char>(message[0]))) return "";
  return std::string(message.substr(0, n));
}

}  // namespace oft
