// The OpenAI-compatible endpoints on an httplib::Server (issue 14):
//   GET  /v1/models, GET /v1/models/{id}
//   POST /v1/completions, POST /v1/chat/completions (stream: true -> SSE "data:" chunks,
//        then "data: [DONE]")
//   /v1/files and /v1/fine_tuning/jobs: openai_fine_tuning_api.h (when service/jobs are set)
// over the same InferenceBackend as the gRPC InferenceService, so a request with the same
// model, prompt, sampling settings and seed produces the same tokens through either API.
//
// `model` names, in this order: "name:version" (an adapter version); a base model; an alias
// of the caller's tenant; an adapter's latest version. Authentication: the same API keys as
// gRPC, sent as "Authorization: Bearer <key>". Errors are OpenAI error objects with the HTTP
// status of their code (openai_types.h).
//
// Thread-safe: handlers run on the HTTP server's pool; a non-streamed request blocks its
// handler thread until the generation ends (or the request deadline, then it is cancelled).
#ifndef OFT_SERVER_HTTP_OPENAI_API_H_
#define OFT_SERVER_HTTP_OPENAI_API_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "httplib.h"

namespace oft {

class AdapterStore;
class InferenceBackend;
class JobServiceImpl;
struct ServiceEnv;

struct OpenAiEnv {
  InferenceBackend* backend = nullptr;        // not owned; required
  const AdapterStore* adapters = nullptr;     // not owned; required (GET /v1/models)
  std::vector<std::string> base_models;       // served base model names, the default first
  // Files and fine-tuning jobs (openai_fine_tuning_api.h); both null = those routes are off.
  const ServiceEnv* service = nullptr;        // not owned
  const JobServiceImpl* jobs = nullptr;       // not owned
  // The values of every Authorization header -> the caller's tenant, or UNAUTHENTICATED.
  std::function<absl::StatusOr<std::string>(const std::vector<std::string>& authorization)>
      authenticate;
  // A request's generation is cancelled after this long (streamed or not).
  absl::Duration max_request_time = absl::Minutes(10);
  // Set before the HTTP server stops: every request in flight is cancelled within ~100 ms,
  // so stopping never waits for long generations.
  std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);
};

// Registers the routes above on `server`; `env` is copied; what it points to must outlive
// the server.
void RegisterOpenAiRoutes(httplib::Server& server, const OpenAiEnv& env);

}  // namespace oft

#endif  // OFT_SERVER_HTTP_OPENAI_API_H_
