// The token ids of a generation request's prompt, for the gRPC and HTTP front ends alike
// (Serving::Generate): a text prompt encoded with the tokenizer's special tokens and nothing
// else, equal to transformers' AutoTokenizer(text).input_ids (Tokenizer::special_prefix(); the
// same rule as training's text rows and oft_generate), a chat prompt rendered by
// the model's built-in template with the generation prompt and encoded without special
// tokens (the template writes its own, as apply_chat_template(tokenize=True)).
// Thread-safe (pure over immutable inputs).
#ifndef OFT_SERVER_SERVING_PROMPT_IDS_H_
#define OFT_SERVER_SERVING_PROMPT_IDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/data/chat_template.h"
#include "server/model/tokenizer.h"
#include "server/serving/generate_params.h"

namespace oft {

// Errors: FAILED_PRECONDITION for a chat prompt when `chat_template` is unset (naming
// `model_name`), INVALID_ARGUMENT for a chat the template refuses (ValidateChat) or a
// prompt that encodes to no tokens.
absl::StatusOr<std::vector<int32_t>> PromptIds(const Tokenizer& tokenizer,
                                               const std::optional<ChatTemplateKind>& chat_template,
                                               const std::string& model_name,
                                               const GenerateParams& params);

}  // namespace oft

#endif  // OFT_SERVER_SERVING_PROMPT_IDS_H_
