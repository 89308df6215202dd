// Decoders of tokenizer.json (internal to oft_tokenizer): Sequence, ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace. Each transforms the list of token strings; the
// caller concatenates the result.
//
// Thread safety: immutable after parsing; DecodeChain may run concurrently.
#ifndef OFT_SERVER_MODEL_TOKENIZER_DECODERS_H_
#define OFT_SERVER_MODEL_TOKENIZER_DECODERS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/tokenizer/json_fields.h"

namespace oft::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Transforms `tokens` in place (valid UTF-8 in, valid UTF-8 out).
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// Builds the decoder described by `j` (at JSON `path`).
// Errors: INVALID_ARGUMENT for missing or mistyped fields, naming the path; UNIMPLEMENTED for
// an unsupported type.
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const Json& j, const std::string& path);

}  // namespace oft::tokenizer

#endif  // OFT_SERVER_MODEL_TOKENIZER_DECODERS_H_
