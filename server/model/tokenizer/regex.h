// Regular expressions for tokenizer.json patterns (internal to oft_tokenizer): PCRE2 in UTF +
// UCP mode, which matches Oniguruma (what `tokenizers` uses) on the patterns tokenizers
// ship: \p{L}, \p{N}, (?i:...), lookahead.
//
// Thread safety: a Regex is immutable after Create; FindAll may run concurrently.
#ifndef OFT_SERVER_MODEL_TOKENIZER_REGEX_H_
#define OFT_SERVER_MODEL_TOKENIZER_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/tokenizer/json_fields.h"

struct pcre2_real_code_8;  // pcre2_code with PCRE2_CODE_UNIT_WIDTH 8.

namespace oft::tokenizer {

using Match = std::pair<size_t, size_t>;  // [start, end) byte offsets.

// The pattern of the GPT-2 ByteLevel pre-tokenizer (use_regex: true).
inline constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class Regex {
 public:
  // Compiles `pattern`; `literal`: it is a plain string (the {"String": ...} form).
  // Errors: INVALID_ARGUMENT naming `path`, the pattern and the offset of the error.
  static absl::StatusOr<std::unique_ptr<Regex>> Create(const std::string& pattern, bool literal,
                                                       absl::string_view path);
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex();

  // All non-overlapping matches in `s` (valid UTF-8), left to right. Like Oniguruma's
  // find_iter, an empty match that ends where the previous match ended is skipped. A match
  // that hits a PCRE2 resource limit ends the search (the rest stays unmatched).
  std::vector<Match> FindAll(absl::string_view s) const;

 private:
  explicit Regex(pcre2_real_code_8* code) : code_(code) {}
  pcre2_real_code_8* code_;
};

// The `pattern` member of `obj`: {"String": "..."} (literal) or {"Regex": "..."}.
absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const Json& obj, absl::string_view path);

// `s` with every match of `regex` replaced by `content`.
std::string ReplaceAll(const Regex& regex, const std::string& s, const std::string& content);

}  // namespace oft::tokenizer

#endif  // OFT_SERVER_MODEL_TOKENIZER_REGEX_H_
