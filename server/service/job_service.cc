#include "server/service/job_service.h"

#include <atomic>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/log.h"
#include "server/common/status_macros.h"
#include "server/jobs/job_event_proto.h"

namespace oft {
namespace {

using oft::v1::Job;
using oft::v1::JobEvent;

absl::Status ValidateIdempotencyKey(const std::string& key) {
  if (key.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("idempotency_key must be at most 128 characters, got ", key.size()));
  }
  for (char c : key) {
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError("idempotency_key must be printable ASCII");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateJobId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("id is required");
  if (id.size() > 64) return absl::InvalidArgumentError("id must be at most 64 characters");
  return absl::OkStatus();
}

bool IsTerminalEvent(const JobEvent& e) {
  if (!e.has_state_changed()) return false;
  const Job::State s = e.state_changed().state();
  return s == Job::SUCCEEDED || s == Job::FAILED || s == Job::CANCELLED;
}

// WatchJob: replays the log after `after_event_id`, then follows it. Lifetime: one
// reference for gRPC (dropped in OnDone) and one per scheduled fetch; the last drop
// deletes the reactor, so no fetch outlives it.
class WatchReactor final : public grpc::ServerWriteReactor<JobEvent> {
 public:
  WatchReactor(const ServiceEnv* env, std::string job_id, int64_t after)
      : env_(env), job_id_(std::move(job_id)), fetched_up_to_(after) {}

  // Called by a task that holds a reference (AddRef before scheduling it).
  void Begin() {
    const uint64_t sub = env_->events->Subscribe(job_id_, [this] { ScheduleFetch(); });
    bool done;
    {
      absl::MutexLock lock(&mu_);
      done = on_done_;
      if (!done) sub_id_ = sub;
    }
    if (done) {
      env_->events->Unsubscribe(sub);
      return;
    }
    ScheduleFetch();
  }
  void AddRef() { refs_.fetch_add(1); }
  void Release() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }
  void FinishNow(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    FinishLocked(status);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading"));
      return;
    }
    buffer_.pop_front();
    MaybeWriteLocked();
    if (more_in_log_ && buffer_.size() < 100 && !fetch_scheduled_ && !finished_) {
      // A slow reader made Fetch stop early; read on now that the buffer drained. (A Fetch
      // still finishing keeps fetch_scheduled_ set; the next OnWriteDone comes back here.)
      more_in_log_ = false;
      refs_.fetch_add(1);
      fetch_scheduled_ = true;
      if (!env_->executor->Schedule([this] { Fetch(); })) {
        fetch_scheduled_ = false;
        refs_.fetch_sub(1);  // never the last reference: gRPC still holds one
      }
    }
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    uint64_t sub;
    {
      absl::MutexLock lock(&mu_);
      on_done_ = true;
      sub = sub_id_;
      sub_id_ = 0;
    }
    if (sub != 0) env_->events->Unsubscribe(sub);
    Release();
  }

 private:
  void ScheduleFetch() {
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || fetch_scheduled_) {
        if (fetch_scheduled_) refetch_ = true;
        return;
      }
      fetch_scheduled_ = true;
    }
    refs_.fetch_add(1);
    if (!env_->executor->Schedule([this] { Fetch(); })) {
      {
        absl::MutexLock lock(&mu_);
        fetch_scheduled_ = false;
        FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
      }
      Release();
    }
  }

  void Fetch() {
    for (;;) {
      int64_t after;
      {
        absl::MutexLock lock(&mu_);
        refetch_ = false;
        after = fetched_up_to_;
        if (finished_ || terminal_seen_) break;
      }
      absl::StatusOr<std::vector<EventRecord>> events = env_->store->EventsAfter(job_id_, after, 200);
      absl::MutexLock lock(&mu_);
      if (!events.ok()) {
        FinishLocked(ToGrpcStatus(events.status()));
        break;
      }
      bool undecodable = false;
      for (const EventRecord& r : *events) {
        // A stored event this binary cannot decode ends the stream with DATA_LOSS (naming
        // the event) instead of sending an event without a payload.
        absl::StatusOr<JobEvent> e = DecodeJobEvent(r);
        if (!e.ok()) {
          FinishLocked(ToGrpcStatus(e.status()));
          undecodable = true;
          break;
        }
        fetched_up_to_ = r.event_id;
        if (IsTerminalEvent(*e)) terminal_seen_ = true;
        buffer_.push_back(std::move(*e));
      }
      if (undecodable) break;
      MaybeWriteLocked();
      // More pages, or a notification arrived while reading: go again.
      if (events->size() < 200 && !refetch_) break;
      if (buffer_.size() > 1000) {  // slow reader: OnWriteDone fetches again later
        more_in_log_ = true;
        break;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      fetch_scheduled_ = false;
    }
    Release();
  }

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || write_in_flight_) return;
    if (!buffer_.empty()) {
      write_in_flight_ = true;
      StartWrite(&buffer_.front());
      return;
    }
    if (terminal_seen_) FinishLocked(grpc::Status::OK);
  }

  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  const ServiceEnv* env_;
  const std::string job_id_;
  std::atomic<int> refs_{1};
  absl::Mutex mu_;
  std::deque<JobEvent> buffer_ ABSL_GUARDED_BY(mu_);
  int64_t fetched_up_to_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool fetch_scheduled_ ABSL_GUARDED_BY(mu_) = false;
  bool refetch_ ABSL_GUARDED_BY(mu_) = false;
  bool terminal_seen_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool on_done_ ABSL_GUARDED_BY(mu_) = false;
  bool more_in_log_ ABSL_GUARDED_BY(mu_) = false;  // Fetch stopped at the buffer cap
  uint64_t sub_id_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

absl::Status JobServiceImpl::DoCreateJob(const std::string& tenant,
                                         const oft::v1::CreateJobRequest& request,
                                         Job* response) const {
  OFT_RETURN_IF_ERROR(ValidateIdempotencyKey(request.idempotency_key()));
  if (!request.has_spec()) return absl::InvalidArgumentError("spec is required");
  OFT_ASSIGN_OR_RETURN(ResolvedJob resolved, ResolveJobSpec(request.spec(), *env_->models));
  const oft::v1::JobSpec& spec = resolved.spec;
  if (spec.num_devices() > env_->max_job_devices) {
    return absl::FailedPreconditionError(absl::StrCat(
        "spec.num_devices: asks for ", spec.num_devices(), " devices, at most ",
        env_->max_job_devices, " allowed (", env_->max_job_devices_why, ")"));
  }

  // Datasets must exist for this tenant; CHAT data needs a chat template.
  std::vector<std::string> dataset_ids, train_paths;
  std::string valid_path;
  auto check_dataset = [&](const std::string& field, const std::string& id,
                           std::string* path) -> absl::Status {
    absl::StatusOr<DatasetRecord> ds = env_->datasets->GetDataset(tenant, id);
    if (!ds.ok()) {
      if (absl::IsNotFound(ds.status())) {
        return absl::NotFoundError(absl::StrCat(field, ": no dataset '", id, "'"));
      }
      return ds.status();
    }
    if (ds->format == "DATASET_FORMAT_CHAT" && !resolved.model->chat_template) {
      return absl::FailedPreconditionError(absl::StrCat(
          field, ": dataset '", id, "' holds chat rows but base model '", spec.base_model(),
          "' has no chat template",
          resolved.model->chat_template_problem.empty()
              ? ""
              : absl::StrCat(" (", resolved.model->chat_template_problem, ")")));
    }
    *path = ds->path;
    dataset_ids.push_back(id);
    return absl::OkStatus();
  };
  for (int i = 0; i < spec.training_dataset_ids_size(); ++i) {
    std::string path;
    OFT_RETURN_IF_ERROR(check_dataset(absl::StrCat("spec.training_dataset_ids[", i, "]"),
                                      spec.training_dataset_ids(i), &path));
    train_paths.push_back(path);
  }
  if (spec.has_validation_dataset_id()) {
    OFT_RETURN_IF_ERROR(
        check_dataset("spec.validation_dataset_id", spec.validation_dataset_id(), &valid_path));
  }
  std::vector<std::string> warnings;
  if (env_->check_job) {
    OFT_ASSIGN_OR_RETURN(warnings, env_->check_job(resolved, train_paths, valid_path));
  }

  NewJob job;
  job.tenant = tenant;
  job.idempotency_key = request.idempotency_key();
  OFT_ASSIGN_OR_RETURN(job.spec_json, JobSpecToJson(spec));
  job.priority = spec.priority();
  job.dataset_ids = dataset_ids;
  OFT_ASSIGN_OR_RETURN(CreateJobResult created, env_->store->CreateJob(job));
  if (created.created) {
    // The warnings (e.g. adjusted block sizes) are reported as events by the job runner
    // when the job starts; here they only had to not be errors.
    (void)warnings;
    LogEvent(LogLevel::kInfo, "job created",
             {{"job_id", created.job.id}, {"tenant", tenant}, {"base_model", spec.base_model()},
              {"output_adapter", spec.output_adapter_name()}, {"priority", spec.priority()}});
    if (env_->metrics) env_->metrics->JobCreated();
    env_->wake_scheduler();
    // Re-read: queue position and events after creation.
    if (auto fresh = env_->store->GetJob(tenant, created.job.id); fresh.ok()) created.job = *fresh;
  }
  OFT_ASSIGN_OR_RETURN(*response, JobToProto(created.job, env_->busy_devices(), env_->devices));
  return absl::OkStatus();
}

absl::Status JobServiceImpl::DoCancelJob(const std::string& tenant, const std::string& id,
                                         Job* response) const {
  OFT_RETURN_IF_ERROR(ValidateJobId(id));
  // Whether this call ends a queued job (for the log; a repeated cancel changes nothing).
  const absl::StatusOr<JobRecord> before = env_->store->GetJob(tenant, id);
  OFT_ASSIGN_OR_RETURN(JobRecord r, env_->store->RequestCancel(tenant, id));
  if (r.state == JobState::kRunning) env_->cancel_running(r.id);
  if (r.state == JobState::kCancelled && before.ok() && before->state == JobState::kQueued) {
    LogEvent(LogLevel::kInfo, "job finished",
             {{"job_id", r.id}, {"tenant", tenant}, {"state", "CANCELLED"},
              {"reason", "cancelled while queued"}});
    env_->queued_job_cancelled(r.id);
  }
  env_->wake_scheduler();
  OFT_ASSIGN_OR_RETURN(*response, JobToProto(r, env_->busy_devices(), env_->devices));
  return absl::OkStatus();
}

absl::Status JobServiceImpl::DoGetJob(const std::string& tenant, const std::string& id,
                                      Job* response) const {
  OFT_RETURN_IF_ERROR(ValidateJobId(id));
  OFT_ASSIGN_OR_RETURN(JobRecord r, env_->store->GetJob(tenant, id));
  OFT_ASSIGN_OR_RETURN(*response, JobToProto(r, env_->busy_devices(), env_->devices));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* JobServiceImpl::CreateJob(grpc::CallbackServerContext* ctx,
                                                    const oft::v1::CreateJobRequest* request,
                                                    Job* response) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request, response]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    return DoCreateJob(tenant, *request, response);
  });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* ctx,
                                                 const oft::v1::GetJobRequest* request,
                                                 Job* response) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request, response]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    return DoGetJob(tenant, request->id(), response);
  });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* ctx,
                                                   const oft::v1::ListJobsRequest* request,
                                                   oft::v1::ListJobsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request, response]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    std::vector<JobState> states;
    for (int i = 0; i < request->states_size(); ++i) {
      const auto s = static_cast<Job::State>(request->states(i));
      if (s == Job::STATE_UNSPECIFIED && request->states_size() == 1) break;
      absl::StatusOr<JobState> st = ParseJobState(Job::State_Name(s));
      if (!st.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("states[", i, "]: not a job state (", request->states(i), ")"));
      }
      states.push_back(*st);
    }
    OFT_ASSIGN_OR_RETURN(JobPage page, env_->store->ListJobs(tenant, states, request->page_size(),
                                                             request->page_token()));
    const int busy = env_->busy_devices();
    for (const JobRecord& r : page.jobs) {
      OFT_ASSIGN_OR_RETURN(*response->add_jobs(), JobToProto(r, busy, env_->devices));
    }
    response->set_next_page_token(page.next_page_token);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* ctx,
                                                    const oft::v1::CancelJobRequest* request,
                                                    Job* response) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request, response]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    return DoCancelJob(tenant, request->id(), response);
  });
  return reactor;
}

grpc::ServerWriteReactor<JobEvent>* JobServiceImpl::WatchJob(
    grpc::CallbackServerContext* ctx, const oft::v1::WatchJobRequest* request) {
  auto* reactor = new WatchReactor(env_, request->id(), request->after_event_id());
  // Authentication and the ownership check read the database: do them off the gRPC thread.
  const std::string id = request->id();
  const int64_t after = request->after_event_id();
  reactor->AddRef();  // for the task below
  const bool queued = env_->executor->Schedule([this, ctx, reactor, id, after] {
    bool nothing_to_send = false;
    absl::Status st = [&]() -> absl::Status {
      OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
      OFT_RETURN_IF_ERROR(ValidateJobId(id));
      if (after < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("after_event_id must be >= 0, got ", after));
      }
      OFT_ASSIGN_OR_RETURN(JobRecord job, env_->store->GetJob(tenant, id));
      // Event ids are dense and durable, so a larger id than the newest was never issued:
      // waiting for it could outlive the job (its terminal event would never be sent).
      if (after > job.latest_event_id) {
        return absl::OutOfRangeError(absl::StrCat("after_event_id ", after,
                                                  " is beyond the job's newest event ",
                                                  job.latest_event_id));
      }
      // The terminal event is a job's last: a watcher already past it would wait forever.
      nothing_to_send = IsTerminal(job.state) && after >= job.latest_event_id;
      return absl::OkStatus();
    }();
    if (!st.ok()) {
      reactor->FinishNow(ToGrpcStatus(st));
    } else if (nothing_to_send) {
      reactor->FinishNow(grpc::Status::OK);
    } else {
      reactor->Begin();
    }
    reactor->Release();
  });
  if (!queued) {
    reactor->FinishNow(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
    reactor->Release();
  }
  return reactor;
}

}  // namespace oft
