#include "server/http/openai_types.h"

#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/common/echo.h"
#include "server/common/status_macros.h"
#include "server/http/json_fields.h"

namespace oft {
namespace {

using json = nlohmann::json;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

const char* TypeName(const json& v) { return v.type_name(); }

// Fields of OpenAI's API that change the result in ways this server does not implement: a
// request that sets them (to anything but their neutral value) is refused by name.
absl::Status RejectUnsupported(const json& body, OpenAiEndpoint endpoint) {
  for (const char* f : {"logprobs", "top_logprobs", "logit_bias", "tools", "tool_choice", "functions",
                        "function_call", "response_format", "suffix", "best_of", "prediction",
                        "audio", "modalities"}) {
    auto it = body.find(f);
    if (it == body.end() || it->is_null()) continue;
    if (it->is_boolean() && !it->get<bool>()) continue;  // e.g. logprobs: false
    return Invalid(absl::StrCat(f, " is not supported by this server"));
  }
  if (auto it = body.find("echo"); it != body.end() && it->is_boolean() && it->get<bool>()) {
    return Invalid("echo is not supported by this server");
  }
  for (const char* f : {"presence_penalty", "frequency_penalty"}) {
    auto it = body.find(f);
    if (it == body.end() || it->is_null()) continue;
    if (!it->is_number()) return Invalid(absl::StrCat(f, " must be a number, got ", TypeName(*it)));
    if (it->get<double>() != 0.0) return Invalid(absl::StrCat(f, " is not supported (only 0)"));
  }
  std::optional<int64_t> n;
  OFT_RETURN_IF_ERROR(OptionalInt(body, "n", 1, 128, &n));
  if (n && *n != 1) return Invalid(absl::StrCat("n must be 1 (one choice per request), got ", *n));
  (void)endpoint;
  return absl::OkStatus();
}

// "stop": a string or an array of at most 8 strings.
absl::Status ParseStop(const json& body, std::vector<std::string>* out) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    out->push_back(it->get<std::string>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return Invalid(absl::StrCat("stop must be a string or an array of strings, got ", TypeName(*it)));
  for (size_t i = 0; i < it->size(); ++i) {
    if (!(*it)[i].is_string()) return Invalid(absl::StrCat("stop[", i, "] must be a string"));
    out->push_back((*it)[i].get<std::string>());
  }
  return absl::OkStatus();
}

// A chat message's content: a string or an array of {"type": "text", "text": ...} parts.
absl::StatusOr<std::string> MessageContent(const json& content, size_t index) {
  const std::string field = absl::StrCat("messages[", index, "].content");
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return Invalid(absl::StrCat(field, " must be a string or an array of text parts"));
  std::string text;
  for (size_t k = 0; k < content.size(); ++k) {
    const json& part = content[k];
    const std::string pf = absl::StrCat(field, "[", k, "]");
    if (!part.is_object()) return Invalid(absl::StrCat(pf, " must be an object"));
    auto type = part.find("type");
    if (type == part.end() || !type->is_string() || type->get<std::string>() != "text") {
      return Invalid(absl::StrCat(pf, ".type must be \"text\" (only text parts are supported)"));
    }
    auto t = part.find("text");
    if (t == part.end() || !t->is_string()) return Invalid(absl::StrCat(pf, ".text must be a string"));
    text += t->get<std::string>();
  }
  return text;
}

absl::Status ParseMessages(const json& body, std::vector<Message>* out) {
  auto it = body.find("messages");
  if (it == body.end()) return Invalid("messages is required");
  if (!it->is_array()) return Invalid(absl::StrCat("messages must be an array, got ", TypeName(*it)));
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    if (!m.is_object()) return Invalid(absl::StrCat("messages[", i, "] must be an object"));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return Invalid(absl::StrCat("messages[", i, "].role must be a string"));
    }
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";  // OpenAI's newer name for the system role
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      return Invalid(absl::StrCat("messages[", i, "].content is required"));
    }
    absl::StatusOr<std::string> text = MessageContent(*content, i);
    if (!text.ok()) return text.status();
    out->push_back({std::move(r), std::move(*text)});
  }
  return absl::OkStatus();
}

json Usage(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

const char* ObjectName(const OpenAiRequest& r, bool chunk) {
  if (r.endpoint == OpenAiEndpoint::kChatCompletions) return chunk ? "chat.completion.chunk" : "chat.completion";
  return "text_completion";
}

}  // namespace

absl::StatusOr<ModelRef> ParseModelRef(const std::string& model) {
  if (model.empty()) return Invalid("model must not be empty");
  ModelRef ref;
  const size_t colon = model.rfind(':');
  if (colon == std::string::npos) {
    ref.name = model;
    return ref;
  }
  ref.name = model.substr(0, colon);
  if (ref.name.empty() || !absl::SimpleAtoi(model.substr(colon + 1), &ref.version) || ref.version <= 0) {
    return Invalid(absl::StrCat("model \"", Echo(model),
                                "\": expected a name or name:version with version >= 1"));
  }
  return ref;
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, const std::string& text) {
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return Invalid("the request body is not valid JSON");
  if (!body.is_object()) return Invalid("the request body must be a JSON object");
  OpenAiRequest r;
  r.endpoint = endpoint;
  auto model = body.find("model");
  if (model == body.end() || !model->is_string()) return Invalid("model is required (a string)");
  r.model = model->get<std::string>();
  OFT_RETURN_IF_ERROR(ParseModelRef(r.model).status());
  OFT_RETURN_IF_ERROR(RejectUnsupported(body, endpoint));

  GenerateParams& p = r.params;
  if (endpoint == OpenAiEndpoint::kCompletions) {
    auto prompt = body.find("prompt");
    if (prompt == body.end() || prompt->is_null()) return Invalid("prompt is required");
    if (prompt->is_string()) {
      p.text = prompt->get<std::string>();
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
      p.text = (*prompt)[0].get<std::string>();
    } else {
      return Invalid("prompt must be a string (or an array of exactly one string)");
    }
    if (p.text->empty()) return Invalid("prompt must not be empty");
  } else {
    std::vector<Message> messages;
    OFT_RETURN_IF_ERROR(ParseMessages(body, &messages));
    p.chat = std::move(messages);
    // vLLM's extension: arguments of the chat template; only Qwen3's enable_thinking.
    if (auto kw = body.find("chat_template_kwargs"); kw != body.end() && !kw->is_null()) {
      if (!kw->is_object()) return Invalid("chat_template_kwargs must be an object");
      for (const auto& [key, value] : kw->items()) {
        if (key != "enable_thinking") {
          return Invalid(absl::StrCat("chat_template_kwargs.", Echo(key),
                                      " is not supported (only enable_thinking)"));
        }
      }
      OFT_RETURN_IF_ERROR(OptionalBool(*kw, "enable_thinking", &p.enable_thinking));
    }
  }

  // max_tokens: OpenAI's default for completions is 16; chat has no limit but the context,
  // here the server's default (256). max_completion_tokens is the newer name.
  std::optional<int64_t> max_tokens, max_completion_tokens;
  OFT_RETURN_IF_ERROR(OptionalInt(body, "max_tokens", 1, 4096, &max_tokens));
  OFT_RETURN_IF_ERROR(OptionalInt(body, "max_completion_tokens", 1, 4096, &max_completion_tokens));
  if (max_tokens && max_completion_tokens && *max_tokens != *max_completion_tokens) {
    return Invalid("max_tokens and max_completion_tokens differ: set one");
  }
  if (max_completion_tokens) max_tokens = max_completion_tokens;
  p.max_tokens = static_cast<int32_t>(max_tokens ? *max_tokens : (endpoint == OpenAiEndpoint::kCompletions ? 16 : 0));

  OFT_RETURN_IF_ERROR(OptionalNumber(body, "temperature", 0.0, 2.0, &p.temperature));
  OFT_RETURN_IF_ERROR(OptionalNumber(body, "top_p", std::numeric_limits<double>::min(), 1.0, &p.top_p));
  std::optional<int64_t> top_k, seed;
  OFT_RETURN_IF_ERROR(OptionalInt(body, "top_k", 0, 1 << 20, &top_k));  // vLLM's extension
  if (top_k) p.top_k = static_cast<int32_t>(*top_k);
  OFT_RETURN_IF_ERROR(OptionalInt(body, "seed", std::numeric_limits<int64_t>::min(),
                                        std::numeric_limits<int64_t>::max(), &seed));
  if (seed) p.seed = static_cast<uint64_t>(*seed);
  OFT_RETURN_IF_ERROR(ParseStop(body, &p.stop));
  OFT_RETURN_IF_ERROR(OptionalBool(body, "stream", &r.stream));
  if (auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
    if (!so->is_object()) return Invalid("stream_options must be an object");
    if (!r.stream) return Invalid("stream_options is only allowed with stream: true");
    OFT_RETURN_IF_ERROR(OptionalBool(*so, "include_usage", &r.include_usage));
  }

  // The serving limits (ranges, sizes), with chat field names as OpenAI spells them.
  absl::Status valid = ValidateGenerateParams(p);
  if (!valid.ok()) {
    std::string m(valid.message());
    m = absl::StrReplaceAll(m, {{"chat.messages", "messages"}, {"text must", "prompt must"}});
    return absl::Status(valid.code(), m);
  }
  return r;
}

const char* OpenAiFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos:
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
    case FinishReason::kContext:
    default:
      return "length";
  }
}

json CompletionResponse(const OpenAiRequest& r, const std::string& id, int64_t created,
                        const GenerationOutcome& outcome) {
  json choice = {{"index", 0}, {"finish_reason", OpenAiFinishReason(outcome.finish_reason)}};
  if (r.endpoint == OpenAiEndpoint::kChatCompletions) {
    choice["message"] = {{"role", "assistant"}, {"content", outcome.text}};
  } else {
    choice["text"] = outcome.text;
  }
  choice["logprobs"] = nullptr;
  return {{"id", id},
          {"object", ObjectName(r, false)},
          {"created", created},
          {"model", r.model},
          {"choices", json::array({choice})},
          {"usage", Usage(outcome.prompt_tokens, static_cast<int64_t>(outcome.tokens.size()))}};
}

json CompletionChunk(const OpenAiRequest& r, const std::string& id, int64_t created,
                     const std::string& text, bool first, const FinishReason* finish) {
  json choice = {{"index", 0}, {"logprobs", nullptr}};
  if (r.endpoint == OpenAiEndpoint::kChatCompletions) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && !finish)) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["finish_reason"] = finish ? json(OpenAiFinishReason(*finish)) : json(nullptr);
  json chunk = {{"id", id},
                {"object", ObjectName(r, true)},
                {"created", created},
                {"model", r.model},
                {"choices", json::array({choice})}};
  if (r.include_usage) chunk["usage"] = nullptr;  // only the last chunk carries usage
  return chunk;
}

json UsageChunk(const OpenAiRequest& r, const std::string& id, int64_t created,
                int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"id", id},
          {"object", ObjectName(r, true)},
          {"created", created},
          {"model", r.model},
          {"choices", json::array()},
          {"usage", Usage(prompt_tokens, completion_tokens)}};
}

int HttpStatusFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

json ErrorBody(const absl::Status& s) {
  const char* type = "server_error";
  // Errors of the request name the field they are about first (json_fields.h).
  std::string param;
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
      type = "invalid_request_error";
      param = ParamOfMessage(s.message());
      break;
    case absl::StatusCode::kUnauthenticated: type = "authentication_error"; break;
    case absl::StatusCode::kPermissionDenied: type = "permission_error"; break;
    case absl::StatusCode::kResourceExhausted: type = "rate_limit_error"; break;
    default: break;
  }
  return {{"error",
           {{"message", Echo(s.message(), kMaxStatusMessageBytes)},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", absl::StatusCodeToString(s.code())}}}};
}

}  // namespace oft
