#include "server/common/client_regex.h"

#include <re2/re2.h>

#include "absl/strings/str_cat.h"
#include "server/common/echo.h"

namespace oft {

absl::StatusOr<ClientRegex> ClientRegex::Compile(absl::string_view field, absl::string_view pattern) {
  if (pattern.size() > kMaxClientRegexBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": regex is ", pattern.size(),
                                                   " bytes, the limit is ", kMaxClientRegexBytes));
  }
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(kMaxClientRegexMemory);
  auto re = std::make_shared<const RE2>(re2::StringPiece(pattern.data(), pattern.size()), options);
  if (!re->ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": invalid regex \"", Echo(pattern),
                                                   "\": ", Echo(re->error())));
  }
  return ClientRegex(std::move(re));
}

bool ClientRegex::FullMatch(absl::string_view text) const {
  return RE2::FullMatch(re2::StringPiece(text.data(), text.size()), *re_);
}

}  // namespace oft
