// The OpenAI wire format: request parsing (every field, every refusal names its field) and
// the response, chunk and error objects.
#include "server/http/openai_types.h"

#include <gtest/gtest.h>

#include <string>

#include "server/common/echo.h"

namespace oft {
namespace {

using json = nlohmann::json;

absl::StatusOr<OpenAiRequest> Completion(const json& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kCompletions, body.dump());
}
absl::StatusOr<OpenAiRequest> Chat(const json& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body.dump());
}

void ExpectInvalid(const absl::StatusOr<OpenAiRequest>& r, const std::string& needle) {
  ASSERT_FALSE(r.ok()) << "accepted; expected an error naming " << needle;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
}

TEST(OpenAiTypes, CompletionFieldsMapToGenerateParams) {
  auto r = Completion({{"model", "ad:3"}, {"prompt", "hello"}, {"max_tokens", 7}, {"temperature", 0.5},
                       {"top_p", 0.9}, {"stop", "\n"}, {"seed", 42}, {"stream", true},
                       {"stream_options", {{"include_usage", true}}}, {"n", 1}, {"logprobs", nullptr},
                       {"presence_penalty", 0}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "ad:3");
  EXPECT_EQ(*r->params.text, "hello");
  EXPECT_EQ(r->params.max_tokens, 7);
  EXPECT_DOUBLE_EQ(*r->params.temperature, 0.5);
  EXPECT_DOUBLE_EQ(*r->params.top_p, 0.9);
  EXPECT_EQ(r->params.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(*r->params.seed, 42u);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  // OpenAI's default for completions is 16 tokens; a one-string prompt array is a prompt.
  auto d = Completion({{"model", "m"}, {"prompt", json::array({"x"})}, {"stop", {"a", "b"}}});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->params.max_tokens, 16);
  EXPECT_EQ(*d->params.text, "x");
  EXPECT_EQ(d->params.stop.size(), 2u);
  EXPECT_FALSE(d->params.seed.has_value());
}

TEST(OpenAiTypes, ChatMessagesAndNewerFieldNames) {
  auto r = Chat({{"model", "m"},
                 {"messages", {{{"role", "developer"}, {"content", "be brief"}},
                               {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi "}},
                                                               {{"type", "text"}, {"text", "there"}}}}}}},
                 {"max_completion_tokens", 9}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->params.chat->size(), 2u);
  EXPECT_EQ((*r->params.chat)[0].role, "system");
  EXPECT_EQ((*r->params.chat)[1].content, "hi there");
  EXPECT_EQ(r->params.max_tokens, 9);
  EXPECT_FALSE(r->params.text.has_value());
  auto unlimited = Chat({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}});
  ASSERT_TRUE(unlimited.ok());
  EXPECT_EQ(unlimited->params.max_tokens, 0);  // the server's default
  EXPECT_TRUE(unlimited->params.enable_thinking);  // Qwen3's default
}

// vLLM's chat_template_kwargs: only enable_thinking (the qwen3 template's switch).
TEST(OpenAiTypes, ChatTemplateKwargsEnableThinking) {
  auto off = Chat({{"model", "m"},
                   {"messages", {{{"role", "user"}, {"content", "x"}}}},
                   {"chat_template_kwargs", {{"enable_thinking", false}}}});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->params.enable_thinking);
  ExpectInvalid(Chat({{"model", "m"},
                      {"messages", {{{"role", "user"}, {"content", "x"}}}},
                      {"chat_template_kwargs", {{"tools", true}}}}),
                "chat_template_kwargs.tools is not supported");
  ExpectInvalid(Chat({{"model", "m"},
                      {"messages", {{{"role", "user"}, {"content", "x"}}}},
                      {"chat_template_kwargs", 3}}),
                "chat_template_kwargs must be an object");
}

TEST(OpenAiTypes, RefusalsNameTheirField) {
  ExpectInvalid(ParseOpenAiRequest(OpenAiEndpoint::kCompletions, "{not json"), "not valid JSON");
  ExpectInvalid(ParseOpenAiRequest(OpenAiEndpoint::kCompletions, "[1]"), "JSON object");
  ExpectInvalid(Completion({{"prompt", "x"}}), "model is required");
  ExpectInvalid(Completion({{"model", 5}, {"prompt", "x"}}), "model is required");
  ExpectInvalid(Completion({{"model", "m"}}), "prompt is required");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", ""}}), "prompt must not be empty");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", {"a", "b"}}}), "prompt must be a string");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"n", 2}}), "n must be 1");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"temperature", 3}}), "temperature");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"temperature", "hot"}}), "temperature must be a number");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"top_p", 0}}), "top_p");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"max_tokens", 0}}), "max_tokens");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"max_tokens", 5000}}), "max_tokens");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"max_tokens", 1.5}}), "max_tokens must be an integer");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"seed", "s"}}), "seed");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"stop", 3}}), "stop must be");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"stop", {"a", 1}}}), "stop[1]");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"stop", {"1", "2", "3", "4", "5", "6", "7", "8", "9"}}}), "stop");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"logprobs", 2}}), "logprobs");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"echo", true}}), "echo");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"best_of", 2}}), "best_of");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"frequency_penalty", 0.5}}), "frequency_penalty");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"stream", "yes"}}), "stream must be a boolean");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"stream_options", {{"include_usage", true}}}}),
                "stream_options is only allowed");
  ExpectInvalid(Completion({{"model", "m:0"}, {"prompt", "x"}}), "name:version");
  ExpectInvalid(Completion({{"model", "m"}, {"prompt", "x"}, {"max_tokens", 3}, {"max_completion_tokens", 4}}),
                "differ");
  ExpectInvalid(Chat({{"model", "m"}}), "messages is required");
  ExpectInvalid(Chat({{"model", "m"}, {"messages", {}}}), "messages");
  ExpectInvalid(Chat({{"model", "m"}, {"messages", {{{"role", "tool"}, {"content", "x"}}}}}), "messages[0].role");
  ExpectInvalid(Chat({{"model", "m"}, {"messages", {{{"role", "user"}}}}}), "messages[0].content is required");
  ExpectInvalid(Chat({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}}),
                "messages[0].content[0].type");
  ExpectInvalid(Chat({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}, {"tools", json::array({1})}}),
                "tools");
}

TEST(OpenAiTypes, ModelRefs) {
  auto a = ParseModelRef("name:12");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->name, "name");
  EXPECT_EQ(a->version, 12);
  auto b = ParseModelRef("plain");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->version, 0);
  EXPECT_FALSE(ParseModelRef("").ok());
  EXPECT_FALSE(ParseModelRef(":3").ok());
  EXPECT_FALSE(ParseModelRef("x:y").ok());
  EXPECT_FALSE(ParseModelRef("x:-1").ok());
}

TEST(OpenAiTypes, ResponsesAndChunks) {
  OpenAiRequest chat;
  chat.endpoint = OpenAiEndpoint::kChatCompletions;
  chat.model = "ad";
  GenerationOutcome o;
  o.text = "twelve";
  o.tokens = {1, 2, 3};
  o.prompt_tokens = 10;
  o.finish_reason = FinishReason::kEos;
  json r = CompletionResponse(chat, "id1", 7, o);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["model"], "ad");
  EXPECT_EQ(r["choices"][0]["message"]["content"], "twelve");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["usage"]["completion_tokens"], 3);
  EXPECT_EQ(r["usage"]["total_tokens"], 13);

  json first = CompletionChunk(chat, "id1", 7, "tw", /*first=*/true, nullptr);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], "tw");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const FinishReason len = FinishReason::kLength;
  json last = CompletionChunk(chat, "id1", 7, "", false, &len);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(last["choices"][0]["delta"].contains("content"));

  OpenAiRequest text;
  text.model = "m";
  text.include_usage = true;
  json c = CompletionChunk(text, "id2", 7, "abc", true, nullptr);
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "abc");
  EXPECT_TRUE(c["usage"].is_null());
  json u = UsageChunk(text, "id2", 7, 4, 5);
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["total_tokens"], 9);
}

TEST(OpenAiTypes, ErrorsAreBoundedOpenAiErrorObjects) {
  const absl::Status huge = absl::InvalidArgumentError(std::string(20000, 'x'));
  json e = ErrorBody(huge);
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_LE(e["error"]["message"].get<std::string>().size(), kMaxStatusMessageBytes + 32);
  EXPECT_EQ(HttpStatusFor(huge), 400);
  EXPECT_EQ(HttpStatusFor(absl::UnauthenticatedError("")), 401);
  EXPECT_EQ(ErrorBody(absl::UnauthenticatedError(""))["error"]["type"], "authentication_error");
  EXPECT_EQ(HttpStatusFor(absl::NotFoundError("")), 404);
  EXPECT_EQ(HttpStatusFor(absl::ResourceExhaustedError("")), 429);
  EXPECT_EQ(HttpStatusFor(absl::UnavailableError("")), 503);
  EXPECT_EQ(HttpStatusFor(absl::InternalError("")), 500);
}

}  // namespace
}  // namespace oft
