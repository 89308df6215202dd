#include "server/jobs/job_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"
#include "server/jobs/store_db.h"

namespace oft {
namespace {

constexpr size_t kMaxIdempotencyKeyBytes = 128;
constexpr int kMaxEventsPerRead = 10000;

// ---- job rows ----

constexpr const char* kJobColumns = R"sql(
  SELECT j.id, j.tenant, j.idempotency_key, j.spec_json, j.state, j.priority,
         j.cancel_requested, j.created_at, j.started_at, j.finished_at,
         j.failure_reason, j.failure_message, j.failure_field,
         j.step, j.total_steps, j.epoch, j.loss, j.eval_loss, j.learning_rate, j.grad_norm,
         j.tokens_per_second, j.eta_seconds, j.result_adapter_name, j.result_adapter_version,
         j.last_event_id,
         CASE WHEN j.state = 'QUEUED' THEN
           (SELECT COUNT(*) FROM jobs q WHERE q.state = 'QUEUED' AND
              (q.priority > j.priority OR (q.priority = j.priority AND q.seq <= j.seq)))
         ELSE 0 END,
         j.seq
  FROM jobs j )sql";
constexpr int kJobSeqColumn = 26;

absl::StatusOr<JobRecord> ReadJobRow(const SqlStatement& s) {
  JobRecord j;
  j.id = s.Text(0);
  j.tenant = s.Text(1);
  j.idempotency_key = s.Text(2);
  j.spec_json = s.Text(3);
  OFT_ASSIGN_OR_RETURN(j.state, ParseJobState(s.Text(4)));
  j.priority = static_cast<int32_t>(s.Int(5));
  j.cancel_requested = s.Int(6) != 0;
  j.created_at = s.Time(7);
  j.started_at = s.OptTime(8);
  j.finished_at = s.OptTime(9);
  j.failure = {s.Text(10), s.Text(11), s.Text(12)};
  j.progress.step = s.Int(13);
  j.progress.total_steps = s.Int(14);
  j.progress.epoch = s.Double(15);
  j.progress.loss = s.Double(16);
  if (!s.IsNull(17)) j.progress.eval_loss = s.Double(17);
  j.progress.learning_rate = s.Double(18);
  j.progress.grad_norm = s.Double(19);
  j.progress.tokens_per_second = s.Double(20);
  j.progress.eta_seconds = s.Double(21);
  j.result_adapter_name = s.Text(22);
  j.result_adapter_version = s.Int(23);
  j.latest_event_id = s.Int(24);
  j.queue_position = s.Int(25);
  return j;
}

bool IsJsonObject(absl::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                                 /*allow_exceptions=*/false);
  return j.is_object();
}

absl::string_view DefaultMessage(JobState from, JobState to) {
  switch (to) {
    case JobState::kQueued:
      return "requeued";
    case JobState::kRunning:
      return "started";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return from == JobState::kQueued ? "cancelled while queued" : "cancelled";
  }
  return "";
}

}  // namespace

// ---- opening ----

JobStore::JobStore(std::shared_ptr<SqliteDb> db, JobStoreOptions options)
    : db_(std::move(db)), options_(std::move(options)) {}

JobStore::~JobStore() = default;

int JobStore::SchemaVersion() { return StoreSchemaVersion(); }

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& db_path) {
  return Open(db_path, JobStoreOptions());
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& db_path,
                                                         JobStoreOptions options) {
  SqliteDbOptions db_options;
  db_options.busy_timeout = options.busy_timeout;
  db_options.read_connections = options.read_connections;
  if (options.max_active_jobs_per_tenant < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_active_jobs_per_tenant must be >= 0, got ",
                                                   options.max_active_jobs_per_tenant));
  }
  OFT_ASSIGN_OR_RETURN(std::shared_ptr<SqliteDb> db, OpenStoreDb(db_path, db_options));
  return Create(std::move(db), std::move(options));
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Create(std::shared_ptr<SqliteDb> db,
                                                           JobStoreOptions options) {
  if (db == nullptr) return absl::InvalidArgumentError("JobStore needs a database");
  if (options.max_active_jobs_per_tenant < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_active_jobs_per_tenant must be >= 0, got ",
                                                   options.max_active_jobs_per_tenant));
  }
  return std::unique_ptr<JobStore>(new JobStore(std::move(db), std::move(options)));
}

absl::Time JobStore::Now() const { return options_.clock ? options_.clock() : absl::Now(); }

void JobStore::SetEventListener(EventListener listener) {
  absl::MutexLock lock(&listener_mu_);
  listener_ = listener ? std::make_shared<const EventListener>(std::move(listener)) : nullptr;
}

void JobStore::Notify(const std::string& job_id, int64_t event_id) {
  std::shared_ptr<const EventListener> listener;
  {
    absl::MutexLock lock(&listener_mu_);
    listener = listener_;
  }
  if (listener) (*listener)(job_id, event_id);
}

absl::StatusOr<int64_t> JobStore::AppendEventLocked(SqliteDb::WriteTxn& txn,
                                                    const std::string& job_id,
                                                    const EncodedEvent& event) {
  const absl::string_view kind = event.kind;
  const absl::string_view payload_json = event.payload_json;
  // The counter lives on the job row, so ids are gap-free and assigned in this transaction.
  OFT_ASSIGN_OR_RETURN(SqlStatement bump,
                       txn.Prepare("UPDATE jobs SET last_event_id = last_event_id + 1 "
                                   "WHERE id = ? RETURNING last_event_id"));
  bump.Bind(1, job_id);
  OFT_ASSIGN_OR_RETURN(bool row, bump.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job \"", job_id, "\" not found"));
  const int64_t event_id = bump.Int(0);
  OFT_RETURN_IF_ERROR(bump.Run());  // finish the statement before the next write
  OFT_ASSIGN_OR_RETURN(SqlStatement ins,
                       txn.Prepare("INSERT INTO events (job_id, event_id, kind, "
                                   "payload_json, created_at) VALUES (?, ?, ?, ?, ?)"));
  OFT_RETURN_IF_ERROR(ins.Bind(1, job_id)
                          .Bind(2, event_id)
                          .Bind(3, kind)
                          .Bind(4, payload_json)
                          .Bind(5, absl::ToUnixMicros(Now()))
                          .Run());
  txn.AfterCommit([this, job_id, event_id] { Notify(job_id, event_id); });
  return event_id;
}

absl::StatusOr<JobRecord> JobStore::GetJobLocked(SqliteDb::WriteTxn& txn, const std::string& id) {
  OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare(absl::StrCat(kJobColumns, "WHERE j.id = ?")));
  s.Bind(1, id);
  OFT_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
  return ReadJobRow(s);
}

// ---- jobs ----

absl::StatusOr<CreateJobResult> JobStore::CreateJob(const NewJob& job) {
  OFT_RETURN_IF_ERROR(CheckTenant(job.tenant));
  if (job.idempotency_key.size() > kMaxIdempotencyKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("idempotency_key must be at most ",
                                                   kMaxIdempotencyKeyBytes, " bytes, got ",
                                                   job.idempotency_key.size()));
  }
  if (job.priority < -100 || job.priority > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority must be in [-100, 100], got ", job.priority));
  }
  if (!IsJsonObject(job.spec_json)) {
    return absl::InvalidArgumentError("spec_json must be a JSON object");
  }
  for (const std::string& ds : job.dataset_ids) {
    if (ds.empty()) return absl::InvalidArgumentError("dataset_ids must not contain \"\"");
  }

  CreateJobResult result;
  OFT_RETURN_IF_ERROR(db_->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    if (!job.idempotency_key.empty()) {
      OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare("SELECT id, spec_json FROM jobs "
                                                       "WHERE tenant = ? AND idempotency_key = ?"));
      s.Bind(1, job.tenant).Bind(2, job.idempotency_key);
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      if (row) {
        const std::string existing_id = s.Text(0);
        if (s.Text(1) != job.spec_json) {
          return absl::AlreadyExistsError(absl::StrCat(
              "idempotency_key \"", job.idempotency_key, "\" was already used for job \"",
              existing_id, "\" with a different spec; use a new key for a new job"));
        }
        OFT_ASSIGN_OR_RETURN(result.job, GetJobLocked(txn, existing_id));
        result.created = false;
        return absl::OkStatus();
      }
    }
    for (const std::string& ds : job.dataset_ids) {
      OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare("SELECT 1 FROM datasets "
                                                       "WHERE tenant = ? AND id = ?"));
      s.Bind(1, job.tenant).Bind(2, ds);
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) return absl::NotFoundError(absl::StrCat("dataset \"", ds, "\" not found"));
    }
    if (options_.max_active_jobs_per_tenant > 0) {
      OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare("SELECT COUNT(*) FROM jobs WHERE tenant = ? "
                                                       "AND state IN ('QUEUED', 'RUNNING')"));
      s.Bind(1, job.tenant);
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      const int64_t active = row ? s.Int(0) : 0;
      if (active >= options_.max_active_jobs_per_tenant) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "tenant \"", job.tenant, "\" has ", active, " queued or running jobs, the limit is ",
            options_.max_active_jobs_per_tenant, "; wait for one to finish or cancel one"));
      }
    }
    const std::string id = txn.NewId("job");
    OFT_ASSIGN_OR_RETURN(SqlStatement ins,
                         txn.Prepare("INSERT INTO jobs (id, tenant, state, priority, "
                                     "idempotency_key, spec_json, created_at) "
                                     "VALUES (?, ?, 'QUEUED', ?, ?, ?, ?)"));
    OFT_RETURN_IF_ERROR(ins.Bind(1, id)
                            .Bind(2, job.tenant)
                            .Bind(3, static_cast<int64_t>(job.priority))
                            .BindOrNull(4, job.idempotency_key)
                            .Bind(5, job.spec_json)
                            .Bind(6, absl::ToUnixMicros(Now()))
                            .Run());
    for (const std::string& ds : job.dataset_ids) {
      OFT_ASSIGN_OR_RETURN(SqlStatement link, txn.Prepare("INSERT OR IGNORE INTO job_datasets "
                                                          "(job_id, dataset_id) VALUES (?, ?)"));
      OFT_RETURN_IF_ERROR(link.Bind(1, id).Bind(2, ds).Run());
    }
    OFT_RETURN_IF_ERROR(
        AppendEventLocked(txn, id,
                          EncodeStateChanged(std::nullopt, JobState::kQueued, "job created",
                                             std::nullopt))
            .status());
    OFT_ASSIGN_OR_RETURN(result.job, GetJobLocked(txn, id));
    result.created = true;
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<JobRecord> JobStore::GetJob(const std::string& tenant, const std::string& id) const {
  SqliteDb::ReadLease lease(*db_);
  OFT_ASSIGN_OR_RETURN(SqlStatement s,
                       lease.Prepare(absl::StrCat(kJobColumns, "WHERE j.id = ? AND j.tenant = ?")));
  s.Bind(1, id).Bind(2, tenant);
  OFT_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
  return ReadJobRow(s);
}

absl::StatusOr<std::string> JobStore::PageTokenAfter(const std::string& tenant, const std::string& id,
                                                     absl::string_view field) const {
  return PageToken("jobs", tenant, "").After(*db_, "jobs", tenant, id, field);
}

absl::StatusOr<JobPage> JobStore::ListJobs(const std::string& tenant,
                                           const std::vector<JobState>& states, int page_size,
                                           const std::string& page_token) const {
  OFT_ASSIGN_OR_RETURN(const int limit, EffectivePageSize(page_size));
  std::vector<std::string> names;
  for (JobState st : states) names.emplace_back(JobStateName(st));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  const PageToken tokens("jobs", tenant, absl::StrJoin(names, ","));
  OFT_ASSIGN_OR_RETURN(const int64_t below, tokens.Decode(page_token));

  std::string sql = absl::StrCat(kJobColumns, "WHERE j.tenant = ? AND j.seq < ?");
  if (!names.empty()) {
    std::vector<std::string> marks(names.size(), "?");
    absl::StrAppend(&sql, " AND j.state IN (", absl::StrJoin(marks, ", "), ")");
  }
  absl::StrAppend(&sql, " ORDER BY j.seq DESC LIMIT ?");

  SqliteDb::ReadLease lease(*db_);
  OFT_ASSIGN_OR_RETURN(SqlStatement s, lease.Prepare(sql));
  s.Bind(1, tenant);
  s.Bind(2, below);
  int index = 3;
  for (const std::string& n : names) s.Bind(index++, n);
  s.Bind(index, limit + 1);  // one more than asked tells whether another page exists

  JobPage page;
  int64_t last_seq = 0;
  while (true) {
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    if (static_cast<int>(page.jobs.size()) == limit) {
      page.next_page_token = tokens.Encode(last_seq);
      break;
    }
    OFT_ASSIGN_OR_RETURN(JobRecord job, ReadJobRow(s));
    last_seq = s.Int(kJobSeqColumn);
    page.jobs.push_back(std::move(job));
  }
  return page;
}

absl::StatusOr<JobRecord> JobStore::TransitionLocked(SqliteDb::WriteTxn& txn, const std::string& id,
                                                     JobState from, JobState to,
                                                     const TransitionFields& fields) {
  if (!IsLegalTransition(from, to)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job \"", id, "\": illegal transition ", JobStateName(from), " -> ", JobStateName(to)));
  }
  if (to == JobState::kFailed && (!fields.failure || fields.failure->reason.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job \"", id, "\": failure (with a reason) is required for a transition to FAILED"));
  }
  if (to != JobState::kFailed && fields.failure) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job \"", id, "\": failure is only allowed for a transition to FAILED, not to ",
        JobStateName(to)));
  }
  if (to != JobState::kSucceeded &&
      (!fields.result_adapter_name.empty() || fields.result_adapter_version != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job \"", id, "\": result_adapter is only allowed for a transition to SUCCEEDED, not to ",
        JobStateName(to)));
  }
  OFT_ASSIGN_OR_RETURN(SqlStatement cur, txn.Prepare("SELECT state FROM jobs WHERE id = ?"));
  cur.Bind(1, id);
  OFT_ASSIGN_OR_RETURN(bool row, cur.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
  const std::string current = cur.Text(0);
  if (current != JobStateName(from)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job \"", id, "\" is ", current, ", not ", JobStateName(from),
                     "; cannot move it ", JobStateName(from), " -> ", JobStateName(to)));
  }

  const int64_t now = absl::ToUnixMicros(Now());
  const bool terminal = IsTerminal(to);
  OFT_ASSIGN_OR_RETURN(SqlStatement up, txn.Prepare(R"sql(
      UPDATE jobs SET state = ?1,
        started_at = CASE WHEN ?1 = 'RUNNING' THEN ?2 ELSE started_at END,
        finished_at = CASE WHEN ?3 THEN ?2 ELSE finished_at END,
        eta_seconds = CASE WHEN ?3 THEN 0 WHEN ?1 = 'QUEUED' THEN -1 ELSE eta_seconds END,
        cancel_requested = CASE WHEN ?1 = 'QUEUED' THEN 0 ELSE cancel_requested END,
        failure_reason = ?4, failure_message = ?5, failure_field = ?6,
        result_adapter_name = ?7, result_adapter_version = ?8
      WHERE id = ?9)sql"));
  up.Bind(1, JobStateName(to)).Bind(2, now).Bind(3, static_cast<int64_t>(terminal));
  if (fields.failure) {
    up.Bind(4, fields.failure->reason)
        .Bind(5, fields.failure->message)
        .BindOrNull(6, fields.failure->field);
  } else {
    up.BindNull(4).BindNull(5).BindNull(6);
  }
  up.BindOrNull(7, fields.result_adapter_name);
  if (fields.result_adapter_version != 0) {
    up.Bind(8, fields.result_adapter_version);
  } else {
    up.BindNull(8);
  }
  up.Bind(9, id);
  OFT_RETURN_IF_ERROR(up.Run());

  const absl::string_view message =
      fields.message.empty() ? DefaultMessage(from, to) : absl::string_view(fields.message);
  OFT_RETURN_IF_ERROR(
      AppendEventLocked(txn, id, EncodeStateChanged(from, to, message, fields.failure)).status());
  return GetJobLocked(txn, id);
}

absl::StatusOr<JobRecord> JobStore::Transition(const std::string& id, JobState from, JobState to,
                                               const TransitionFields& fields) {
  JobRecord out;
  OFT_RETURN_IF_ERROR(db_->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    OFT_ASSIGN_OR_RETURN(out, TransitionLocked(txn, id, from, to, fields));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<JobRecord> JobStore::RequestCancel(const std::string& tenant,
                                                  const std::string& id) {
  JobRecord out;
  OFT_RETURN_IF_ERROR(db_->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    OFT_ASSIGN_OR_RETURN(JobRecord job, GetJobLocked(txn, id));
    if (job.tenant != tenant)
      return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
    switch (job.state) {
      case JobState::kQueued: {
        TransitionFields f;
        f.message = "cancelled while queued";
        OFT_ASSIGN_OR_RETURN(out,
                             TransitionLocked(txn, id, JobState::kQueued, JobState::kCancelled, f));
        return absl::OkStatus();
      }
      case JobState::kRunning: {
        if (!job.cancel_requested) {
          OFT_ASSIGN_OR_RETURN(SqlStatement up, txn.Prepare("UPDATE jobs SET "
                                                            "cancel_requested = 1 WHERE id = ?"));
          OFT_RETURN_IF_ERROR(up.Bind(1, id).Run());
          OFT_RETURN_IF_ERROR(
              AppendEventLocked(txn, id,
                                EncodeWarning(WarningCode::kCancelRequested,
                                              "cancellation requested; the job stops after the "
                                              "current step"))
                  .status());
        }
        OFT_ASSIGN_OR_RETURN(out, GetJobLocked(txn, id));
        return absl::OkStatus();
      }
      case JobState::kCancelled:
        out = std::move(job);
        return absl::OkStatus();
      case JobState::kSucceeded:
      case JobState::kFailed:
        return absl::FailedPreconditionError(absl::StrCat("job \"", id, "\" already ",
                                                          JobStateName(job.state),
                                                          "; only QUEUED or RUNNING jobs "
                                                          "can be cancelled"));
    }
    return absl::InternalError("unreachable");
  }));
  return out;
}

absl::StatusOr<int64_t> JobStore::AppendEvent(const std::string& job_id, absl::string_view kind,
                                              absl::string_view payload_json,
                                              const std::optional<JobProgressInfo>& progress) {
  if (kind.empty()) return absl::InvalidArgumentError("event kind must not be empty");
  if (kind == kEventStateChanged) {
    return absl::InvalidArgumentError(
        "event kind \"state_changed\" is written only by state transitions; use Transition");
  }
  if (!IsJsonObject(payload_json)) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload_json of a \"", kind, "\" event must be a JSON object"));
  }
  int64_t event_id = 0;
  OFT_RETURN_IF_ERROR(db_->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    OFT_ASSIGN_OR_RETURN(SqlStatement cur, txn.Prepare("SELECT state FROM jobs WHERE id = ?"));
    cur.Bind(1, job_id);
    OFT_ASSIGN_OR_RETURN(bool row, cur.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("job \"", job_id, "\" not found"));
    OFT_ASSIGN_OR_RETURN(JobState state, ParseJobState(cur.Text(0)));
    if (IsTerminal(state)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job \"", job_id, "\" is ", JobStateName(state), "; its event log is closed"));
    }
    if (progress) {
      OFT_ASSIGN_OR_RETURN(SqlStatement up, txn.Prepare(R"sql(
          UPDATE jobs SET step = ?, total_steps = ?, epoch = ?, loss = ?, eval_loss = ?,
            learning_rate = ?, grad_norm = ?, tokens_per_second = ?, eta_seconds = ?
          WHERE id = ?)sql"));
      OFT_RETURN_IF_ERROR(up.Bind(1, progress->step)
                              .Bind(2, progress->total_steps)
                              .Bind(3, progress->epoch)
                              .Bind(4, progress->loss)
                              .Bind(5, progress->eval_loss)
                              .Bind(6, progress->learning_rate)
                              .Bind(7, progress->grad_norm)
                              .Bind(8, progress->tokens_per_second)
                              .Bind(9, progress->eta_seconds)
                              .Bind(10, job_id)
                              .Run());
    }
    EncodedEvent event;
    event.kind = std::string(kind);
    event.payload_json = std::string(payload_json);
    OFT_ASSIGN_OR_RETURN(event_id, AppendEventLocked(txn, job_id, event));
    return absl::OkStatus();
  }));
  return event_id;
}

absl::StatusOr<std::vector<EventRecord>> JobStore::EventsAfter(const std::string& job_id,
                                                               int64_t after_event_id,
                                                               int limit) const {
  if (after_event_id < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("after_event_id must be >= 0, got ", after_event_id));
  }
  if (limit < 1 || limit > kMaxEventsPerRead) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit must be in [1, ", kMaxEventsPerRead, "], got ", limit));
  }
  // One read transaction: the existence check and the events see the same snapshot.
  std::vector<EventRecord> events;
  OFT_RETURN_IF_ERROR(db_->ReadSnapshot([&](const SqliteDb::ReadLease& lease) -> absl::Status {
    OFT_ASSIGN_OR_RETURN(SqlStatement job, lease.Prepare("SELECT 1 FROM jobs WHERE id = ?"));
    job.Bind(1, job_id);
    OFT_ASSIGN_OR_RETURN(bool found, job.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("job \"", job_id, "\" not found"));
    OFT_ASSIGN_OR_RETURN(SqlStatement s, lease.Prepare(R"sql(
        SELECT event_id, kind, payload_json, created_at FROM events
        WHERE job_id = ? AND event_id > ? ORDER BY event_id LIMIT ?)sql"));
    s.Bind(1, job_id).Bind(2, after_event_id).Bind(3, limit);
    while (true) {
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      events.push_back({job_id, s.Int(0), s.Text(1), s.Text(2), s.Time(3)});
    }
    return absl::OkStatus();
  }));
  return events;
}

absl::StatusOr<std::vector<JobRecord>> JobStore::QueuedJobs() const {
  SqliteDb::ReadLease lease(*db_);
  OFT_ASSIGN_OR_RETURN(SqlStatement s,
                       lease.Prepare(absl::StrCat(kJobColumns,
                                                  "WHERE j.state = 'QUEUED' "
                                                  "ORDER BY j.priority DESC, j.seq")));
  std::vector<JobRecord> jobs;
  while (true) {
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    OFT_ASSIGN_OR_RETURN(JobRecord job, ReadJobRow(s));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

absl::StatusOr<std::map<std::string, int64_t>> JobStore::CountJobsByState() const {
  SqliteDb::ReadLease lease(*db_);
  OFT_ASSIGN_OR_RETURN(
      SqlStatement s,
      SqlStatement::Prepare(lease.db(), "SELECT state, COUNT(*) FROM jobs GROUP BY state"));
  std::map<std::string, int64_t> counts;
  while (true) {
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    counts[s.Text(0)] = s.Int(1);
  }
  return counts;
}

absl::StatusOr<RecoveryReport> JobStore::RecoverAfterRestart() {
  RecoveryReport report;
  OFT_RETURN_IF_ERROR(db_->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    report = {};
    std::vector<std::pair<std::string, bool>> running;
    {
      OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare("SELECT id, cancel_requested FROM jobs "
                                                       "WHERE state = 'RUNNING' ORDER BY seq"));
      while (true) {
        OFT_ASSIGN_OR_RETURN(bool row, s.Step());
        if (!row) break;
        running.emplace_back(s.Text(0), s.Int(1) != 0);
      }
    }
    for (const auto& [id, cancel] : running) {
      TransitionFields f;
      if (cancel) {
        f.message = "cancelled (requested before the server restarted)";
        OFT_RETURN_IF_ERROR(
            TransitionLocked(txn, id, JobState::kRunning, JobState::kCancelled, f).status());
        report.cancelled.push_back(id);
      } else {
        f.message = "requeued after restart";
        OFT_RETURN_IF_ERROR(
            TransitionLocked(txn, id, JobState::kRunning, JobState::kQueued, f).status());
        report.requeued.push_back(id);
      }
    }
    return absl::OkStatus();
  }));
  return report;
}

}  // namespace oft
