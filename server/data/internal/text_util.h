// UTF-8 helpers shared by the dataset code. Internal to server/data.
#ifndef OFT_SERVER_DATA_INTERNAL_TEXT_UTIL_H_
#define OFT_SERVER_DATA_INTERNAL_TEXT_UTIL_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace oft::internal {

// Offset of the first byte of `s` that does not start a well-formed UTF-8
// sequence (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF), or nullopt when all of `s` is valid.
std::optional<size_t> FindInvalidUtf8(absl::string_view s);

// The longest prefix of `s` of at most `max_bytes` bytes that does not split a
// UTF-8 sequence, followed by "..." when something was cut.
std::string TruncateUtf8(absl::string_view s, size_t max_bytes);

// `s` as a JSON string literal (quotes, escapes), shortened to about 64 bytes,
// safe to put into an error message whatever `s` holds.
std::string QuoteForMessage(absl::string_view s);

// Bytes taken by one whitespace character (Python str.isspace()) at the start,
// respectively at the end, of `s`; 0 when there is none there.
size_t LeadingSpaceBytes(absl::string_view s);
size_t TrailingSpaceBytes(absl::string_view s);

}  // namespace oft::internal

#endif  // OFT_SERVER_DATA_INTERNAL_TEXT_UTIL_H_
