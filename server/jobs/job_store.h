// JobStore: jobs and their state machine, and each job's event log, in the service
// database (jobs.db, see store_db.h; datasets and API keys live in DatasetStore and
// ApiKeyStore on the same database).
//
// Durability. The database runs in WAL mode with synchronous=FULL: when a mutating
// method returns OK its effect has been fsynced and survives a process crash or power
// loss. CreateJob writes the job row and its first event in one transaction, so a job id
// handed to a client always has a job behind it.
//
// Tenancy. Every client-facing read and write takes the caller's tenant; a job or
// dataset of another tenant is reported exactly like a missing one (NOT_FOUND), so ids
// leak nothing. Methods without a tenant (Transition, AppendEvent, EventsAfter,
// QueuedJobs, RecoverAfterRestart) are for the scheduler and trainer, or for the service
// after it has checked ownership with GetJob.
//
// Event log. Each job has events numbered 1, 2, 3, ... with no gaps; an event id is
// assigned in the same transaction that writes the event (and, for state changes, the
// new state), so the log and the job row never disagree. Events are encoded by the codec
// of job_events.h (kind = oft.v1.JobEvent payload field, payload = its proto3 JSON); the
// store only checks that a payload is a JSON object. Only the store writes "state_changed"
// events (CreateJob, Transition, RequestCancel, RecoverAfterRestart). The terminal state
// change is always a job's last event.
//
// State names are the oft.v1.Job.State value names ("QUEUED", ...) and failure reasons
// are oft.v1.JobFailure.Reason value names ("OUT_OF_MEMORY", ...), so the service maps
// them with the generated *_Parse functions.
//
// Thread safety. All methods may be called from any thread (SqliteDb serialises writes
// and lends readers). A read started after a write returned sees that write.
#ifndef OFT_SERVER_JOBS_JOB_STORE_H_
#define OFT_SERVER_JOBS_JOB_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/jobs/job_events.h"
#include "server/jobs/job_state.h"
#include "server/jobs/sqlite_db.h"

namespace oft {

// What CreateJob needs. The service has validated the spec already.
struct NewJob {
  std::string tenant;                    // owner; required, at most 128 bytes
  std::string idempotency_key;           // "" = none; at most 128 bytes
  std::string spec_json;                 // the canonical JSON of the whole spec (a JSON
                                         // object); compared byte for byte for idempotency
  int32_t priority = 0;                  // higher runs first, in [-100, 100]
  std::vector<std::string> dataset_ids;  // datasets the job reads; each must exist for
                                         // the tenant, and cannot be deleted while the
                                         // job is QUEUED or RUNNING
};

struct JobRecord {
  std::string id;  // "job-" + 24 lowercase hex digits
  std::string tenant;
  std::string idempotency_key;  // "" = none
  std::string spec_json;
  JobState state = JobState::kQueued;
  int32_t priority = 0;
  bool cancel_requested = false;  // RequestCancel on a RUNNING job
  absl::Time created_at;
  std::optional<absl::Time> started_at;   // the latest move to RUNNING
  std::optional<absl::Time> finished_at;  // the move to a terminal state
  JobFailureInfo failure;                 // FAILED only
  JobProgressInfo progress;
  std::string result_adapter_name;     // SUCCEEDED only ("" = none)
  int64_t result_adapter_version = 0;  // SUCCEEDED only (0 = none)
  int64_t queue_position = 0;          // QUEUED only: 1-based over all tenants' queued
                                       // jobs (priority desc, creation asc); else 0
  int64_t latest_event_id = 0;         // id of the job's newest event
};

struct CreateJobResult {
  JobRecord job;
  bool created = false;  // false: an earlier CreateJob with the same idempotency key made it
};

struct JobPage {
  std::vector<JobRecord> jobs;  // newest first
  std::string next_page_token;  // "" = last page
};

// Extra column values written together with a state change.
struct TransitionFields {
  std::string message;                    // for the state_changed event; "" = a default
  std::optional<JobFailureInfo> failure;  // required for -> FAILED, not allowed otherwise
  std::string result_adapter_name;        // -> SUCCEEDED only (optional)
  int64_t result_adapter_version = 0;     // -> SUCCEEDED only (optional)
};

struct RecoveryReport {
  std::vector<std::string> requeued;   // RUNNING -> QUEUED ("requeued after restart")
  std::vector<std::string> cancelled;  // RUNNING with cancel_requested -> CANCELLED
};

// Called after a commit that appended an event to a job, with the new event id (once
// per event, in order per job). Runs on the writing thread after the store's locks are
// released; it must be quick and must not block (hand work to an executor).
using EventListener = std::function<void(const std::string& job_id, int64_t event_id)>;

struct JobStoreOptions {
  std::function<absl::Time()> clock;                // time source; empty = absl::Now
  absl::Duration busy_timeout = absl::Seconds(10);  // Open only: wait for another process's lock
  int read_connections = 4;                         // Open only: reader pool size, in [1, 64]
  int64_t max_active_jobs_per_tenant = 0;           // QUEUED + RUNNING cap; 0 = none
};

// Paging (ListJobs): see kDefaultPageSize and PageToken in sqlite_db.h.

class JobStore {
 public:
  // Opens (creating if needed) the database at `db_path` and migrates its schema to the
  // current version. Errors: FAILED_PRECONDITION (WAL not available, or the schema is
  // newer than this binary knows), DATA_LOSS (not a database / corrupt), INVALID_ARGUMENT
  // (bad options), UNAVAILABLE (locked by another process past busy_timeout), INTERNAL.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& db_path);
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& db_path,
                                                        JobStoreOptions options);
  // A store on an open service database (OpenStoreDb), shared with the other stores.
  // INVALID_ARGUMENT for a null db or bad options.
  static absl::StatusOr<std::unique_ptr<JobStore>> Create(std::shared_ptr<SqliteDb> db,
                                                          JobStoreOptions options);

  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;
  ~JobStore();

  // The schema version this binary writes.
  static int SchemaVersion();

  // Registers the (single) event listener, replacing any earlier one; nullptr removes it.
  void SetEventListener(EventListener listener) ABSL_LOCKS_EXCLUDED(listener_mu_);

  // ---- jobs ----

  // Inserts a QUEUED job and its first event (state_changed, "job created") durably.
  // With a non-empty idempotency key already used by the tenant: the same spec_json
  // returns the existing job (created = false, whatever its state now); a different one
  // is ALREADY_EXISTS naming the key and the existing job. Other errors:
  // INVALID_ARGUMENT (empty tenant, spec_json not a JSON object, priority out of range,
  // over-long key), NOT_FOUND (a dataset id, named), RESOURCE_EXHAUSTED (the tenant has
  // max_active_jobs_per_tenant active jobs).
  absl::StatusOr<CreateJobResult> CreateJob(const NewJob& job);

  // NOT_FOUND (naming the id) when there is no such job for `tenant`.
  absl::StatusOr<JobRecord> GetJob(const std::string& tenant, const std::string& id) const;

  // The tenant's jobs, newest first; `states` empty = every state.
  absl::StatusOr<JobPage> ListJobs(const std::string& tenant, const std::vector<JobState>& states,
                                   int page_size, const std::string& page_token) const;
  // The ListJobs page token (no state filter) that continues after the tenant's job `id`.
  // NOT_FOUND naming `field` for an unknown id.
  absl::StatusOr<std::string> PageTokenAfter(const std::string& tenant, const std::string& id,
                                             absl::string_view field) const;

  // Compare-and-set of the state, with the state_changed event, in one transaction.
  // Sets started_at (-> RUNNING), finished_at and eta 0 (-> terminal), clears
  // cancel_requested (-> QUEUED). Errors: NOT_FOUND (id), FAILED_PRECONDITION when the
  // job is not in `from` or `from -> to` is illegal (the message names the states),
  // INVALID_ARGUMENT (failure missing for -> FAILED or given otherwise; a result
  // adapter for a state other than SUCCEEDED).
  absl::StatusOr<JobRecord> Transition(const std::string& id, JobState from, JobState to,
                                       const TransitionFields& fields = {});

  // CancelJob semantics: QUEUED -> CANCELLED at once; RUNNING -> cancel_requested set
  // (with a "warning" event, code "CANCEL_REQUESTED"), the worker then moves it to
  // CANCELLED; CANCELLED -> returned unchanged. Errors: NOT_FOUND, FAILED_PRECONDITION
  // (already SUCCEEDED or FAILED).
  absl::StatusOr<JobRecord> RequestCancel(const std::string& tenant, const std::string& id);

  // Appends an event and returns its id. With `progress`, the job's progress/metric
  // columns are updated in the same transaction. Errors: NOT_FOUND (job),
  // INVALID_ARGUMENT (empty kind, kind "state_changed" (use Transition), payload not a
  // JSON object), FAILED_PRECONDITION (the job is terminal: its last event is final).
  absl::StatusOr<int64_t> AppendEvent(
      const std::string& job_id, absl::string_view kind, absl::string_view payload_json,
      const std::optional<JobProgressInfo>& progress = std::nullopt);
  // The same for an event encoded by the codec (job_events.h), with its progress.
  absl::StatusOr<int64_t> AppendEvent(const std::string& job_id, const EncodedEvent& event) {
    return AppendEvent(job_id, event.kind, event.payload_json, event.progress);
  }

  // Up to `limit` events with event_id > after_event_id, ascending. Errors: NOT_FOUND
  // (job), INVALID_ARGUMENT (after_event_id < 0, limit outside [1, 10000]).
  absl::StatusOr<std::vector<EventRecord>> EventsAfter(const std::string& job_id,
                                                       int64_t after_event_id,
                                                       int limit = 1000) const;

  // All QUEUED jobs of all tenants in the order they should start: priority descending,
  // then creation ascending; queue_position is 1, 2, 3, ...
  absl::StatusOr<std::vector<JobRecord>> QueuedJobs() const;

  // Jobs of all tenants by state name ("QUEUED" -> 3, ...); states without jobs are absent.
  absl::StatusOr<std::map<std::string, int64_t>> CountJobsByState() const;

  // Call once at start-up, before the scheduler runs: every RUNNING job becomes QUEUED
  // (event message "requeued after restart"), or CANCELLED when its cancellation was
  // already requested. One transaction.
  absl::StatusOr<RecoveryReport> RecoverAfterRestart();

 private:
  JobStore(std::shared_ptr<SqliteDb> db, JobStoreOptions options);

  absl::Time Now() const;
  // Appends one event inside `txn`; returns its id. The listener hears of it after commit.
  absl::StatusOr<int64_t> AppendEventLocked(SqliteDb::WriteTxn& txn, const std::string& job_id,
                                            const EncodedEvent& event);
  // The job row read through the writer, inside its transaction.
  absl::StatusOr<JobRecord> GetJobLocked(SqliteDb::WriteTxn& txn, const std::string& id);
  absl::StatusOr<JobRecord> TransitionLocked(SqliteDb::WriteTxn& txn, const std::string& id,
                                             JobState from, JobState to,
                                             const TransitionFields& fields);
  // Calls the listener, outside every lock.
  void Notify(const std::string& job_id, int64_t event_id) ABSL_LOCKS_EXCLUDED(listener_mu_);

  const std::shared_ptr<SqliteDb> db_;
  const JobStoreOptions options_;

  absl::Mutex listener_mu_;
  std::shared_ptr<const EventListener> listener_ ABSL_GUARDED_BY(listener_mu_);
};

}  // namespace oft

#endif  // OFT_SERVER_JOBS_JOB_STORE_H_
