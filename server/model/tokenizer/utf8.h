// UTF-8 helpers shared by the tokenizer components (internal to oft_tokenizer).
//
// Inside the tokenizer pipeline all text is valid UTF-8: Tokenizer::Encode repairs its input
// with Utf8Lossy first. Functions that take an offset `i` require that `s[i]` starts a
// well-formed sequence unless they say otherwise.
#ifndef OFT_SERVER_MODEL_TOKENIZER_UTF8_H_
#define OFT_SERVER_MODEL_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace oft::tokenizer {

// Length in bytes of the sequence whose lead byte is `lead` (1..4); a continuation or
// invalid lead byte counts as 4, so callers must only pass lead bytes of valid text.
size_t Utf8SeqLen(unsigned char lead);

// The code point of the well-formed sequence starting at s[i].
uint32_t DecodeUtf8(absl::string_view s, size_t i);

// Appends the UTF-8 encoding of `cp` (at most U+10FFFF) to `out`.
void AppendUtf8(uint32_t cp, std::string* out);

// Length of the well-formed UTF-8 sequence at s[i], or 0 when it is ill-formed; then
// `*bad_len` is the length of its maximal subpart (what one U+FFFD replaces, as in Rust's
// String::from_utf8_lossy). s[i] may be any byte.
size_t WellFormedLen(absl::string_view s, size_t i, size_t* bad_len);

// True when all of `s` is well-formed UTF-8 (no surrogates, no overlong forms).
bool IsValidUtf8(absl::string_view s);

// `s` with every maximal ill-formed subpart replaced by U+FFFD (Rust's from_utf8_lossy).
std::string Utf8Lossy(absl::string_view s);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool IsWhitespace(uint32_t c);

}  // namespace oft::tokenizer

#endif  // OFT_SERVER_MODEL_TOKENIZER_UTF8_H_
