// What every /v1 handler does with a request and a response: authenticate the caller from
// its Authorization header(s), and answer with JSON or an OpenAI error object.
#ifndef OFT_SERVER_HTTP_HTTP_REPLY_H_
#define OFT_SERVER_HTTP_HTTP_REPLY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace oft {

struct OpenAiEnv;

// The caller's tenant (OpenAiEnv::authenticate over every Authorization header), or
// UNAUTHENTICATED.
absl::StatusOr<std::string> AuthenticateRequest(const OpenAiEnv& env, const httplib::Request& req);

void SendJson(httplib::Response& res, int status, const nlohmann::json& body);
// The error object and HTTP status of `status` (openai_types.h).
void SendError(httplib::Response& res, const absl::Status& status);

}  // namespace oft

#endif  // OFT_SERVER_HTTP_HTTP_REPLY_H_
