#include "server/data/internal/text_util.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_format.h"

namespace oft::internal {
namespace {

constexpr size_t kQuoteMaxBytes = 64;

bool InRange(unsigned char c, unsigned char lo, unsigned char hi) { return c >= lo && c <= hi; }

// Length of the well-formed UTF-8 sequence at s[i], storing its code point in
// `*cp`; 0 when the bytes there are not well-formed.
size_t DecodeAt(absl::string_view s, size_t i, char32_t* cp) {
  const size_t n = s.size() - i;
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char b0 = b(0);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  if (InRange(b0, 0xC2, 0xDF)) {
    if (n < 2 || !InRange(b(1), 0x80, 0xBF)) return 0;
    *cp = (char32_t{b0} & 0x1F) << 6 | (b(1) & 0x3F);
    return 2;
  }
  if (InRange(b0, 0xE0, 0xEF)) {
    if (n < 3) return 0;
    const unsigned char lo = b0 == 0xE0 ? 0xA0 : 0x80;  // no overlong forms
    const unsigned char hi = b0 == 0xED ? 0x9F : 0xBF;  // no surrogates
    if (!InRange(b(1), lo, hi) || !InRange(b(2), 0x80, 0xBF)) return 0;
    *cp = (char32_t{b0} & 0x0F) << 12 | (char32_t{b(1)} & 0x3F) << 6 | (b(2) & 0x3F);
    return 3;
  }
  if (InRange(b0, 0xF0, 0xF4)) {
    if (n < 4) return 0;
    const unsigned char lo = b0 == 0xF0 ? 0x90 : 0x80;  // no overlong forms
    const unsigned char hi = b0 == 0xF4 ? 0x8F : 0xBF;  // nothing above U+10FFFF
    if (!InRange(b(1), lo, hi) || !InRange(b(2), 0x80, 0xBF) || !InRange(b(3), 0x80, 0xBF)) {
      return 0;
    }
    *cp = (char32_t{b0} & 0x07) << 18 | (char32_t{b(1)} & 0x3F) << 12 |
          (char32_t{b(2)} & 0x3F) << 6 | (b(3) & 0x3F);
    return 4;
  }
  return 0;
}

// Python's str.isspace(): Unicode White_Space plus the ASCII separators
// U+001C..U+001F.
bool IsSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

}  // namespace

std::optional<size_t> FindInvalidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // Fast path for ASCII.
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    char32_t cp;
    const size_t len = DecodeAt(s, i, &cp);
    if (len == 0) return i;
    i += len;
  }
  return std::nullopt;
}

std::string TruncateUtf8(absl::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return std::string(s);
  size_t cut = max_bytes;
  // Back off over continuation bytes so that no sequence is split.
  for (int k = 0; k < 3 && cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80; ++k) {
    --cut;
  }
  std::string out(s.substr(0, cut));
  out += "...";
  return out;
}

std::string QuoteForMessage(absl::string_view s) {
  const bool cut = s.size() > kQuoteMaxBytes;
  std::string body = TruncateUtf8(s, kQuoteMaxBytes);
  if (cut) body.resize(body.size() - 3);  // drop "...", re-added outside the quotes
  std::string out = "\"";
  size_t i = 0;
  while (i < body.size()) {
    const unsigned char c = static_cast<unsigned char>(body[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20 || c == 0x7F) {
      out += absl::StrFormat("\\u%04x", c);
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else {
      char32_t cp;
      const size_t len = DecodeAt(body, i, &cp);
      if (len == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD for a byte that is not UTF-8
        ++i;
      } else {
        out.append(body, i, len);
        i += len;
      }
    }
  }
  out += '"';
  if (cut) out += "...";
  return out;
}

size_t LeadingSpaceBytes(absl::string_view s) {
  if (s.empty()) return 0;
  char32_t cp;
  const size_t len = DecodeAt(s, 0, &cp);
  return len != 0 && IsSpace(cp) ? len : 0;
}

size_t TrailingSpaceBytes(absl::string_view s) {
  // Find the start of the last sequence: at most 3 continuation bytes back.
  size_t start = s.size();
  for (int k = 0; k < 4 && start > 0; ++k) {
    --start;
    if ((static_cast<unsigned char>(s[start]) & 0xC0) != 0x80) break;
  }
  if (start >= s.size()) return 0;
  char32_t cp;
  const size_t len = DecodeAt(s, start, &cp);
  return len != 0 && start + len == s.size() && IsSpace(cp) ? len : 0;
}

}  // namespace oft::internal
