#include "server/http/http_reply.h"

#include <vector>

#include "server/http/openai_api.h"
#include "server/http/openai_types.h"

namespace oft {

absl::StatusOr<std::string> AuthenticateRequest(const OpenAiEnv& env, const httplib::Request& req) {
  std::vector<std::string> values;
  const size_t n = req.get_header_value_count("Authorization");
  for (size_t i = 0; i < n; ++i) values.push_back(req.get_header_value("Authorization", i));
  return env.authenticate(values);
}

void SendJson(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void SendError(httplib::Response& res, const absl::Status& status) {
  SendJson(res, HttpStatusFor(status), ErrorBody(status));
}

}  // namespace oft
