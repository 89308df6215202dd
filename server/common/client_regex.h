// Regular expressions that come from clients (adapter target/exclude patterns).
//
// A backtracking engine (std::regex, PCRE without limits) turns a pattern such as
// "(.*.*)*X" into minutes of CPU per match: one request pins a server thread, a few dozen
// wedge the service for every tenant. Client patterns therefore run on RE2, whose matching
// time is linear in the input and whose compiled program is bounded in memory, and the
// pattern text itself is capped at kMaxClientRegexBytes. RE2 has no backreferences or
// lookaround; a pattern using them is rejected with the field's name and RE2's reason.
//
// Thread-safety: a compiled ClientRegex is immutable; FullMatch may be called from any
// number of threads at once.
#ifndef OFT_SERVER_COMMON_CLIENT_REGEX_H_
#define OFT_SERVER_COMMON_CLIENT_REGEX_H_

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace re2 {
class RE2;
}

namespace oft {

inline constexpr size_t kMaxClientRegexBytes = 1024;
// Memory RE2 may use for one compiled pattern (its automata); larger programs fail to compile.
inline constexpr int64_t kMaxClientRegexMemory = 4 << 20;

class ClientRegex {
 public:
  // INVALID_ARGUMENT naming `field` when the pattern is longer than kMaxClientRegexBytes,
  // does not compile under RE2 syntax, or needs more than kMaxClientRegexMemory. The
  // pattern is quoted in the message through Echo() (bounded).
  static absl::StatusOr<ClientRegex> Compile(absl::string_view field, absl::string_view pattern);

  // Whether the whole of `text` matches (Python's re.fullmatch). Linear in text size.
  bool FullMatch(absl::string_view text) const;

 private:
  explicit ClientRegex(std::shared_ptr<const re2::RE2> re) : re_(std::move(re)) {}
  std::shared_ptr<const re2::RE2> re_;
};

}  // namespace oft

#endif  // OFT_SERVER_COMMON_CLIENT_REGEX_H_
