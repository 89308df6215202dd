#include "server/data/chat_template.h"

#include <exception>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace oft {
namespace {

using json = nlohmann::json;

constexpr char kKnownNames[] = "llama3, chatml, qwen2, qwen2.5, qwen3, gemma, phi3";
constexpr char kHowToName[] =
    "name one with \"chat_template\" in the training job, or oft_server "
    "--chat_template=MODEL=TEMPLATE";
constexpr char kQwen2System[] = "You are a helpful assistant.";
constexpr char kQwen2_5System[] =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

// Appends `text` to `segments`, merging it into the last segment when that one
// has the same `train` flag.
void Append(std::vector<Segment>& segments, absl::string_view text, bool train) {
  if (text.empty()) return;
  if (!segments.empty() && segments.back().train == train) {
    absl::StrAppend(&segments.back().text, text);
  } else {
    segments.push_back(Segment{std::string(text), train});
  }
}

void RenderLlama3(absl::Span<const Message> messages, bool add_generation_prompt,
                  std::vector<Segment>& out) {
  Append(out, "<|begin_of_text|>", false);
  for (const Message& m : messages) {
    const bool train = m.role == "assistant";
    Append(out, absl::StrCat("<|start_header_id|>", m.role, "<|end_header_id|>\n\n"), false);
    // The Llama 3 template trims every message's content.
    Append(out, absl::StrCat(TrimWhitespace(m.content), "<|eot_id|>"), train);
  }
  if (add_generation_prompt) {
    Append(out, "<|start_header_id|>assistant<|end_header_id|>\n\n", false);
  }
}

void RenderChatml(absl::Span<const Message> messages, absl::string_view default_system,
                  bool add_generation_prompt, std::vector<Segment>& out) {
  if (!default_system.empty() && (messages.empty() || messages.front().role != "system")) {
    Append(out, absl::StrCat("<|im_start|>system\n", default_system, "<|im_end|>\n"), false);
  }
  for (const Message& m : messages) {
    const bool train = m.role == "assistant";
    Append(out, absl::StrCat("<|im_start|>", m.role, "\n"), false);
    Append(out, absl::StrCat(m.content, "<|im_end|>"), train);
    Append(out, "\n", false);
  }
  if (add_generation_prompt) Append(out, "<|im_start|>assistant\n", false);
}

// Python's str.strip / lstrip / rstrip of one character (as the Jinja templates use them).
absl::string_view StripChar(absl::string_view s, char c, bool left, bool right) {
  while (left && !s.empty() && s.front() == c) s.remove_prefix(1);
  while (right && !s.empty() && s.back() == c) s.remove_suffix(1);
  return s;
}

// Qwen3: the reasoning and the answer of an assistant content, as its template splits them
// (content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') and
// content.split('</think>')[-1].lstrip('\n')); no "</think>": no reasoning.
std::pair<std::string, std::string> SplitThinking(absl::string_view content) {
  const size_t first_end = content.find("</think>");
  if (first_end == absl::string_view::npos) return {"", std::string(content)};
  absl::string_view before = StripChar(content.substr(0, first_end), '\n', false, true);
  const size_t open = before.rfind("<think>");
  if (open != absl::string_view::npos) before.remove_prefix(open + 7);
  const size_t last_end = content.rfind("</think>");
  return {std::string(StripChar(before, '\n', true, false)),
          std::string(StripChar(content.substr(last_end + 8), '\n', true, false))};
}

void RenderQwen3(absl::Span<const Message> messages, const ChatRenderOptions& options,
                 std::vector<Segment>& out) {
  const int64_t n = static_cast<int64_t>(messages.size());
  if (n > 0 && messages[0].role == "system") {
    Append(out, absl::StrCat("<|im_start|>system\n", messages[0].content, "<|im_end|>\n"), false);
  }
  int64_t last_query = n - 1;  // the last user turn (tool responses aside: none here)
  for (int64_t i = n - 1; i >= 0; --i) {
    if (messages[i].role == "user") {
      last_query = i;
      break;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const Message& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i > 0)) {
      Append(out, absl::StrCat("<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n"), false);
    } else if (m.role == "assistant") {
      const auto [reasoning, answer] = SplitThinking(m.content);
      Append(out, "<|im_start|>assistant\n", false);
      if (i > last_query && (i == n - 1 || !reasoning.empty())) {
        Append(out,
               absl::StrCat("<think>\n", StripChar(reasoning, '\n', true, true), "\n</think>\n\n",
                            StripChar(answer, '\n', true, false), "<|im_end|>"),
               true);
      } else {
        Append(out, absl::StrCat(answer, "<|im_end|>"), true);
      }
      Append(out, "\n", false);
    }
  }
  if (options.add_generation_prompt) {
    Append(out, "<|im_start|>assistant\n", false);
    if (!options.enable_thinking) Append(out, "<think>\n\n</think>\n\n", false);
  }
}

void RenderGemma(absl::Span<const Message> messages, bool add_generation_prompt,
                 std::vector<Segment>& out) {
  Append(out, "<bos>", false);
  std::string first_user_prefix;
  if (!messages.empty() && messages[0].role == "system") {
    first_user_prefix = absl::StrCat(messages[0].content, "\n\n");
    messages.remove_prefix(1);
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    const bool train = m.role == "assistant";
    Append(out,
           absl::StrCat("<start_of_turn>", train ? "model" : m.role, "\n",
                        i == 0 ? first_user_prefix : ""),
           false);
    Append(out, absl::StrCat(TrimWhitespace(m.content), "<end_of_turn>"), train);
    Append(out, "\n", false);
  }
  if (add_generation_prompt) Append(out, "<start_of_turn>model\n", false);
}

void RenderPhi3(absl::Span<const Message> messages, bool add_generation_prompt,
                std::vector<Segment>& out) {
  for (const Message& m : messages) {
    const bool train = m.role == "assistant";
    Append(out, absl::StrCat("<|", m.role, "|>\n"), false);
    Append(out, absl::StrCat(m.content, "<|end|>"), train);
    Append(out, "\n", false);
  }
  Append(out, add_generation_prompt ? "<|assistant|>\n" : "<|endoftext|>", false);
}

}  // namespace

absl::StatusOr<ChatTemplateKind> RecogniseTemplate(absl::string_view tmpl,
                                                   absl::string_view source) {
  const absl::Status unrecognised = absl::InvalidArgumentError(
      absl::StrCat("the chat template in ", source, " matches no built-in template (known: ",
                   kKnownNames, "); ", kHowToName));
  const bool llama3 =
      absl::StrContains(tmpl, "<|start_header_id|>") && absl::StrContains(tmpl, "<|eot_id|>");
  const bool chatml =
      absl::StrContains(tmpl, "<|im_start|>") && absl::StrContains(tmpl, "<|im_end|>");
  const bool gemma =
      absl::StrContains(tmpl, "<start_of_turn>") && absl::StrContains(tmpl, "<end_of_turn>");
  const bool phi3 = absl::StrContains(tmpl, "<|user|>") &&
                    absl::StrContains(tmpl, "<|assistant|>") && absl::StrContains(tmpl, "<|end|>");
  if (llama3 + chatml + gemma + phi3 != 1) return unrecognised;  // none, or a mix
  if (llama3) return ChatTemplateKind::kLlama3;
  if (gemma) return ChatTemplateKind::kGemma;
  if (phi3) return ChatTemplateKind::kPhi3;
  // The chatml family: Qwen3 rewrites assistant turns with thinking blocks.
  if (absl::StrContains(tmpl, "<think>")) return ChatTemplateKind::kQwen3;
  if (absl::StrContains(tmpl, kQwen2_5System)) return ChatTemplateKind::kQwen2_5;
  if (absl::StrContains(tmpl, kQwen2System)) return ChatTemplateKind::kQwen2;
  return ChatTemplateKind::kChatml;
}

namespace {

absl::StatusOr<ChatTemplateKind> DetectTemplateImpl(const std::string& config_json) {
  const json config = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json is not a JSON object");
  }
  if (!config.contains("chat_template") || config.at("chat_template").is_null()) {
    return absl::NotFoundError(absl::StrCat(
        "tokenizer_config.json has no chat_template (known templates: ", kKnownNames, "); ",
        kHowToName));
  }
  const json& field = config.at("chat_template");
  if (field.is_string()) {
    return RecogniseTemplate(field.get_ref<const std::string&>(), "tokenizer_config.json");
  }
  if (field.is_array()) {
    for (const json& entry : field) {
      if (entry.is_object() && entry.contains("name") && entry.at("name") == "default" &&
          entry.contains("template") && entry.at("template").is_string()) {
        return RecogniseTemplate(entry.at("template").get_ref<const std::string&>(),
                                 "tokenizer_config.json");
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer_config.json chat_template list has no \"default\" template (known templates: ",
        kKnownNames, "); ", kHowToName));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "tokenizer_config.json chat_template must be a string or a list, got ", field.type_name()));
}

}  // namespace

const std::vector<ChatTemplateKind>& AllTemplateKinds() {
  static const std::vector<ChatTemplateKind> kinds = {
      ChatTemplateKind::kLlama3, ChatTemplateKind::kChatml, ChatTemplateKind::kQwen2,
      ChatTemplateKind::kQwen2_5, ChatTemplateKind::kQwen3, ChatTemplateKind::kGemma,
      ChatTemplateKind::kPhi3};
  return kinds;
}

absl::string_view TemplateName(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kLlama3:
      return "llama3";
    case ChatTemplateKind::kChatml:
      return "chatml";
    case ChatTemplateKind::kQwen2:
      return "qwen2";
    case ChatTemplateKind::kQwen2_5:
      return "qwen2.5";
    case ChatTemplateKind::kQwen3:
      return "qwen3";
    case ChatTemplateKind::kGemma:
      return "gemma";
    case ChatTemplateKind::kPhi3:
      return "phi3";
  }
  return "unknown";
}

absl::StatusOr<ChatTemplateKind> ParseTemplateName(absl::string_view name) {
  for (ChatTemplateKind kind : AllTemplateKinds()) {
    if (name == TemplateName(kind)) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat template \"", name.substr(0, 64), "\"; known: ", kKnownNames));
}

absl::StatusOr<ChatTemplateKind> DetectTemplate(const std::string& tokenizer_config_json) {
  try {
    return DetectTemplateImpl(tokenizer_config_json);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read tokenizer_config.json: ", e.what()));
  }
}

absl::StatusOr<ChatTemplateKind> DetectTemplateInDir(const std::string& model_dir) {
  const auto read = [](const std::string& path) -> std::optional<std::string> {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  if (std::optional<std::string> jinja = read(model_dir + "/chat_template.jinja")) {
    return RecogniseTemplate(*jinja, "chat_template.jinja");
  }
  if (std::optional<std::string> config = read(model_dir + "/tokenizer_config.json")) {
    return DetectTemplate(*config);
  }
  return absl::NotFoundError(absl::StrCat(
      "the model has neither chat_template.jinja nor tokenizer_config.json (known templates: ",
      kKnownNames, "); ", kHowToName));
}

absl::StatusOr<ChatTemplateKind> ResolveTrainingTemplate(
    const std::optional<std::string>& explicit_name, const std::string& model_dir,
    bool has_chat_rows) {
  if (explicit_name.has_value()) return ParseTemplateName(*explicit_name);
  absl::StatusOr<ChatTemplateKind> detected = DetectTemplateInDir(model_dir);
  if (detected.ok()) return detected;
  if (absl::IsNotFound(detected.status()) || !has_chat_rows) return ChatTemplateKind::kChatml;
  return detected.status();
}

absl::Status ValidateChat(ChatTemplateKind kind, absl::Span<const Message> messages) {
  if (kind != ChatTemplateKind::kGemma) return absl::OkStatus();
  const size_t first = !messages.empty() && messages[0].role == "system" ? 1 : 0;
  for (size_t i = first; i < messages.size(); ++i) {
    // Gemma's template: (role == 'user') != (loop.index0 % 2 == 0) raises.
    if ((messages[i].role == "user") != ((i - first) % 2 == 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "]: the gemma chat template needs user and assistant turns to "
          "alternate, starting with user (after an optional first system message); got role \"",
          messages[i].role, "\""));
    }
  }
  return absl::OkStatus();
}

std::vector<Segment> RenderChat(ChatTemplateKind kind, absl::Span<const Message> messages,
                                bool add_generation_prompt) {
  ChatRenderOptions options;
  options.add_generation_prompt = add_generation_prompt;
  return RenderChat(kind, messages, options);
}

std::vector<Segment> RenderChat(ChatTemplateKind kind, absl::Span<const Message> messages,
                                const ChatRenderOptions& options) {
  const bool add_generation_prompt = options.add_generation_prompt;
  std::vector<Segment> out;
  switch (kind) {
    case ChatTemplateKind::kLlama3:
      RenderLlama3(messages, add_generation_prompt, out);
      break;
    case ChatTemplateKind::kChatml:
      RenderChatml(messages, "", add_generation_prompt, out);
      break;
    case ChatTemplateKind::kQwen2:
      RenderChatml(messages, kQwen2System, add_generation_prompt, out);
      break;
    case ChatTemplateKind::kQwen2_5:
      RenderChatml(messages, kQwen2_5System, add_generation_prompt, out);
      break;
    case ChatTemplateKind::kQwen3:
      RenderQwen3(messages, options, out);
      break;
    case ChatTemplateKind::kGemma:
      RenderGemma(messages, add_generation_prompt, out);
      break;
    case ChatTemplateKind::kPhi3:
      RenderPhi3(messages, add_generation_prompt, out);
      break;
  }
  return out;
}

RenderedExample RenderExample(const Example& example, ChatTemplateKind kind) {
  RenderedExample out;
  switch (example.format) {
    case RowFormat::kText:
      Append(out.segments, example.text, true);
      out.add_special_tokens = true;
      out.append_eos = true;
      break;
    case RowFormat::kPromptCompletion:
      Append(out.segments, example.prompt, false);
      Append(out.segments, example.completion, true);
      out.add_special_tokens = true;
      out.append_eos = true;
      break;
    case RowFormat::kChat:
      out.segments = RenderChat(kind, example.messages, ChatRenderOptions{});
      break;
  }
  return out;
}

}  // namespace oft
