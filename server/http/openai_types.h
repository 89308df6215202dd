// The OpenAI wire format of the HTTP API (no HTTP, no LibTorch): request bodies of
// POST /v1/completions and /v1/chat/completions parsed into GenerateParams, and the
// response, stream-chunk and error objects built from generation results.
//
// Field rules follow OpenAI's API reference; what this server does not support is rejected
// by name (n != 1, logprobs, tools, ...), never ignored. Errors are INVALID_ARGUMENT with
// the JSON field in the message, e.g. "temperature must be in [0, 2], got 3".
#ifndef OFT_SERVER_HTTP_OPENAI_TYPES_H_
#define OFT_SERVER_HTTP_OPENAI_TYPES_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/serving/generation_types.h"
#include "server/serving/generate_params.h"

namespace oft {

enum class OpenAiEndpoint { kCompletions, kChatCompletions };

struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  std::string model;        // as sent: a base model, adapter name, name:version or alias
  GenerateParams params;    // text or chat set; adapter/alias/base_model left to the caller
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses a request body. `body` is untrusted; errors are INVALID_ARGUMENT naming the field.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, const std::string& body);

// The model field's parts: "name:version" (version > 0) or a bare name (version 0).
struct ModelRef {
  std::string name;
  int64_t version = 0;
};
absl::StatusOr<ModelRef> ParseModelRef(const std::string& model);

// "stop" for EOS and stop strings, "length" for max_tokens and the context limit.
const char* OpenAiFinishReason(FinishReason reason);

// The whole response of a non-streamed request.
nlohmann::json CompletionResponse(const OpenAiRequest& request, const std::string& id,
                                  int64_t created, const GenerationOutcome& outcome);
// One streamed chunk: `text` (may be empty), the finish reason on the last one.
nlohmann::json CompletionChunk(const OpenAiRequest& request, const std::string& id,
                               int64_t created, const std::string& text, bool first,
                               const FinishReason* finish);
// The usage-only last chunk of a stream (stream_options.include_usage).
nlohmann::json UsageChunk(const OpenAiRequest& request, const std::string& id, int64_t created,
                          int64_t prompt_tokens, int64_t completion_tokens);

// OpenAI's error object {"error": {"message", "type", "param", "code"}} for `status`
// (message capped like every echoed error), and the HTTP status code for it.
nlohmann::json ErrorBody(const absl::Status& status);
int HttpStatusFor(const absl::Status& status);

}  // namespace oft

#endif  // OFT_SERVER_HTTP_OPENAI_TYPES_H_
