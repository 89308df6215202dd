// Post-processors of tokenizer.json, single sequence only (internal to oft_tokenizer):
// TemplateProcessing, ByteLevel (no-op for ids), Sequence, RobertaProcessing, BertProcessing.
//
// Thread safety: immutable after parsing; const methods may run concurrently.
#ifndef OFT_SERVER_MODEL_TOKENIZER_POST_PROCESSORS_H_
#define OFT_SERVER_MODEL_TOKENIZER_POST_PROCESSORS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/tokenizer/json_fields.h"

namespace oft::tokenizer {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens around the ids of one sequence.
  virtual void Process(std::vector<int32_t>* ids) const = 0;
  // Sets `*before` / `*after` to the first id this processor puts before / after the
  // sequence; leaves them as they are when it puts none.
  virtual void SpecialIds(std::optional<int32_t>* /*before*/,
                          std::optional<int32_t>* /*after*/) const {}
  // Wraps `*before` / `*after` (the ids earlier steps put around the sequence) in the ids
  // this processor adds: Process(ids) == *before + ids + *after after calling this on empty
  // vectors.
  virtual void Around(std::vector<int32_t>* /*before*/, std::vector<int32_t>* /*after*/) const {}
};

// Builds the post-processor described by `j` (at JSON `path`).
// Errors: INVALID_ARGUMENT for missing or mistyped fields, a template without (or with two)
// $A, a special token without an entry, naming the path; UNIMPLEMENTED for an unsupported type.
absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const Json& j,
                                                                  const std::string& path);

}  // namespace oft::tokenizer

#endif  // OFT_SERVER_MODEL_TOKENIZER_POST_PROCESSORS_H_
