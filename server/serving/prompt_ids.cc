#include "server/serving/prompt_ids.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"

namespace oft {

absl::StatusOr<std::vector<int32_t>> PromptIds(const Tokenizer& tokenizer,
                                               const std::optional<ChatTemplateKind>& chat_template,
                                               const std::string& model_name,
                                               const GenerateParams& params) {
  std::vector<int32_t> ids;
  if (params.text) {
    // As transformers' tokenizer(text): the post-processor's special tokens, nothing else.
    ids = tokenizer.Encode(*params.text, /*add_special_tokens=*/true);
  } else if (params.chat) {
    if (!chat_template) {
      std::vector<std::string> names;
      for (ChatTemplateKind kind : AllTemplateKinds()) names.emplace_back(TemplateName(kind));
      return absl::FailedPreconditionError(absl::StrCat(
          "base model \"", model_name, "\" has no chat template: send the prompt as text, or "
          "start oft_server with --chat_template=", model_name, "=TEMPLATE (known: ",
          absl::StrJoin(names, ", "), ")"));
    }
    OFT_RETURN_IF_ERROR(ValidateChat(*chat_template, *params.chat));
    ChatRenderOptions render;
    render.add_generation_prompt = true;
    render.enable_thinking = params.enable_thinking;
    std::string rendered;
    for (const Segment& s : RenderChat(*chat_template, *params.chat, render)) rendered += s.text;
    ids = tokenizer.Encode(rendered, /*add_special_tokens=*/false);
  }
  if (ids.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");
  return ids;
}

}  // namespace oft
