// OpenAI's files and fine-tuning endpoints on the HTTP server, over the same service logic
// as the gRPC DatasetService and JobService (dataset_ops.h, JobServiceImpl::Do*):
//   POST   /v1/files                      multipart: file (JSONL) + purpose "fine-tune"
//   GET    /v1/files                      ?after=<file id>&limit=N (newest first)
//   GET    /v1/files/{id}, DELETE /v1/files/{id}
//   POST   /v1/fine_tuning/jobs           openai_fine_tuning_types.h for the body
//   GET    /v1/fine_tuning/jobs           ?after=<job id>&limit=N (newest first)
//   GET    /v1/fine_tuning/jobs/{id}
//   POST   /v1/fine_tuning/jobs/{id}/cancel
//   GET    /v1/fine_tuning/jobs/{id}/events       ?after=<event id>&limit=N (newest first)
//   GET    /v1/fine_tuning/jobs/{id}/checkpoints  ?after=<checkpoint id>&limit=N
// A file is a dataset and a fine-tuning job a job: either API sees what the other made.
// Tenancy: another tenant's ids are NOT_FOUND (404), exactly as over gRPC. Handlers block
// their HTTP thread on the store (SQLite) and disk; none waits on training.
#ifndef OFT_SERVER_HTTP_OPENAI_FINE_TUNING_API_H_
#define OFT_SERVER_HTTP_OPENAI_FINE_TUNING_API_H_

#include "httplib.h"

namespace oft {

struct OpenAiEnv;

// Registers the routes above; `env.service` and `env.jobs` must be set and outlive `server`.
void RegisterFineTuningRoutes(httplib::Server& server, const OpenAiEnv& env);

}  // namespace oft

#endif  // OFT_SERVER_HTTP_OPENAI_FINE_TUNING_API_H_
