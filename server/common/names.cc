#include "server/common/names.h"

#include "absl/strings/str_cat.h"

namespace oft {

absl::Status ValidateName(absl::string_view field, absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    std::string shown(name.substr(0, 80));
    return absl::InvalidArgumentError(absl::StrCat(
        field, " \"", shown, name.size() > 80 ? "..." : "", "\" is invalid: ", why,
        " (allowed: 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit)"));
  };
  if (name.empty()) return bad("it is empty");
  if (name.size() > kMaxNameLength) return bad(absl::StrCat("it is ", name.size(), " characters long"));
  const unsigned char first = static_cast<unsigned char>(name[0]);
  if (!std::isalnum(first)) return bad("it must start with a letter or digit");
  for (char ch : name) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-') || c >= 0x80) {
      return bad(c == '/' ? "it contains '/'" : "it contains a character outside the allowed set");
    }
  }
  if (name.find("..") != absl::string_view::npos) return bad("it contains \"..\"");
  return absl::OkStatus();
}

}  // namespace oft
