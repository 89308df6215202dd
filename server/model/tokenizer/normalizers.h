// Normalizers of tokenizer.json (internal to oft_tokenizer): Sequence, Prepend, Replace, and
// NFC / NFD / NFKC / NFKD when the build has ICU. Same output as `tokenizers` normalizers on
// valid UTF-8 (offsets are not tracked).
//
// Thread safety: immutable after parsing; Normalize may run concurrently.
#ifndef OFT_SERVER_MODEL_TOKENIZER_NORMALIZERS_H_
#define OFT_SERVER_MODEL_TOKENIZER_NORMALIZERS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/model/tokenizer/json_fields.h"

namespace oft::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `s` (valid UTF-8) in place; the result is valid UTF-8.
  virtual void Normalize(std::string* s) const = 0;
};

// Builds the normalizer described by `j` (at JSON `path`).
// Errors: INVALID_ARGUMENT for missing or mistyped fields, naming the path; UNIMPLEMENTED for
// an unsupported type, or a Unicode normal form in a build without ICU.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& j, const std::string& path);

}  // namespace oft::tokenizer

#endif  // OFT_SERVER_MODEL_TOKENIZER_NORMALIZERS_H_
