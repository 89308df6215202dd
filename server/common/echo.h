// Bounded echo of client input inside error messages.
//
// Errors name what is wrong and often quote the offending value, but a client controls that
// value's size: a 20 KB model name quoted verbatim would push the status message past gRPC's
// metadata limit and turn INVALID_ARGUMENT into RESOURCE_EXHAUSTED. Every quoted client value
// goes through Echo(), which keeps at most kMaxEchoChars characters (on a UTF-8 boundary) and
// marks the cut with "…" and the original length.
#ifndef OFT_SERVER_COMMON_ECHO_H_
#define OFT_SERVER_COMMON_ECHO_H_

#include <cstddef>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace oft {

inline constexpr size_t kMaxEchoChars = 80;
// The longest error message any API (gRPC status, HTTP error body) sends; longer ones are cut
// with Echo(). Keeps a gRPC status well inside the 8 KiB metadata limit.
inline constexpr size_t kMaxStatusMessageBytes = 2048;

// `value` itself when it has at most `max_bytes` bytes; otherwise its first bytes (never
// splitting a UTF-8 sequence) followed by "…(N bytes)". Pure; thread-safe. Header-only, so
// the client library and the gRPC status conversion use it without linking oft_common.
inline std::string Echo(absl::string_view value, size_t max_bytes = kMaxEchoChars) {
  if (value.size() <= max_bytes) return std::string(value);
  size_t cut = max_bytes;
  // Back up over UTF-8 continuation bytes (10xxxxxx) so the kept prefix stays valid text.
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(value.substr(0, cut), "…(", value.size(), " bytes)");
}

}  // namespace oft

#endif  // OFT_SERVER_COMMON_ECHO_H_
