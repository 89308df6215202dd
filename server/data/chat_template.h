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
//   qwen3    chatml without a default system message, with Qwen3's thinking
//            blocks: an assistant content "<think>R</think>C" is split into
//            reasoning R and answer C; assistant turns after the last user
//            message are written "<think>\nR\n</think>\n\nC" (the last one
//            always, an earlier one when R is not empty), earlier assistant
//            turns keep only C. The generation prompt is
//            "<|im_start|>assistant\n", followed by "<think>\n\n</think>\n\n"
//            when thinking is disabled (ChatRenderOptions::enable_thinking).
//            Tool calls and tool responses are not reproduced.
//   gemma    "<bos>", then per message
//            <start_of_turn>{user|model}\n{content|trim}<end_of_turn>\n
//            (assistant is "model"); a leading system message is folded into
//            the first user turn ("{system}\n\n{content}"), as Gemma 3's
//            template does; roles must then alternate user, model, user, ...
//            (ValidateChat). Generation prompt "<start_of_turn>model\n".
//   phi3     per message <|{role}|>\n{content}<|end|>\n; then the generation
//            prompt "<|assistant|>\n", or without one "<|endoftext|>" (Phi-3's
//            eos_token), as Phi-3's template does.
//
// Loss: in chat rows only the content of assistant messages (with a kept
// thinking block) and the end-of-turn marker that closes them ("<|eot_id|>" /
// "<|im_end|>" / "<end_of_turn>" / "<|end|>") are trained; headers, other
// roles, the BOS marker and the newline after the marker are not.
// Special-token markers appear as text in the segments; the encoder must map
// them to their token ids (see TextEncoder in batching.h).
//
// Thread safety: all functions are pure and may be called concurrently.
#ifndef OFT_SERVER_DATA_CHAT_TEMPLATE_H_
#define OFT_SERVER_DATA_CHAT_TEMPLATE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/data/dataset.h"

namespace oft {

enum class ChatTemplateKind { kLlama3, kChatml, kQwen2, kQwen2_5, kQwen3, kGemma, kPhi3 };

// Every kind, in the order the names are listed in messages.
const std::vector<ChatTemplateKind>& AllTemplateKinds();

// The name accepted by ParseTemplateName: "llama3", "chatml", "qwen2", "qwen2.5",
// "qwen3", "gemma", "phi3".
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
// Both messages list the known names and say how to name one (the
// "chat_template" field of a training job or model).
absl::StatusOr<ChatTemplateKind> DetectTemplate(const std::string& tokenizer_config_json);

// The built-in template equivalent to a template text (Jinja source), by its
// markers: llama3 (<|start_header_id|>, <|eot_id|>), the chatml family
// (<|im_start|>, <|im_end|>; qwen3 when it has <think>, qwen2 / qwen2.5 by their
// default system message), gemma (<start_of_turn>, <end_of_turn>), phi3
// (<|user|>, <|assistant|>, <|end|>). INVALID_ARGUMENT when it matches none or
// the markers of two families; `source` names the file in the message.
absl::StatusOr<ChatTemplateKind> RecogniseTemplate(absl::string_view template_text,
                                                   absl::string_view source);

// The template of a Hugging Face model directory, as transformers picks it:
// `chat_template.jinja` when present, else tokenizer_config.json's
// `chat_template` (DetectTemplate). NOT_FOUND when neither file gives one.
absl::StatusOr<ChatTemplateKind> DetectTemplateInDir(const std::string& model_dir);

// The template a training job renders its chat rows with: `explicit_name` when given
// (ParseTemplateName's errors), else the model directory's (DetectTemplateInDir). A model
// without any template trains chat rows with chatml; a model whose template is not a
// built-in one is an error (DetectTemplate's, listing the known names and how to name one)
// only when `has_chat_rows`, since text rows need no template.
absl::StatusOr<ChatTemplateKind> ResolveTrainingTemplate(
    const std::optional<std::string>& explicit_name, const std::string& model_dir,
    bool has_chat_rows);

// A piece of rendered text. `train` is true when the loss is taken on its tokens.
struct Segment {
  std::string text;
  bool train = false;

  bool operator==(const Segment& other) const = default;
};

struct ChatRenderOptions {
  // End with the header of an assistant turn, ready for generation.
  bool add_generation_prompt = false;
  // qwen3 only: false writes an empty thinking block after the generation
  // prompt (Qwen3's enable_thinking=False); other templates ignore it.
  bool enable_thinking = true;
};

// Whether the template accepts `messages` as its Jinja source would: gemma
// requires user and assistant turns to alternate starting with user (after an
// optional leading system message). INVALID_ARGUMENT naming the message index
// otherwise; OK for every other template.
absl::Status ValidateChat(ChatTemplateKind kind, absl::Span<const Message> messages);

// Renders `messages` (as validated by ParseJsonl: known roles, non-blank
// contents; and by ValidateChat) with the template `kind`. Adjacent segments
// with the same `train` flag are merged, so the result alternates.
std::vector<Segment> RenderChat(ChatTemplateKind kind, absl::Span<const Message> messages,
                                const ChatRenderOptions& options);
std::vector<Segment> RenderChat(ChatTemplateKind kind, absl::Span<const Message> messages,
                                bool add_generation_prompt);

// A row rendered for tokenisation.
struct RenderedExample {
  std::vector<Segment> segments;    // in order; alternating train flags
  bool add_special_tokens = false;  // wrap in the encoder's special_prefix/suffix (text and
                                    // prompt/completion; not chat, as apply_chat_template)
  bool append_eos = false;          // add the encoder's EOS, trained, at the end
};

// Renders one row:
//   kText:             {text, train}; EOS appended.
//   kPromptCompletion: {prompt, untrained}, {completion, train}; EOS appended.
//                      The strings are used as they are (no chat template).
//   kChat:             RenderChat(kind, messages, {}); no EOS appended (the
//                      template's end-of-turn marker ends each assistant turn).
//                      The caller checks ValidateChat first.
RenderedExample RenderExample(const Example& example, ChatTemplateKind kind);

}  // namespace oft

#endif  // OFT_SERVER_DATA_CHAT_TEMPLATE_H_
