#include "server/model/tokenizer/regex.h"

#include <algorithm>
#include <cstdint>
#include <optional>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/model/tokenizer/utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace oft::tokenizer {

absl::StatusOr<std::unique_ptr<Regex>> Regex::Create(const std::string& pattern, bool literal,
                                                     absl::string_view path) {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  // PCRE2_LITERAL admits only a few other options; UCP is meaningless for a literal.
  const uint32_t options = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return Invalid(path, absl::StrCat("cannot compile regex \"", pattern, "\" at offset ",
                                      error_offset, ": ", reinterpret_cast<const char*>(message)));
  }
  // JIT is an optimization only; the interpreter is used when it is unavailable.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Regex>(new Regex(code));
}

Regex::~Regex() { pcre2_code_free(code_); }

std::vector<Match> Regex::FindAll(absl::string_view s) const {
  std::vector<Match> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t offset = 0;
  std::optional<size_t> last_end;
  while (offset <= s.size()) {
    int rc = pcre2_match(code_, subject, s.size(), offset, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code_, subject, s.size(), offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                       nullptr);
    }
    if (rc < 0) break;  // No match, or a resource limit: the rest stays unmatched.
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = std::max(ov[0], ov[1]);
    if (start == end && last_end == end) {
      if (offset >= s.size()) break;
      offset += Utf8SeqLen(s[offset]);
      continue;
    }
    out.emplace_back(start, end);
    last_end = end;
    offset = end;
  }
  pcre2_match_data_free(md);
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const Json& obj, absl::string_view path) {
  OFT_ASSIGN_OR_RETURN(const Json* p, RequireMember(obj, "pattern", path));
  const std::string ppath = Key(path, "pattern");
  if (p->is_object() && p->size() == 1) {
    if (auto it = p->find("String"); it != p->end() && it->is_string()) {
      return Regex::Create(it->get<std::string>(), /*literal=*/true, Key(ppath, "String"));
    }
    if (auto it = p->find("Regex"); it != p->end() && it->is_string()) {
      return Regex::Create(it->get<std::string>(), /*literal=*/false, Key(ppath, "Regex"));
    }
  }
  return Invalid(ppath, absl::StrCat("expected {\"String\": \"...\"} or {\"Regex\": \"...\"}, got ",
                                     p->dump()));
}

std::string ReplaceAll(const Regex& regex, const std::string& s, const std::string& content) {
  std::vector<Match> matches = regex.FindAll(s);
  if (matches.empty()) return s;
  std::string out;
  size_t prev = 0;
  for (const auto& [start, end] : matches) {
    out.append(s, prev, start - prev);
    out.append(content);
    prev = end;
  }
  out.append(s, prev, std::string::npos);
  return out;
}

}  // namespace oft::tokenizer
