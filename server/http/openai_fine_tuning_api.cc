#include "server/http/openai_fine_tuning_api.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/echo.h"
#include "server/common/status_macros.h"
#include "server/http/http_reply.h"
#include "server/http/openai_api.h"
#include "server/http/openai_fine_tuning_types.h"
#include "server/jobs/job_event_proto.h"
#include "server/service/dataset_ops.h"
#include "server/service/job_service.h"
#include "server/service/job_spec.h"
#include "server/service/service_env.h"

namespace oft {
namespace {

using json = nlohmann::json;

// A query parameter that is an integer in [lo, hi]; absent = `fallback`.
absl::StatusOr<int> QueryInt(const httplib::Request& req, const char* key, int lo, int hi, int fallback) {
  if (!req.has_param(key)) return fallback;
  const std::string v = req.get_param_value(key);
  int n = 0;
  if (!absl::SimpleAtoi(v, &n) || n < lo || n > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, " must be an integer in [", lo, ", ", hi, "], got \"", Echo(v, 40), "\""));
  }
  return n;
}

// A dataset name from an uploaded file's name: the allowed characters kept, others '-'.
std::string NameFromFilename(const std::string& filename) {
  std::string base = filename.substr(filename.find_last_of("/\\") == std::string::npos
                                         ? 0
                                         : filename.find_last_of("/\\") + 1);
  std::string name;
  for (char ch : base) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (name.size() == 64) break;
    if (c < 0x80 && (std::isalnum(c) || c == '.' || c == '_' || c == '-')) {
      if (name.empty() && !std::isalnum(c)) continue;
      name.push_back(ch);
    } else if (!name.empty()) {
      name.push_back('-');
    }
  }
  return name.empty() ? "upload.jsonl" : name;
}

// The handler's body with its tenant; errors become OpenAI error objects.
template <typename Fn>
httplib::Server::Handler Authed(const OpenAiEnv& env, Fn fn) {
  return [env, fn](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<std::string> tenant = AuthenticateRequest(env, req);
    if (!tenant.ok()) return SendError(res, tenant.status());
    absl::StatusOr<json> body = fn(*tenant, req);
    if (!body.ok()) return SendError(res, body.status());
    SendJson(res, 200, *body);
  };
}

json ListObject(std::vector<json> data, bool has_more) {
  json out = {{"object", "list"}, {"has_more", has_more}};
  out["first_id"] = data.empty() ? json(nullptr) : data.front()["id"];
  out["last_id"] = data.empty() ? json(nullptr) : data.back()["id"];
  out["data"] = std::move(data);
  return out;
}

absl::StatusOr<json> UploadFile(const OpenAiEnv& env, const std::string& tenant, const httplib::Request& req) {
  if (!req.is_multipart_form_data()) {
    return absl::InvalidArgumentError("file: the body must be multipart/form-data with fields file and purpose");
  }
  if (!req.has_file("purpose")) return absl::InvalidArgumentError("purpose is required (\"fine-tune\")");
  const std::string purpose = req.get_file_value("purpose").content;
  if (purpose != "fine-tune") {
    return absl::InvalidArgumentError(
        absl::StrCat("purpose must be \"fine-tune\", got \"", Echo(purpose, 40), "\""));
  }
  if (!req.has_file("file")) return absl::InvalidArgumentError("file is required (the JSONL training data)");
  const httplib::MultipartFormData file = req.get_file_value("file");
  absl::StatusOr<DatasetRecord> stored =
      StoreDatasetBytes(*env.service, tenant, NameFromFilename(file.filename), file.content);
  if (!stored.ok()) {
    // Row errors name the line; say which field of the request they are about.
    return absl::Status(stored.status().code(), absl::StrCat("file: ", stored.status().message()));
  }
  return FileObject(DatasetToProto(*stored));
}

absl::StatusOr<json> ListFiles(const OpenAiEnv& env, const std::string& tenant, const httplib::Request& req) {
  OFT_ASSIGN_OR_RETURN(const int limit, QueryInt(req, "limit", 1, 10000, 10000));
  if (req.has_param("purpose") && req.get_param_value("purpose") != "fine-tune") {
    return ListObject({}, false);  // every file here is a fine-tuning file
  }
  std::string token;
  if (req.has_param("after")) {
    OFT_ASSIGN_OR_RETURN(token, env.service->datasets->PageTokenAfter(tenant, req.get_param_value("after"), "after"));
  }
  std::vector<json> data;
  do {
    const int want = std::min(limit - static_cast<int>(data.size()), 1000);
    OFT_ASSIGN_OR_RETURN(DatasetPage page, env.service->datasets->ListDatasets(tenant, want, token));
    for (const DatasetRecord& r : page.datasets) data.push_back(FileObject(DatasetToProto(r)));
    token = page.next_page_token;
  } while (!token.empty() && static_cast<int>(data.size()) < limit);
  return ListObject(std::move(data), !token.empty());
}

absl::StatusOr<json> ListJobs(const OpenAiEnv& env, const std::string& tenant, const httplib::Request& req) {
  OFT_ASSIGN_OR_RETURN(const int limit, QueryInt(req, "limit", 1, 100, 20));
  std::string token;
  if (req.has_param("after")) {
    OFT_ASSIGN_OR_RETURN(token, env.service->store->PageTokenAfter(tenant, req.get_param_value("after"), "after"));
  }
  OFT_ASSIGN_OR_RETURN(JobPage page, env.service->store->ListJobs(tenant, {}, limit, token));
  std::vector<json> data;
  const int busy = env.service->busy_devices();
  for (const JobRecord& r : page.jobs) {
    OFT_ASSIGN_OR_RETURN(oft::v1::Job job, JobToProto(r, busy, env.service->devices));
    data.push_back(FineTuningJobObject(job));
  }
  return ListObject(std::move(data), !page.next_page_token.empty());
}

// The job's events [from + 1, to], oldest first (event ids are dense: 1..latest_event_id).
absl::StatusOr<std::vector<oft::v1::JobEvent>> ReadEvents(const ServiceEnv& service, const std::string& job_id,
                                                          int64_t from, int64_t to) {
  std::vector<oft::v1::JobEvent> out;
  while (from < to) {
    const int n = static_cast<int>(std::min<int64_t>(to - from, 1000));
    OFT_ASSIGN_OR_RETURN(std::vector<EventRecord> records, service.store->EventsAfter(job_id, from, n));
    if (records.empty()) break;
    for (const EventRecord& r : records) {
      OFT_ASSIGN_OR_RETURN(oft::v1::JobEvent e, DecodeJobEvent(r));
      out.push_back(std::move(e));
    }
    from = records.back().event_id;
  }
  return out;
}

absl::StatusOr<json> ListEvents(const OpenAiEnv& env, const std::string& tenant, const httplib::Request& req) {
  OFT_ASSIGN_OR_RETURN(const int limit, QueryInt(req, "limit", 1, 1000, 20));
  oft::v1::Job job;
  OFT_RETURN_IF_ERROR(env.jobs->DoGetJob(tenant, req.matches[1], &job));
  int64_t before = job.latest_event_id() + 1;
  if (req.has_param("after")) {
    OFT_ASSIGN_OR_RETURN(before, ParseEventCursor(req.get_param_value("after")));
    before = std::min(before, job.latest_event_id() + 1);
  }
  const int64_t from = std::max<int64_t>(0, before - 1 - limit);
  OFT_ASSIGN_OR_RETURN(std::vector<oft::v1::JobEvent> events, ReadEvents(*env.service, job.id(), from, before - 1));
  std::vector<json> data;
  for (auto it = events.rbegin(); it != events.rend(); ++it) data.push_back(FineTuningEventObject(*it));
  return ListObject(std::move(data), from > 0);
}

absl::StatusOr<json> ListCheckpoints(const OpenAiEnv& env, const std::string& tenant,
                                     const httplib::Request& req) {
  OFT_ASSIGN_OR_RETURN(const int limit, QueryInt(req, "limit", 1, 1000, 10));
  oft::v1::Job job;
  OFT_RETURN_IF_ERROR(env.jobs->DoGetJob(tenant, req.matches[1], &job));
  OFT_ASSIGN_OR_RETURN(std::vector<oft::v1::JobEvent> events,
                       ReadEvents(*env.service, job.id(), 0, job.latest_event_id()));
  std::vector<json> all;  // oldest first
  double loss = 0;
  for (const oft::v1::JobEvent& e : events) {
    if (e.has_step()) loss = e.step().metrics().loss();
    if (e.has_checkpoint_saved()) all.push_back(CheckpointObject(job, e, loss));
  }
  std::reverse(all.begin(), all.end());
  size_t start = 0;
  if (req.has_param("after")) {
    const std::string after = req.get_param_value("after");
    while (start < all.size() && all[start]["id"] != after) ++start;
    if (start == all.size()) {
      return absl::NotFoundError(absl::StrCat("after: no checkpoint \"", Echo(after, 80), "\" of this job"));
    }
    ++start;
  }
  const size_t end = std::min(all.size(), start + static_cast<size_t>(limit));
  return ListObject(std::vector<json>(all.begin() + start, all.begin() + end), end < all.size());
}

}  // namespace

void RegisterFineTuningRoutes(httplib::Server& server, const OpenAiEnv& env) {
  server.Post("/v1/files", [env](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<std::string> tenant = AuthenticateRequest(env, req);
    if (!tenant.ok()) return SendError(res, tenant.status());
    absl::StatusOr<json> file = UploadFile(env, *tenant, req);
    if (file.ok()) return SendJson(res, 200, *file);
    SendError(res, file.status());
    if (absl::IsResourceExhausted(file.status())) res.status = 413;  // the file is over --max_upload_bytes
  });
  server.Get("/v1/files", Authed(env, [env](const std::string& tenant, const httplib::Request& req) {
               return ListFiles(env, tenant, req);
             }));
  server.Get(R"(/v1/files/([^/]+))",
             Authed(env, [env](const std::string& tenant, const httplib::Request& req) -> absl::StatusOr<json> {
               OFT_ASSIGN_OR_RETURN(DatasetRecord r, env.service->datasets->GetDataset(tenant, req.matches[1]));
               return FileObject(DatasetToProto(r));
             }));
  server.Delete(R"(/v1/files/([^/]+))",
                Authed(env, [env](const std::string& tenant, const httplib::Request& req) -> absl::StatusOr<json> {
                  OFT_ASSIGN_OR_RETURN(DatasetRecord r, DeleteDatasetAndFile(*env.service, tenant, req.matches[1]));
                  return json{{"id", r.id}, {"object", "file"}, {"deleted", true}};
                }));
  server.Post("/v1/fine_tuning/jobs",
              Authed(env, [env](const std::string& tenant, const httplib::Request& req) -> absl::StatusOr<json> {
                OFT_ASSIGN_OR_RETURN(oft::v1::CreateJobRequest create, ParseFineTuningJobCreate(req.body));
                if (req.has_header("Idempotency-Key")) {
                  create.set_idempotency_key(req.get_header_value("Idempotency-Key"));
                }
                oft::v1::Job job;
                absl::Status st = env.jobs->DoCreateJob(tenant, create, &job);
                if (!st.ok()) return ToFineTuningError(st);
                return FineTuningJobObject(job);
              }));
  server.Get("/v1/fine_tuning/jobs", Authed(env, [env](const std::string& tenant, const httplib::Request& req) {
               return ListJobs(env, tenant, req);
             }));
  server.Get(R"(/v1/fine_tuning/jobs/([^/]+))",
             Authed(env, [env](const std::string& tenant, const httplib::Request& req) -> absl::StatusOr<json> {
               oft::v1::Job job;
               OFT_RETURN_IF_ERROR(env.jobs->DoGetJob(tenant, req.matches[1], &job));
               return FineTuningJobObject(job);
             }));
  server.Post(R"(/v1/fine_tuning/jobs/([^/]+)/cancel)",
              Authed(env, [env](const std::string& tenant, const httplib::Request& req) -> absl::StatusOr<json> {
                oft::v1::Job job;
                OFT_RETURN_IF_ERROR(env.jobs->DoCancelJob(tenant, req.matches[1], &job));
                return FineTuningJobObject(job);
              }));
  server.Get(R"(/v1/fine_tuning/jobs/([^/]+)/events)",
             Authed(env, [env](const std::string& tenant, const httplib::Request& req) {
               return ListEvents(env, tenant, req);
             }));
  server.Get(R"(/v1/fine_tuning/jobs/([^/]+)/checkpoints)",
             Authed(env, [env](const std::string& tenant, const httplib::Request& req) {
               return ListCheckpoints(env, tenant, req);
             }));
}

}  // namespace oft
