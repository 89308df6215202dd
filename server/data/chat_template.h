// Built-in chat templates: render a validated row into text segments, each
// marked with whether the loss is taken on it.
//
// Only a few templates are built in, written by hand to produce exactly the
// text that the model's own Jinja template produces (no Jinja engine):
//
//   llama3   <|begin_of_text|> then per message
//            <|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>
//            (Llama 3 / 3.1 / 3.2 instruct. The 3.1+ templates also emit a
//            "Cutting Knowledge Date" system preamble and tool blocks; those
//            are not reproduced.)
//   chatml   per message <|im_start|>{role}\n{content}<|im_end|>\n
//   qwen2    chatml, plus "<|im_start|>system\nYou are a helpful
//            assistant.<|im_end|>\n" first when the first message is not a
//            system message (Qwen2 instruct)
//   qwen2.5  as qwen2 with Qwen2.5's default system message "You are Qwen,
//            created by Alibaba Cloud. You are a helpful assistant."
//
// Loss: in chat rows only the content of assistant messages and the
// end-of-turn marker that closes them ("<|eot_id|>" / "<|im_end|>") are
// trained; headers, other roles, the BOS marker and the newline after
// "<|im_end|>" are not. Special-token markers appear as text in the segments;
// the encoder must map them to their token ids (see TextEncoder in
// batching.h).
//
// Thread safety: all functions are pure and may be called concurrently.
#ifndef OFT_SERVER_DATA_CHAT_TEMPLATE_H_
#define OFT_SERVER_DATA_CHAT_TEMPLATE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/data/dataset.h"

namespace oft {

enum class ChatTemplateKind { kLlama3, kChatml, kQwen2, kQwen2_5 };

// The name accepted by ParseTemplateName: "llama3", "chatml", "qwen2", "qwen2.5".
absl::string_view TemplateName(ChatTemplateKind kind);

// Maps an explicit template name (case-sensitive, as listed above) to its kind.
// INVALID_ARGUMENT for any other name; the message lists the known names.
absl::StatusOr<ChatTemplateKind> ParseTemplateName(absl::string_view name);

// Recognises the built-in template equivalent to the `chat_template` of a
// Hugging Face tokenizer_config.json (given as its file contents). The field
// may be a string or a list of {"name", "template"} (the "default" entry is
// used). Recognition is by the template's markers, not by running it.
// Errors:
//   INVALID_ARGUMENT: not JSON, malformed `chat_template`, or a template that
//     matches no built-in (the message asks the user to name one explicitly).
//   NOT_FOUND: the config has no `chat_template`.
absl::StatusOr<ChatTemplateKind> DetectTemplate(const std::string& tokenizer_config_json);

// A piece of rendered text. `train` is true when the loss is taken on its tokens.
struct Segment {
  std::string text;
  bool train = false;

  bool operator==(const Segment& other) const = default;
};

// Renders `messages` (as validated by ParseJsonl: known roles, non-blank
// contents) with the template `kind`. With `add_generation_prompt` the text
// ends with the header of an assistant turn, ready for generation. Adjacent
// segments with the same `train` flag are merged, so the result alternates.
std::vector<Segment> RenderChat(ChatTemplateKind kind, absl::Span<const Message> messages,
                                bool add_generation_prompt);

// A row rendered for tokenisation.
struct RenderedExample {
  std::vector<Segment> segments;   // in order; alternating train flags
  bool template_adds_bos = false;  // segments already begin with the BOS marker
  bool append_eos = false;         // add the encoder's EOS, trained, at the end
};

// Renders one row:
//   kText:             {text, train}; EOS appended.
//   kPromptCompletion: {prompt, untrained}, {completion, train}; EOS appended.
//                      The strings are used as they are (no chat template).
//   kChat:             RenderChat(kind, messages, false); no EOS appended (the
//                      template's end-of-turn marker ends each assistant turn).
RenderedExample RenderExample(const Example& example, ChatTemplateKind kind);

}  // namespace oft

#endif  // OFT_SERVER_DATA_CHAT_TEMPLATE_H_
