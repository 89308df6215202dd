#include "server/model/tokenizer.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#ifdef OFT_TOKENIZER_HAVE_ICU
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#endif

namespace oft {
namespace internal {
namespace {

using Json = nlohmann::json;
using Match = std::pair<size_t, size_t>;  // [start, end) byte offsets.

// The pattern of the GPT-2 ByteLevel pre-tokenizer (use_regex: true).
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ----------------------------------------------------------------------------------------
// UTF-8 helpers. Inside the pipeline all text is valid UTF-8.

size_t Utf8SeqLen(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  return 4;
}

uint32_t DecodeUtf8(absl::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  switch (Utf8SeqLen(b(0))) {
    case 1:
      return b(0);
    case 2:
      return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3:
      return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Length of the well-formed UTF-8 sequence at s[i], or 0 when it is ill-formed; then
// `*bad_len` is the length of its maximal subpart (what one U+FFFD replaces, as in Rust's
// String::from_utf8_lossy).
size_t WellFormedLen(absl::string_view s, size_t i, size_t* bad_len) {
  const unsigned char c = s[i];
  if (c < 0x80) return 1;
  size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    need = 2;
  } else if (c == 0xED) {
    need = 2, hi = 0x9F;
  } else if (c == 0xF0) {
    need = 3, lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) {
    need = 3;
  } else if (c == 0xF4) {
    need = 3, hi = 0x8F;
  } else {
    *bad_len = 1;
    return 0;
  }
  size_t k = 1;
  for (; k <= need && i + k < s.size(); ++k) {
    const unsigned char b = s[i + k];
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) break;
  }
  if (k == need + 1) return k;
  *bad_len = k;
  return 0;
}

bool IsValidUtf8(absl::string_view s) {
  size_t bad = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t n = WellFormedLen(s, i, &bad);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string Utf8Lossy(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t bad = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t n = WellFormedLen(s, i, &bad);
    if (n > 0) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

// Rust's char::is_whitespace (the Unicode White_Space property).
bool IsWhitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// ----------------------------------------------------------------------------------------
// JSON access with errors that name the path.

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

// ----------------------------------------------------------------------------------------
// Regex: PCRE2 in UTF + UCP mode, which matches Oniguruma (what `tokenizers` uses) on the
// patterns tokenizers ship: \p{L}, \p{N}, (?i:...), lookahead.

class Regex {
 public:
  // `literal`: the pattern is a plain string (the {"String": ...} form).
  static absl::StatusOr<std::unique_ptr<Regex>> Create(const std::string& pattern, bool literal,
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
      return Invalid(path,
                     absl::StrCat("cannot compile regex \"", pattern, "\" at offset ", error_offset,
                                  ": ", reinterpret_cast<const char*>(message)));
    }
    // JIT is an optimization only; the interpreter is used when it is unavailable.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return std::unique_ptr<Regex>(new Regex(code));
  }

  ~Regex() { pcre2_code_free(code_); }

  // All non-overlapping matches in `s` (valid UTF-8), left to right. Like Oniguruma's
  // find_iter, an empty match that ends where the previous match ended is skipped.
  std::vector<Match> FindAll(absl::string_view s) const {
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

 private:
  explicit Regex(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
};

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

// Replaces every match of `regex` in `s` with `content`.
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

// ----------------------------------------------------------------------------------------
// Splitting a string by matches with a delimiter behavior (NormalizedString::split).

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Piece {
  std::string text;
  bool at_origin;  // Starts at offset 0 of the original input (Metaspace prepend_scheme first).
};

struct Part {
  size_t start;
  size_t end;
  bool flag;  // is_match before the behavior is applied; "remove" after.
};

void SplitPiece(const Piece& piece, const std::vector<Match>& matches, SplitBehavior behavior,
                bool invert, std::vector<Piece>* out) {
  const size_t len = piece.text.size();
  std::vector<Part> parts;
  if (len == 0) {
    parts.push_back({0, 0, false});
  } else {
    size_t prev = 0;
    for (const auto& [start, end] : matches) {
      if (prev != start) parts.push_back({prev, start, false});
      parts.push_back({start, end, true});
      prev = end;
    }
    if (prev != len) parts.push_back({prev, len, false});
  }
  if (invert) {
    for (Part& p : parts) p.flag = !p.flag;
  }
  std::vector<Part> splits;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) splits.push_back({p.start, p.end, false});
      break;
    case SplitBehavior::kRemoved:
      splits = parts;
      break;
    case SplitBehavior::kContiguous: {
      bool previous = false;
      for (const Part& p : parts) {
        if (p.flag == previous && !splits.empty()) {
          splits.back().end = p.end;
        } else {
          splits.push_back({p.start, p.end, false});
        }
        previous = p.flag;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous = false;
      for (const Part& p : parts) {
        if (p.flag && !previous && !splits.empty()) {
          splits.back().end = p.end;
        } else {
          splits.push_back({p.start, p.end, false});
        }
        previous = p.flag;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->flag && !previous && !splits.empty()) {
          splits.back().start = it->start;
        } else {
          splits.push_back({it->start, it->end, false});
        }
        previous = it->flag;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  for (const Part& s : splits) {
    if (s.flag || s.start == s.end) continue;
    out->push_back({piece.text.substr(s.start, s.end - s.start), piece.at_origin && s.start == 0});
  }
}

absl::StatusOr<SplitBehavior> ParseBehavior(const Json& obj, absl::string_view path) {
  OFT_ASSIGN_OR_RETURN(std::string b, RequireString(obj, "behavior", path));
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return Invalid(Key(path, "behavior"),
                 absl::StrCat("unknown behavior \"", b,
                              "\" (expected Removed, Isolated, MergedWithPrevious, "
                              "MergedWithNext or Contiguous)"));
}

// ----------------------------------------------------------------------------------------
// Normalizers.

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Normalize(std::string* s) const = 0;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Normalize(std::string* s) const override {
    for (const auto& step : steps_) step->Normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Normalize(std::string* s) const override {
    if (!s->empty()) s->insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> regex, std::string content)
      : regex_(std::move(regex)), content_(std::move(content)) {}
  void Normalize(std::string* s) const override { *s = ReplaceAll(*regex_, *s, content_); }

 private:
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

#ifdef OFT_TOKENIZER_HAVE_ICU
// NFC / NFD / NFKC / NFKD through ICU. The UNormalizer2 instances are process-wide,
// immutable and thread-safe.
class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(const UNormalizer2* norm) : norm_(norm) {}
  void Normalize(std::string* s) const override {
    UErrorCode err = U_ZERO_ERROR;
    int32_t len16 = 0;
    u_strFromUTF8(nullptr, 0, &len16, s->data(), static_cast<int32_t>(s->size()), &err);
    err = U_ZERO_ERROR;
    std::u16string src(len16, u'\0');
    u_strFromUTF8(src.data(), len16, &len16, s->data(), static_cast<int32_t>(s->size()), &err);
    if (U_FAILURE(err)) return;
    if (unorm2_isNormalized(norm_, src.data(), len16, &err) || U_FAILURE(err)) return;
    err = U_ZERO_ERROR;
    int32_t dst_len = unorm2_normalize(norm_, src.data(), len16, nullptr, 0, &err);
    err = U_ZERO_ERROR;
    std::u16string dst(dst_len, u'\0');
    unorm2_normalize(norm_, src.data(), len16, dst.data(), dst_len, &err);
    if (U_FAILURE(err)) return;
    int32_t len8 = 0;
    u_strToUTF8(nullptr, 0, &len8, dst.data(), dst_len, &err);
    err = U_ZERO_ERROR;
    std::string out(len8, '\0');
    u_strToUTF8(out.data(), len8, &len8, dst.data(), dst_len, &err);
    if (U_FAILURE(err)) return;
    *s = std::move(out);
  }

 private:
  const UNormalizer2* norm_;
};
#endif

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& j,
                                                            const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string type, RequireString(j, "type", path));
  if (type == "Sequence") {
    OFT_ASSIGN_OR_RETURN(const Json* list, RequireMember(j, "normalizers", path));
    if (!list->is_array()) return Invalid(Key(path, "normalizers"), "expected an array");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      OFT_ASSIGN_OR_RETURN(auto step,
                           ParseNormalizer((*list)[i], Index(Key(path, "normalizers"), i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") {
    OFT_ASSIGN_OR_RETURN(std::string prepend, RequireString(j, "prepend", path));
    return std::make_unique<PrependNormalizer>(std::move(prepend));
  }
  if (type == "Replace") {
    OFT_ASSIGN_OR_RETURN(auto regex, ParsePattern(j, path));
    OFT_ASSIGN_OR_RETURN(std::string content, RequireString(j, "content", path));
    return std::make_unique<ReplaceNormalizer>(std::move(regex), std::move(content));
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
#ifdef OFT_TOKENIZER_HAVE_ICU
    UErrorCode err = U_ZERO_ERROR;
    const UNormalizer2* norm = type == "NFC"    ? unorm2_getNFCInstance(&err)
                               : type == "NFD"  ? unorm2_getNFDInstance(&err)
                               : type == "NFKC" ? unorm2_getNFKCInstance(&err)
                                                : unorm2_getNFKDInstance(&err);
    if (U_FAILURE(err) || norm == nullptr) {
      return absl::InternalError(
          absl::StrCat("ICU cannot provide the ", type, " normalizer: ", u_errorName(err)));
    }
    return std::make_unique<UnicodeNormalizer>(norm);
#else
    return absl::UnimplementedError(
        absl::StrCat("tokenizer.json: ", Key(path, "type"), " is \"", type,
                     "\": Unicode normalization needs ICU, which this build does not have "
                     "(install libicu-dev and reconfigure)"));
#endif
  }
  return Unsupported(path, "normalizer", type, "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD");
}

// ----------------------------------------------------------------------------------------
// Pre-tokenizers. Each turns a list of pieces into a finer list; empty pieces are dropped.

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void PreTokenize(std::vector<Piece>* pieces) const = 0;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    for (const auto& step : steps_) step->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// The GPT-2 byte-to-unicode table: printable bytes map to themselves, the others to
// U+0100 onwards, so that every byte has a visible, non-space character.
std::array<std::string, 256> BytesToChars() {
  std::array<std::string, 256> table;
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    AppendUtf8(printable ? b : next++, &table[b]);
  }
  return table;
}

const std::array<std::string, 256>& ByteTable() {
  static const auto* table = new std::array<std::string, 256>(BytesToChars());
  return *table;
}

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> split;
    for (Piece& p : *pieces) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      if (regex_ != nullptr) {
        SplitPiece(p, regex_->FindAll(p.text), SplitBehavior::kIsolated, false, &split);
      } else if (!p.text.empty()) {
        split.push_back(std::move(p));
      }
    }
    const auto& table = ByteTable();
    for (Piece& p : split) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char c : p.text) mapped.append(table[c]);
      p.text = std::move(mapped);
    }
    *pieces = std::move(split);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;  // Null when use_regex is false.
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    for (const Piece& p : *pieces) {
      SplitPiece(p, regex_->FindAll(p.text), behavior_, invert_, &out);
    }
    *pieces = std::move(out);
  }

 private:
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool invert_;
};

enum class PrependScheme { kFirst, kNever, kAlways };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    for (Piece& p : *pieces) {
      std::string text;
      text.reserve(p.text.size() + replacement_.size());
      for (char c : p.text) {
        if (c == ' ') {
          text.append(replacement_);
        } else {
          text.push_back(c);
        }
      }
      const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && p.at_origin))) {
        text.insert(0, replacement_);
      }
      Piece piece{std::move(text), p.at_origin};
      if (split_) {
        std::vector<Match> matches;
        for (size_t pos = piece.text.find(replacement_); pos != std::string::npos;
             pos = piece.text.find(replacement_, pos + replacement_.size())) {
          matches.emplace_back(pos, pos + replacement_.size());
        }
        SplitPiece(piece, matches, SplitBehavior::kMergedWithNext, false, &out);
      } else if (!piece.text.empty()) {
        out.push_back(std::move(piece));
      }
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

absl::StatusOr<PrependScheme> ParsePrependScheme(const Json& j, const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::optional<std::string> s, OptionalString(j, "prepend_scheme", path));
  OFT_ASSIGN_OR_RETURN(bool add_prefix_space, OptionalBool(j, "add_prefix_space", path, true));
  PrependScheme scheme = PrependScheme::kAlways;
  if (s.has_value()) {
    if (*s == "first") {
      scheme = PrependScheme::kFirst;
    } else if (*s == "never") {
      scheme = PrependScheme::kNever;
    } else if (*s == "always") {
      scheme = PrependScheme::kAlways;
    } else {
      return Invalid(Key(path, "prepend_scheme"),
                     absl::StrCat("unknown value \"", *s, "\" (expected first, never or always)"));
    }
  }
  if (!add_prefix_space) {
    if (scheme != PrependScheme::kAlways && scheme != PrependScheme::kNever) {
      return Invalid(path, "add_prefix_space false contradicts prepend_scheme");
    }
    scheme = PrependScheme::kNever;
  }
  return scheme;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& j,
                                                                const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string type, RequireString(j, "type", path));
  if (type == "Sequence") {
    OFT_ASSIGN_OR_RETURN(const Json* list, RequireMember(j, "pretokenizers", path));
    if (!list->is_array()) return Invalid(Key(path, "pretokenizers"), "expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      OFT_ASSIGN_OR_RETURN(auto step,
                           ParsePreTokenizer((*list)[i], Index(Key(path, "pretokenizers"), i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "ByteLevel") {
    OFT_ASSIGN_OR_RETURN(bool add_prefix_space, OptionalBool(j, "add_prefix_space", path, true));
    OFT_ASSIGN_OR_RETURN(bool use_regex, OptionalBool(j, "use_regex", path, true));
    std::unique_ptr<Regex> regex;
    if (use_regex) {
      OFT_ASSIGN_OR_RETURN(regex, Regex::Create(kGpt2Pattern, false, path));
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(regex));
  }
  if (type == "Split") {
    OFT_ASSIGN_OR_RETURN(auto regex, ParsePattern(j, path));
    OFT_ASSIGN_OR_RETURN(SplitBehavior behavior, ParseBehavior(j, path));
    OFT_ASSIGN_OR_RETURN(bool invert, OptionalBool(j, "invert", path, false));
    return std::make_unique<SplitPreTokenizer>(std::move(regex), behavior, invert);
  }
  if (type == "Metaspace") {
    OFT_ASSIGN_OR_RETURN(std::string replacement, RequireChar(j, "replacement", path));
    OFT_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(j, path));
    OFT_ASSIGN_OR_RETURN(bool split, OptionalBool(j, "split", path, true));
    return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme, split);
  }
  return Unsupported(path, "pre_tokenizer", type, "Sequence, ByteLevel, Split, Metaspace");
}

// ----------------------------------------------------------------------------------------
// BPE model.

class BpeModel {
 public:
  static absl::StatusOr<std::unique_ptr<BpeModel>> Parse(const Json& j, const std::string& path);

  // Appends the ids of one pre-tokenized piece.
  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  const std::string* IdToToken(int32_t id) const {
    auto it = vocab_r_.find(id);
    return it == vocab_r_.end() ? nullptr : &it->second;
  }
  int32_t max_id() const { return max_id_; }

 private:
  struct MergeInfo {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const MergeInfo* FindMerge(int32_t a, int32_t b) const {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<int32_t, std::string> vocab_r_;
  absl::flat_hash_map<uint64_t, MergeInfo> merges_;
  std::optional<int32_t> unk_id_;
  std::optional<std::string> continuing_subword_prefix_;
  std::optional<std::string> end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_;  // Id of "<0xXX>", or -1.
  int32_t max_id_ = -1;
};

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Parse(const Json& j, const std::string& path) {
  auto model = std::make_unique<BpeModel>();
  OFT_ASSIGN_OR_RETURN(const Json* vocab, RequireMember(j, "vocab", path));
  const std::string vpath = Key(path, "vocab");
  if (!vocab->is_object()) {
    return Invalid(vpath, absl::StrCat("expected an object {token: id}, got ", vocab->type_name()));
  }
  for (const auto& [token, id_json] : vocab->items()) {
    OFT_ASSIGN_OR_RETURN(int32_t id, AsId(id_json, Key(vpath, absl::StrCat("\"", token, "\""))));
    if (!IsValidUtf8(token)) return Invalid(vpath, "a token is not valid UTF-8");
    model->vocab_[token] = id;
    model->vocab_r_[id] = token;
    model->max_id_ = std::max(model->max_id_, id);
  }

  OFT_ASSIGN_OR_RETURN(std::optional<std::string> unk, OptionalString(j, "unk_token", path));
  if (unk.has_value()) {
    model->unk_id_ = model->TokenToId(*unk);
    if (!model->unk_id_.has_value()) {
      return Invalid(Key(path, "unk_token"), absl::StrCat("\"", *unk, "\" is not in ", vpath));
    }
  }
  OFT_ASSIGN_OR_RETURN(model->continuing_subword_prefix_,
                       OptionalString(j, "continuing_subword_prefix", path));
  OFT_ASSIGN_OR_RETURN(model->end_of_word_suffix_, OptionalString(j, "end_of_word_suffix", path));
  OFT_ASSIGN_OR_RETURN(model->fuse_unk_, OptionalBool(j, "fuse_unk", path, false));
  OFT_ASSIGN_OR_RETURN(model->byte_fallback_, OptionalBool(j, "byte_fallback", path, false));
  OFT_ASSIGN_OR_RETURN(model->ignore_merges_, OptionalBool(j, "ignore_merges", path, false));
  if (const Json* dropout = Member(j, "dropout"); dropout != nullptr) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      return absl::UnimplementedError(absl::StrCat(
          "tokenizer.json: ", Key(path, "dropout"), " is ", dropout->dump(),
          ": BPE dropout is a training-time augmentation and is not supported; set it to null"));
    }
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    model->byte_ids_[b] = model->TokenToId(name).value_or(-1);
  }

  OFT_ASSIGN_OR_RETURN(const Json* merges, RequireMember(j, "merges", path));
  const std::string mpath = Key(path, "merges");
  if (!merges->is_array()) {
    return Invalid(mpath, absl::StrCat("expected an array, got ", merges->type_name()));
  }
  const size_t prefix_len =
      model->continuing_subword_prefix_ ? model->continuing_subword_prefix_->size() : 0;
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& m = (*merges)[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) {
        return Invalid(
            Index(mpath, i),
            absl::StrCat("expected \"left right\" (two tokens separated by a space), got \"", s,
                         "\""));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return Invalid(
          Index(mpath, i),
          absl::StrCat("expected \"left right\" or [\"left\", \"right\"], got ", m.dump()));
    }
    const auto a_id = model->TokenToId(a);
    const auto b_id = model->TokenToId(b);
    // With a continuing_subword_prefix ("##"), "a" + "##b" makes "ab".
    const bool b_prefixed =
        prefix_len > 0 && b.compare(0, prefix_len, *model->continuing_subword_prefix_) == 0;
    const std::string merged = a + b.substr(b_prefixed ? prefix_len : 0);
    const auto new_id = model->TokenToId(merged);
    for (const auto& [tok, id] : {std::pair<const std::string*, std::optional<int32_t>>(&a, a_id),
                                  {&b, b_id},
                                  {&merged, new_id}}) {
      if (!id.has_value()) {
        return Invalid(Index(mpath, i), absl::StrCat("token \"", *tok, "\" is not in ", vpath));
      }
    }
    // A repeated pair keeps its last rank, as in `tokenizers`.
    model->merges_[PairKey(*a_id, *b_id)] = MergeInfo{static_cast<int32_t>(i), *new_id};
  }
  return model;
}

void BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = TokenToId(word); id.has_value()) {
      ids->push_back(*id);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool removed;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](int32_t id) {
    const int32_t n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, false});
  };
  std::optional<int32_t> pending_unk;  // The unk being fused (fuse_unk) or not yet added.
  std::string s;
  for (size_t i = 0; i < word.size();) {
    const size_t n = Utf8SeqLen(word[i]);
    const bool first = i == 0;
    const bool last = i + n >= word.size();
    s.clear();
    if (!first && continuing_subword_prefix_) s.append(*continuing_subword_prefix_);
    s.append(word.data() + i, n);
    if (last && end_of_word_suffix_) s.append(*end_of_word_suffix_);
    i += n;
    if (auto id = TokenToId(s); id.has_value()) {
      if (pending_unk) add(*pending_unk);
      pending_unk.reset();
      add(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
      if (all) {
        // Like `tokenizers`, a pending unk is not flushed before the byte tokens.
        for (unsigned char c : s) add(byte_ids_[c]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) add(*pending_unk);
      pending_unk = unk_id_;
    }
  }
  if (pending_unk) add(*pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const {  // Max-heap: lowest rank, then leftmost, on top.
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Candidate> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Candidate> queue(std::less<Candidate>(), std::move(storage));
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const MergeInfo* m = FindMerge(symbols[k].id, symbols[k + 1].id)) {
      queue.push({m->rank, static_cast<int32_t>(k), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.removed || cur.next < 0) continue;
    Symbol& right = symbols[cur.next];
    const MergeInfo* m = FindMerge(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // Stale entry.
    cur.id = top.new_id;
    right.removed = true;
    cur.next = right.next;
    if (cur.next >= 0) symbols[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const MergeInfo* pm = FindMerge(symbols[cur.prev].id, cur.id)) {
        queue.push({pm->rank, cur.prev, pm->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const MergeInfo* nm = FindMerge(cur.id, symbols[cur.next].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (const Symbol& sym : symbols) {
    if (!sym.removed) ids->push_back(sym.id);
  }
}

// ----------------------------------------------------------------------------------------
// Post-processors (single sequence only).

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens around the ids of one sequence.
  virtual void Process(std::vector<int32_t>* ids) const = 0;
  // The ids this processor puts before / after the sequence, if any.
  virtual void SpecialIds(std::optional<int32_t>* /*before*/,
                          std::optional<int32_t>* /*after*/) const {}
};

class NoopPostProcessor : public PostProcessor {
 public:
  void Process(std::vector<int32_t>* /*ids*/) const override {}
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void Process(std::vector<int32_t>* ids) const override {
    for (const auto& step : steps_) step->Process(ids);
  }
  void SpecialIds(std::optional<int32_t>* before, std::optional<int32_t>* after) const override {
    for (const auto& step : steps_) step->SpecialIds(before, after);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// TemplateProcessing's `single` template, and the fixed cls/sep of Roberta and Bert.
class TemplatePostProcessor : public PostProcessor {
 public:
  TemplatePostProcessor(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void Process(std::vector<int32_t>* ids) const override {
    ids->insert(ids->begin(), before_.begin(), before_.end());
    ids->insert(ids->end(), after_.begin(), after_.end());
  }
  void SpecialIds(std::optional<int32_t>* before, std::optional<int32_t>* after) const override {
    if (!before_.empty()) *before = before_.front();
    if (!after_.empty()) *after = after_.front();
  }

 private:
  std::vector<int32_t> before_;
  std::vector<int32_t> after_;
};

absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const Json& j,
                                                                  const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string type, RequireString(j, "type", path));
  if (type == "ByteLevel") return std::make_unique<NoopPostProcessor>();
  if (type == "Sequence") {
    OFT_ASSIGN_OR_RETURN(const Json* list, RequireMember(j, "processors", path));
    if (!list->is_array()) return Invalid(Key(path, "processors"), "expected an array");
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      OFT_ASSIGN_OR_RETURN(auto step,
                           ParsePostProcessor((*list)[i], Index(Key(path, "processors"), i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePostProcessor>(std::move(steps));
  }
  if (type == "TemplateProcessing") {
    OFT_ASSIGN_OR_RETURN(const Json* single, RequireMember(j, "single", path));
    const std::string spath = Key(path, "single");
    if (!single->is_array()) return Invalid(spath, "expected an array of template pieces");
    const Json* specials = Member(j, "special_tokens");
    std::vector<int32_t> before, after;
    bool seen_sequence = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const Json& item = (*single)[i];
      const std::string ipath = Index(spath, i);
      if (const Json* seq = Member(item, "Sequence"); seq != nullptr) {
        if (seen_sequence) return Invalid(ipath, "the single template has $A twice");
        seen_sequence = true;
        continue;
      }
      const Json* sp = Member(item, "SpecialToken");
      if (sp == nullptr) {
        return Invalid(ipath,
                       absl::StrCat("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}, got ",
                                    item.dump()));
      }
      OFT_ASSIGN_OR_RETURN(std::string name, RequireString(*sp, "id", Key(ipath, "SpecialToken")));
      const Json* entry = specials != nullptr ? Member(*specials, name.c_str()) : nullptr;
      if (entry == nullptr) {
        return Invalid(Key(path, "special_tokens"),
                       absl::StrCat("no entry for \"", name, "\" used by ", ipath));
      }
      const std::string epath = Key(Key(path, "special_tokens"), name);
      OFT_ASSIGN_OR_RETURN(const Json* ids, RequireMember(*entry, "ids", epath));
      if (!ids->is_array()) return Invalid(Key(epath, "ids"), "expected an array of ids");
      for (size_t k = 0; k < ids->size(); ++k) {
        OFT_ASSIGN_OR_RETURN(int32_t id, AsId((*ids)[k], Index(Key(epath, "ids"), k)));
        (seen_sequence ? after : before).push_back(id);
      }
    }
    if (!seen_sequence) return Invalid(spath, "the single template has no $A sequence");
    return std::make_unique<TemplatePostProcessor>(std::move(before), std::move(after));
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    std::vector<int32_t> ids[2];
    const char* keys[2] = {"cls", "sep"};
    for (int k = 0; k < 2; ++k) {
      OFT_ASSIGN_OR_RETURN(const Json* pair, RequireMember(j, keys[k], path));
      if (!pair->is_array() || pair->size() != 2) {
        return Invalid(Key(path, keys[k]), "expected [token, id]");
      }
      OFT_ASSIGN_OR_RETURN(int32_t id, AsId((*pair)[1], Index(Key(path, keys[k]), 1)));
      ids[k].push_back(id);
    }
    return std::make_unique<TemplatePostProcessor>(std::move(ids[0]), std::move(ids[1]));
  }
  return Unsupported(path, "post_processor", type,
                     "TemplateProcessing, ByteLevel, Sequence, RobertaProcessing, BertProcessing");
}

// ----------------------------------------------------------------------------------------
// Decoders: each transforms the list of token strings; the results are concatenated.

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

class ByteLevelDecoder : public Decoder {
 public:
  ByteLevelDecoder() {
    const auto& table = ByteTable();
    for (int b = 0; b < 256; ++b) char_to_byte_[DecodeUtf8(table[b], 0)] = static_cast<char>(b);
  }
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& t : *tokens) {
      const size_t mark = bytes.size();
      bool all = true;
      for (size_t i = 0; i < t.size() && all; i += Utf8SeqLen(t[i])) {
        auto it = char_to_byte_.find(DecodeUtf8(t, i));
        if (it == char_to_byte_.end()) {
          all = false;
        } else {
          bytes.push_back(it->second);
        }
      }
      // A token with a character outside the byte table (an added token, say) is kept as is.
      if (!all) {
        bytes.resize(mark);
        bytes.append(t);
      }
    }
    tokens->assign(1, Utf8Lossy(bytes));
  }

 private:
  absl::flat_hash_map<uint32_t, char> char_to_byte_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> regex, std::string content)
      : regex_(std::move(regex)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) t = ReplaceAll(*regex_, t, content_);
  }

 private:
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    const auto flush = [&] {
      if (pending.empty()) return;
      if (IsValidUtf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& t : *tokens) {
      int byte = ParseByteToken(t);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  // "<0xAB>" -> 0xAB; anything else -> -1.
  static int ParseByteToken(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    const auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    if (lo < 0) return -1;
    if (t[3] == '+') return lo;  // Rust's u8::from_str_radix accepts a leading '+'.
    if (hi < 0) return -1;
    return hi * 16 + lo;
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    tokens->assign(1, absl::StrJoin(*tokens, ""));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(uint32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      std::vector<size_t> offsets;  // Byte offset of each character, then the end.
      for (size_t i = 0; i < t.size(); i += Utf8SeqLen(t[i])) offsets.push_back(i);
      const size_t n = offsets.size();
      offsets.push_back(t.size());
      size_t begin = 0;
      while (begin < start_ && begin < n && DecodeUtf8(t, offsets[begin]) == content_) ++begin;
      size_t end = n;
      for (size_t k = 0; k < stop_ && end > begin; ++k) {
        if (DecodeUtf8(t, offsets[end - 1]) != content_) break;
        --end;
      }
      t = t.substr(offsets[begin], offsets[end] - offsets[begin]);
    }
  }

 private:
  uint32_t content_;
  size_t start_;
  size_t stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme)
      : replacement_(std::move(replacement)), scheme_(scheme) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      const bool drop = i == 0 && scheme_ != PrependScheme::kNever;
      std::string out;
      for (size_t k = 0; k < t.size();) {
        if (t.compare(k, replacement_.size(), replacement_) == 0) {
          if (!drop) out.push_back(' ');
          k += replacement_.size();
        } else {
          const size_t n = Utf8SeqLen(t[k]);
          out.append(t, k, n);
          k += n;
        }
      }
      t = std::move(out);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const Json& j, const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string type, RequireString(j, "type", path));
  if (type == "Sequence") {
    OFT_ASSIGN_OR_RETURN(const Json* list, RequireMember(j, "decoders", path));
    if (!list->is_array()) return Invalid(Key(path, "decoders"), "expected an array");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      OFT_ASSIGN_OR_RETURN(auto step, ParseDecoder((*list)[i], Index(Key(path, "decoders"), i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    OFT_ASSIGN_OR_RETURN(auto regex, ParsePattern(j, path));
    OFT_ASSIGN_OR_RETURN(std::string content, RequireString(j, "content", path));
    return std::make_unique<ReplaceDecoder>(std::move(regex), std::move(content));
  }
  if (type == "Strip") {
    OFT_ASSIGN_OR_RETURN(std::string content, RequireChar(j, "content", path));
    OFT_ASSIGN_OR_RETURN(size_t start, OptionalCount(j, "start", path, 0));
    OFT_ASSIGN_OR_RETURN(size_t stop, OptionalCount(j, "stop", path, 0));
    return std::make_unique<StripDecoder>(DecodeUtf8(content, 0), start, stop);
  }
  if (type == "Metaspace") {
    OFT_ASSIGN_OR_RETURN(std::string replacement, RequireChar(j, "replacement", path));
    OFT_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(j, path));
    return std::make_unique<MetaspaceDecoder>(std::move(replacement), scheme);
  }
  return Unsupported(path, "decoder", type,
                     "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace");
}

// ----------------------------------------------------------------------------------------
// Added tokens: leftmost-longest matching over a byte trie.

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
  std::string decode_text;  // What Decode feeds the decoder: the normalized content if normalized.
};

struct Segment {
  size_t start;
  size_t end;
  int32_t id;  // The added token's id, or -1 for text.
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() : nodes_(1) { first_byte_.fill(false); }

  void Add(const std::string& pattern, const AddedToken* token) {
    if (pattern.empty()) return;
    int32_t node = 0;
    for (unsigned char c : pattern) {
      auto it = nodes_[node].next.find(c);
      if (it == nodes_[node].next.end()) {
        nodes_.emplace_back();
        it = nodes_[node].next.emplace(c, static_cast<int32_t>(nodes_.size() - 1)).first;
      }
      node = it->second;
    }
    if (nodes_[node].token == nullptr) nodes_[node].token = token;
    first_byte_[static_cast<unsigned char>(pattern[0])] = true;
    empty_ = false;
  }

  // Splits `s` into text and added-token segments covering it (AddedVocabulary::find_matches).
  std::vector<Segment> Split(absl::string_view s) const {
    std::vector<Segment> out;
    if (empty_ || s.empty()) {
      out.push_back({0, s.size(), -1});
      return out;
    }
    size_t start_offset = 0;
    size_t pos = 0;
    while (pos < s.size()) {
      size_t start = 0, stop = 0;
      const AddedToken* token = FindFrom(s, pos, &start, &stop);
      if (token == nullptr) break;
      pos = stop;
      if (token->single_word) {
        const bool start_space = start == 0 || !EndsWithWord(s.substr(0, start));
        const bool stop_space = stop == s.size() || !StartsWithWord(s.substr(stop));
        if (!start_space || !stop_space) continue;
      }
      if (token->lstrip) {
        size_t k = start;
        while (k > 0) {
          size_t b = k - 1;
          while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
          if (!IsWhitespace(DecodeUtf8(s, b))) break;
          k = b;
        }
        start = std::max(k, start_offset);
      }
      if (token->rstrip) {
        while (stop < s.size() && IsWhitespace(DecodeUtf8(s, stop))) stop += Utf8SeqLen(s[stop]);
      }
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, token->id});
      start_offset = stop;
    }
    if (start_offset != s.size()) out.push_back({start_offset, s.size(), -1});
    return out;
  }

 private:
  struct Node {
    std::map<unsigned char, int32_t> next;
    const AddedToken* token = nullptr;
  };

  const AddedToken* FindFrom(absl::string_view s, size_t from, size_t* start, size_t* stop) const {
    for (size_t i = from; i < s.size(); ++i) {
      if (!first_byte_[static_cast<unsigned char>(s[i])]) continue;
      const AddedToken* best = nullptr;
      int32_t node = 0;
      for (size_t k = i; k < s.size(); ++k) {
        auto it = nodes_[node].next.find(static_cast<unsigned char>(s[k]));
        if (it == nodes_[node].next.end()) break;
        node = it->second;
        if (nodes_[node].token != nullptr) {
          best = nodes_[node].token;
          *stop = k + 1;
        }
      }
      if (best != nullptr) {
        *start = i;
        return best;
      }
    }
    return nullptr;
  }

  static bool IsWordChar(absl::string_view s, size_t i) {
    // Approximates Rust regex's Unicode \w with PCRE2-free checks: ASCII word characters and
    // every non-ASCII non-whitespace character count as word characters.
    const uint32_t c = DecodeUtf8(s, i);
    if (c < 0x80) return std::isalnum(static_cast<int>(c)) || c == '_';
    return !IsWhitespace(c);
  }
  static bool EndsWithWord(absl::string_view s) {
    if (s.empty()) return false;
    size_t b = s.size() - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
    return IsWordChar(s, b);
  }
  static bool StartsWithWord(absl::string_view s) { return !s.empty() && IsWordChar(s, 0); }

  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_;
  bool empty_ = true;
};

}  // namespace

// ----------------------------------------------------------------------------------------

class TokenizerPipeline {
 public:
  static absl::StatusOr<std::unique_ptr<TokenizerPipeline>> Parse(const Json& root);

  std::vector<int32_t> Encode(absl::string_view text, bool add_special_tokens) const;
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const {
    if (auto it = added_by_content_.find(token); it != added_by_content_.end()) return it->second;
    return model_->TokenToId(token);
  }
  const std::string* IdToToken(int32_t id) const {
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return &it->second->content;
    return model_->IdToToken(id);
  }

  std::vector<std::unique_ptr<AddedToken>> added_;
  absl::flat_hash_map<std::string, int32_t> added_by_content_;
  absl::flat_hash_map<int32_t, const AddedToken*> added_by_id_;
  absl::flat_hash_set<std::string> special_contents_;
  AddedTokenMatcher raw_matcher_;         // Tokens with normalized: false.
  AddedTokenMatcher normalized_matcher_;  // Tokens with normalized: true (normalized content).
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
};

absl::StatusOr<std::unique_ptr<TokenizerPipeline>> TokenizerPipeline::Parse(const Json& root) {
  if (!root.is_object()) {
    return Invalid("(root)", absl::StrCat("expected an object, got ", root.type_name()));
  }
  auto p = std::make_unique<TokenizerPipeline>();

  OFT_ASSIGN_OR_RETURN(const Json* model, RequireMember(root, "model", ""));
  // A model without "type" is a BPE in the tokenizers serialization (untagged enum), but the
  // `vocab`/`merges` fields must then be present; every current file has the tag.
  OFT_ASSIGN_OR_RETURN(std::optional<std::string> model_type,
                       OptionalString(*model, "type", "model"));
  if (model_type.has_value() && *model_type != "BPE") {
    return Unsupported("model", "model", *model_type, "BPE");
  }
  OFT_ASSIGN_OR_RETURN(p->model_, BpeModel::Parse(*model, "model"));

  if (const Json* n = Member(root, "normalizer"); n != nullptr) {
    OFT_ASSIGN_OR_RETURN(p->normalizer_, ParseNormalizer(*n, "normalizer"));
  }
  if (const Json* pt = Member(root, "pre_tokenizer"); pt != nullptr) {
    OFT_ASSIGN_OR_RETURN(p->pre_tokenizer_, ParsePreTokenizer(*pt, "pre_tokenizer"));
  }
  if (const Json* d = Member(root, "decoder"); d != nullptr) {
    OFT_ASSIGN_OR_RETURN(p->decoder_, ParseDecoder(*d, "decoder"));
  }

  if (const Json* added = Member(root, "added_tokens"); added != nullptr) {
    if (!added->is_array()) return Invalid("added_tokens", "expected an array");
    for (size_t i = 0; i < added->size(); ++i) {
      const Json& t = (*added)[i];
      const std::string path = Index("added_tokens", i);
      auto token = std::make_unique<AddedToken>();
      OFT_ASSIGN_OR_RETURN(const Json* id, RequireMember(t, "id", path));
      OFT_ASSIGN_OR_RETURN(token->id, AsId(*id, Key(path, "id")));
      OFT_ASSIGN_OR_RETURN(token->content, RequireString(t, "content", path));
      OFT_ASSIGN_OR_RETURN(token->special, OptionalBool(t, "special", path, false));
      OFT_ASSIGN_OR_RETURN(token->single_word, OptionalBool(t, "single_word", path, false));
      OFT_ASSIGN_OR_RETURN(token->lstrip, OptionalBool(t, "lstrip", path, false));
      OFT_ASSIGN_OR_RETURN(token->rstrip, OptionalBool(t, "rstrip", path, false));
      OFT_ASSIGN_OR_RETURN(token->normalized, OptionalBool(t, "normalized", path, !token->special));
      if (!IsValidUtf8(token->content)) return Invalid(Key(path, "content"), "not valid UTF-8");
      p->added_by_content_[token->content] = token->id;
      p->added_by_id_[token->id] = token.get();
      p->added_.push_back(std::move(token));
    }
  }
  for (const auto& token : p->added_) {
    token->decode_text = token->content;
    if (token->special) p->special_contents_.insert(token->content);
    if (token->normalized) {
      if (p->normalizer_ != nullptr) p->normalizer_->Normalize(&token->decode_text);
      p->normalized_matcher_.Add(token->decode_text, token.get());
    } else {
      p->raw_matcher_.Add(token->content, token.get());
    }
  }

  if (const Json* pp = Member(root, "post_processor"); pp != nullptr) {
    OFT_ASSIGN_OR_RETURN(p->post_processor_, ParsePostProcessor(*pp, "post_processor"));
  }
  return p;
}

std::vector<int32_t> TokenizerPipeline::Encode(absl::string_view text,
                                               bool add_special_tokens) const {
  std::string repaired;
  if (!IsValidUtf8(text)) {
    repaired = Utf8Lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  std::vector<Piece> pieces;
  for (const Segment& raw : raw_matcher_.Split(text)) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    if (raw.start == raw.end) continue;
    std::string normalized(text.substr(raw.start, raw.end - raw.start));
    if (normalizer_ != nullptr) normalizer_->Normalize(&normalized);
    for (const Segment& seg : normalized_matcher_.Split(normalized)) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      if (seg.start == seg.end) continue;
      pieces.clear();
      pieces.push_back(
          {normalized.substr(seg.start, seg.end - seg.start), raw.start == 0 && seg.start == 0});
      if (pre_tokenizer_ != nullptr) pre_tokenizer_->PreTokenize(&pieces);
      for (const Piece& piece : pieces) model_->Tokenize(piece.text, &ids);
    }
  }
  if (add_special_tokens && post_processor_ != nullptr) post_processor_->Process(&ids);
  return ids;
}

std::string TokenizerPipeline::Decode(absl::Span<const int32_t> ids,
                                      bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    // Like `tokenizers`: a normalized added token decodes from its normalized form (so the
    // decoder can invert the normalizer), and skipping goes by the special tokens' text.
    const std::string* token = nullptr;
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
      token = &it->second->decode_text;
    } else {
      token = model_->IdToToken(id);
    }
    if (token == nullptr) continue;
    if (skip_special_tokens && special_contents_.contains(*token)) continue;
    tokens.push_back(*token);
  }
  if (decoder_ == nullptr) return absl::StrJoin(tokens, " ");
  decoder_->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

}  // namespace internal

// ------------------------------------------------------------------------------------------

namespace {

// The content of a tokenizer_config.json special-token entry: "text" or {"content": "text"}.
std::optional<std::string> ConfigToken(const nlohmann::json& config, const char* key) {
  const nlohmann::json* m = internal::Member(config, key);
  if (m == nullptr) return std::nullopt;
  if (m->is_string()) return m->get<std::string>();
  if (const nlohmann::json* c = internal::Member(*m, "content"); c != nullptr && c->is_string()) {
    return c->get<std::string>();
  }
  return std::nullopt;
}

absl::StatusOr<nlohmann::json> ParseJson(const std::string& text, absl::string_view what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not valid JSON (error at byte ", e.byte, "): ", e.what()));
  }
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<internal::TokenizerPipeline> pipeline)
    : pipeline_(std::move(pipeline)) {}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  const auto read = [](const std::string& p) -> std::optional<std::string> {
    std::ifstream in(p, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  std::optional<std::string> text = read(path);
  if (!text.has_value()) {
    return absl::NotFoundError(absl::StrCat("cannot read tokenizer file ", path));
  }
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  std::string config = read(dir + "tokenizer_config.json").value_or("");
  auto tokenizer = FromJson(*text, config);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    const std::string& json_text, const std::string& tokenizer_config_json) {
  OFT_ASSIGN_OR_RETURN(nlohmann::json root, ParseJson(json_text, "tokenizer.json"));
  std::unique_ptr<internal::TokenizerPipeline> pipeline;
  try {
    OFT_ASSIGN_OR_RETURN(pipeline, internal::TokenizerPipeline::Parse(root));
  } catch (const nlohmann::json::exception& e) {
    // The accessors check types first; this is a safety net so no exception escapes.
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer(std::move(pipeline)));
  const internal::TokenizerPipeline& p = *tokenizer->pipeline_;

  int32_t max_id = p.model_->max_id();
  for (const auto& token : p.added_) {
    max_id = std::max(max_id, token->id);
    if (token->special) tokenizer->special_ids_.insert(token->id);
  }
  tokenizer->vocab_size_ = max_id + 1;

  if (p.post_processor_ != nullptr) {
    p.post_processor_->SpecialIds(&tokenizer->bos_id_, &tokenizer->eos_id_);
  }
  const auto first_known =
      [&p](std::initializer_list<const char*> names) -> std::optional<int32_t> {
    for (const char* name : names) {
      if (auto id = p.TokenToId(name); id.has_value()) return id;
    }
    return std::nullopt;
  };
  if (!tokenizer->bos_id_) tokenizer->bos_id_ = first_known({"<s>", "<|begin_of_text|>", "<bos>"});
  if (!tokenizer->eos_id_) {
    tokenizer->eos_id_ = first_known({"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"});
  }
  if (!tokenizer_config_json.empty()) {
    OFT_ASSIGN_OR_RETURN(nlohmann::json config,
                         ParseJson(tokenizer_config_json, "tokenizer_config.json"));
    for (auto [key, field] : {std::pair("bos_token", &tokenizer->bos_id_),
                              std::pair("eos_token", &tokenizer->eos_id_)}) {
      std::optional<std::string> name = ConfigToken(config, key);
      if (!name.has_value()) continue;
      std::optional<int32_t> id = p.TokenToId(*name);
      if (!id.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", key, " \"", *name,
                                                       "\" is not in the vocabulary"));
      }
      *field = id;
    }
  }
  return tokenizer;
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text, bool add_special_tokens) const {
  return pipeline_->Encode(text, add_special_tokens);
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  return pipeline_->Decode(ids, skip_special_tokens);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  return pipeline_->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  const std::string* token = pipeline_->IdToToken(id);
  if (token == nullptr) return std::nullopt;
  return *token;
}

}  // namespace oft
