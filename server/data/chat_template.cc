#include "server/data/chat_template.h"

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace oft {
namespace {

using json = nlohmann::json;

constexpr char kKnownNames[] = "llama3, chatml, qwen2, qwen2.5";
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

absl::StatusOr<ChatTemplateKind> RecogniseTemplate(absl::string_view tmpl) {
  const absl::Status unrecognised = absl::InvalidArgumentError(absl::StrCat(
      "the chat_template in tokenizer_config.json matches no built-in template; name one "
      "explicitly (",
      kKnownNames, ")"));
  // Reasoning templates (e.g. Qwen3) rewrite assistant turns; none of ours does.
  if (absl::StrContains(tmpl, "<think>")) return unrecognised;
  const bool llama3 =
      absl::StrContains(tmpl, "<|start_header_id|>") && absl::StrContains(tmpl, "<|eot_id|>");
  const bool chatml =
      absl::StrContains(tmpl, "<|im_start|>") && absl::StrContains(tmpl, "<|im_end|>");
  if (llama3 == chatml) return unrecognised;  // neither, or an unknown mix of both
  if (llama3) return ChatTemplateKind::kLlama3;
  if (absl::StrContains(tmpl, kQwen2_5System)) return ChatTemplateKind::kQwen2_5;
  if (absl::StrContains(tmpl, kQwen2System)) return ChatTemplateKind::kQwen2;
  return ChatTemplateKind::kChatml;
}

absl::StatusOr<ChatTemplateKind> DetectTemplateImpl(const std::string& config_json) {
  const json config = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json is not a JSON object");
  }
  if (!config.contains("chat_template") || config.at("chat_template").is_null()) {
    return absl::NotFoundError(
        absl::StrCat("tokenizer_config.json has no chat_template; name a template explicitly (",
                     kKnownNames, ")"));
  }
  const json& field = config.at("chat_template");
  if (field.is_string()) return RecogniseTemplate(field.get_ref<const std::string&>());
  if (field.is_array()) {
    for (const json& entry : field) {
      if (entry.is_object() && entry.contains("name") && entry.at("name") == "default" &&
          entry.contains("template") && entry.at("template").is_string()) {
        return RecogniseTemplate(entry.at("template").get_ref<const std::string&>());
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer_config.json chat_template list has no \"default\" template; name a template "
        "explicitly (",
        kKnownNames, ")"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "tokenizer_config.json chat_template must be a string or a list, got ", field.type_name()));
}

}  // namespace

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
  }
  return "unknown";
}

absl::StatusOr<ChatTemplateKind> ParseTemplateName(absl::string_view name) {
  for (ChatTemplateKind kind : {ChatTemplateKind::kLlama3, ChatTemplateKind::kChatml,
                                ChatTemplateKind::kQwen2, ChatTemplateKind::kQwen2_5}) {
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

std::vector<Segment> RenderChat(ChatTemplateKind kind, absl::Span<const Message> messages,
                                bool add_generation_prompt) {
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
  }
  return out;
}

RenderedExample RenderExample(const Example& example, ChatTemplateKind kind) {
  RenderedExample out;
  switch (example.format) {
    case RowFormat::kText:
      Append(out.segments, example.text, true);
      out.append_eos = true;
      break;
    case RowFormat::kPromptCompletion:
      Append(out.segments, example.prompt, false);
      Append(out.segments, example.completion, true);
      out.append_eos = true;
      break;
    case RowFormat::kChat:
      out.segments = RenderChat(kind, example.messages, /*add_generation_prompt=*/false);
      out.template_adds_bos = kind == ChatTemplateKind::kLlama3;
      break;
  }
  return out;
}

}  // namespace oft
