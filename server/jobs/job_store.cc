#include "server/jobs/job_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"

namespace oft {
namespace {

constexpr size_t kMaxTenantBytes = 128;
constexpr size_t kMaxIdempotencyKeyBytes = 128;
constexpr size_t kMinApiKeyBytes = 16;
constexpr int kMaxEventsPerRead = 10000;

// Schema migrations: kMigrations[i] brings the schema from version i to i + 1. Append
// new entries; never edit a released one. Times are unix microseconds (UTC).
constexpr std::array<const char*, 1> kMigrations = {
    R"sql(
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,       -- insertion order: paging and FIFO
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL,
  state TEXT NOT NULL
    CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
  priority INTEGER NOT NULL,
  idempotency_key TEXT,                        -- NULL = none (NULLs never collide)
  spec_json TEXT NOT NULL,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  failure_reason TEXT,
  failure_message TEXT,
  failure_field TEXT,
  step INTEGER NOT NULL DEFAULT 0,
  total_steps INTEGER NOT NULL DEFAULT 0,
  epoch REAL NOT NULL DEFAULT 0,
  loss REAL NOT NULL DEFAULT 0,
  eval_loss REAL,
  learning_rate REAL NOT NULL DEFAULT 0,
  grad_norm REAL NOT NULL DEFAULT 0,
  tokens_per_second REAL NOT NULL DEFAULT 0,
  eta_seconds REAL NOT NULL DEFAULT -1,
  result_adapter_name TEXT,
  result_adapter_version INTEGER,
  last_event_id INTEGER NOT NULL DEFAULT 0,
  UNIQUE (tenant, idempotency_key)
);
CREATE INDEX jobs_by_tenant ON jobs (tenant, seq);
CREATE INDEX jobs_by_queue ON jobs (state, priority, seq);

CREATE TABLE job_datasets (
  job_id TEXT NOT NULL REFERENCES jobs (id),
  dataset_id TEXT NOT NULL,
  PRIMARY KEY (job_id, dataset_id)
) WITHOUT ROWID;
CREATE INDEX job_datasets_by_dataset ON job_datasets (dataset_id);

CREATE TABLE events (
  job_id TEXT NOT NULL REFERENCES jobs (id),
  event_id INTEGER NOT NULL,
  kind TEXT NOT NULL,
  payload_json TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (job_id, event_id)
) WITHOUT ROWID;

CREATE TABLE datasets (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  rows INTEGER NOT NULL,
  blank_lines INTEGER NOT NULL,
  format TEXT NOT NULL,
  path TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX datasets_by_tenant ON datasets (tenant, seq);
CREATE INDEX datasets_by_path ON datasets (path);

CREATE TABLE api_keys (
  key_hash TEXT PRIMARY KEY,                   -- lowercase hex sha256 of the key
  tenant TEXT NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
)sql",
};

// ---- SQLite helpers ----

absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view what) {
  const int primary = rc & 0xff;
  std::string msg = absl::StrCat("job store: ", what, ": ",
                                 db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(msg);
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status Exec(sqlite3* db, const char* sql, absl::string_view what) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  sqlite3_free(err);  // sqlite3_errmsg(db) still holds the message
  if (rc != SQLITE_OK) return SqliteStatus(db, rc, what);
  return absl::OkStatus();
}

// A prepared statement. Bind indices are 1-based, column indices 0-based.
class Stmt {
 public:
  static absl::StatusOr<Stmt> Prepare(sqlite3* db, absl::string_view sql) {
    sqlite3_stmt* s = nullptr;
    const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &s, nullptr);
    if (rc != SQLITE_OK) return SqliteStatus(db, rc, "prepare");
    return Stmt(db, s);
  }
  Stmt(Stmt&& o) noexcept : db_(o.db_), s_(std::exchange(o.s_, nullptr)) {}
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() { sqlite3_finalize(s_); }

  Stmt& Bind(int i, int64_t v) {
    Check(sqlite3_bind_int64(s_, i, v));
    return *this;
  }
  Stmt& Bind(int i, int v) { return Bind(i, static_cast<int64_t>(v)); }
  Stmt& Bind(int i, double v) {
    Check(sqlite3_bind_double(s_, i, v));
    return *this;
  }
  Stmt& Bind(int i, absl::string_view v) {
    Check(sqlite3_bind_text64(s_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) { return Bind(i, absl::string_view(v)); }
  Stmt& Bind(int i, const char* v) { return Bind(i, absl::string_view(v)); }
  Stmt& BindNull(int i) {
    Check(sqlite3_bind_null(s_, i));
    return *this;
  }
  Stmt& Bind(int i, std::optional<absl::Time> t) {
    return t ? Bind(i, absl::ToUnixMicros(*t)) : BindNull(i);
  }
  Stmt& Bind(int i, std::optional<double> v) { return v ? Bind(i, *v) : BindNull(i); }
  // "" binds NULL (optional text columns).
  Stmt& BindOrNull(int i, absl::string_view v) { return v.empty() ? BindNull(i) : Bind(i, v); }

  // true: a row is available; false: done.
  absl::StatusOr<bool> Step() {
    if (!bind_status_.ok()) return bind_status_;
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteStatus(db_, rc, "step");
  }
  // Runs a statement that returns no rows.
  absl::Status Run() {
    OFT_ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return absl::OkStatus();
  }

  bool IsNull(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  int64_t Int(int c) const { return sqlite3_column_int64(s_, c); }
  double Double(int c) const { return sqlite3_column_double(s_, c); }
  std::string Text(int c) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, c));
    return p == nullptr ? std::string() : std::string(p, sqlite3_column_bytes(s_, c));
  }
  absl::Time Time(int c) const { return absl::FromUnixMicros(Int(c)); }
  std::optional<absl::Time> OptTime(int c) const {
    if (IsNull(c)) return std::nullopt;
    return Time(c);
  }

 private:
  Stmt(sqlite3* db, sqlite3_stmt* s) : db_(db), s_(s) {}
  void Check(int rc) {
    if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = SqliteStatus(db_, rc, "bind");
  }

  sqlite3* db_;
  sqlite3_stmt* s_;
  absl::Status bind_status_;
};

absl::StatusOr<sqlite3*> OpenConnection(const std::string& path, absl::Duration busy_timeout) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s = SqliteStatus(db, rc, absl::StrCat("open \"", path, "\""));
    sqlite3_close(db);
    return s;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(absl::ToInt64Milliseconds(busy_timeout)));
  return db;
}

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

absl::StatusOr<JobRecord> ReadJobRow(const Stmt& s) {
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

constexpr const char* kDatasetColumns =
    "SELECT id, tenant, name, sha256, size_bytes, rows, blank_lines, format, path, created_at, "
    "seq FROM datasets ";
constexpr int kDatasetSeqColumn = 10;

DatasetRecord ReadDatasetRow(const Stmt& s) {
  DatasetRecord d;
  d.id = s.Text(0);
  d.tenant = s.Text(1);
  d.name = s.Text(2);
  d.sha256 = s.Text(3);
  d.size_bytes = s.Int(4);
  d.rows = s.Int(5);
  d.blank_lines = s.Int(6);
  d.format = s.Text(7);
  d.path = s.Text(8);
  d.created_at = s.Time(9);
  return d;
}

// ---- paging ----

// Tokens carry the last returned seq plus a fingerprint of (kind, tenant, filter), so a
// token used with another filter or tenant is rejected instead of silently misapplied.
std::string Fingerprint(absl::string_view kind, absl::string_view tenant,
                        absl::string_view filter) {
  return Sha256Hex(absl::StrCat(kind, "\n", tenant, "\n", filter)).substr(0, 16);
}

std::string EncodePageToken(absl::string_view fingerprint, int64_t last_seq) {
  return absl::WebSafeBase64Escape(absl::StrCat("p1:", fingerprint, ":", last_seq));
}

// The seq to continue below; INT64_MAX for the first page.
absl::StatusOr<int64_t> DecodePageToken(const std::string& token, absl::string_view fingerprint) {
  if (token.empty()) return std::numeric_limits<int64_t>::max();
  const absl::Status bad = absl::InvalidArgumentError(
      "page_token is invalid, or was issued for a different filter or caller; "
      "pass the next_page_token of the previous response with the same filter");
  std::string raw;
  if (token.size() > 256 || !absl::WebSafeBase64Unescape(token, &raw)) return bad;
  std::vector<absl::string_view> parts = absl::StrSplit(raw, ':');
  int64_t seq = 0;
  if (parts.size() != 3 || parts[0] != "p1" || parts[1] != fingerprint ||
      !absl::SimpleAtoi(parts[2], &seq) || seq <= 0) {
    return bad;
  }
  return seq;
}

absl::StatusOr<int> EffectivePageSize(int page_size) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat("page_size must be >= 0 (0 = default ",
                                                   kDefaultPageSize, "), got ", page_size));
  }
  if (page_size == 0) return kDefaultPageSize;
  return std::min(page_size, kMaxPageSize);
}

// ---- validation ----

absl::Status CheckTenant(absl::string_view tenant) {
  if (tenant.empty()) return absl::InvalidArgumentError("tenant must not be empty");
  if (tenant.size() > kMaxTenantBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant must be at most ", kMaxTenantBytes, " bytes, got ", tenant.size()));
  }
  return absl::OkStatus();
}

bool IsJsonObject(absl::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                                 /*allow_exceptions=*/false);
  return j.is_object();
}

bool IsLowerHex(absl::string_view s, size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
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

std::string StateChangedPayload(absl::string_view from, JobState to, absl::string_view message,
                                const std::optional<JobFailureInfo>& failure) {
  nlohmann::json j = {{"previousState", std::string(from)},
                      {"state", std::string(JobStateName(to))},
                      {"message", std::string(message)}};
  if (failure) {
    nlohmann::json f = {{"reason", failure->reason}, {"message", failure->message}};
    if (!failure->field.empty()) f["field"] = failure->field;
    j["failure"] = std::move(f);
  }
  // Replace invalid UTF-8 from callers rather than throwing.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

// ---- states ----

absl::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "QUEUED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
  }
  return "STATE_UNSPECIFIED";
}

absl::StatusOr<JobState> ParseJobState(absl::string_view name) {
  for (JobState s : {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                     JobState::kCancelled}) {
    if (JobStateName(s) == name) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown job state \"", name, "\" (known: QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)"));
}

bool IsTerminal(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

bool IsLegalTransition(JobState from, JobState to) {
  switch (from) {
    case JobState::kQueued:
      return to == JobState::kRunning || to == JobState::kCancelled || to == JobState::kFailed;
    case JobState::kRunning:
      return to == JobState::kSucceeded || to == JobState::kFailed || to == JobState::kCancelled ||
             to == JobState::kQueued;
    default:
      return false;
  }
}

// ---- connections ----

// Borrows a reader connection for the lifetime of the lease.
class JobStore::ReadLease {
 public:
  explicit ReadLease(const JobStore* store) : store_(store) {
    absl::MutexLock lock(&store_->read_mu_);
    store_->read_mu_.Await(absl::Condition(
        +[](std::vector<sqlite3*>* free) { return !free->empty(); }, &store_->free_readers_));
    db_ = store_->free_readers_.back();
    store_->free_readers_.pop_back();
  }
  ~ReadLease() {
    absl::MutexLock lock(&store_->read_mu_);
    store_->free_readers_.push_back(db_);
  }
  sqlite3* db() const { return db_; }

 private:
  const JobStore* store_;
  sqlite3* db_ = nullptr;
};

JobStore::JobStore(std::string path, JobStoreOptions options)
    : path_(std::move(path)), options_(std::move(options)) {}

JobStore::~JobStore() {
  for (sqlite3* db : all_readers_) sqlite3_close(db);
  absl::MutexLock lock(&write_mu_);
  sqlite3_close(writer_);
}

int JobStore::SchemaVersion() { return static_cast<int>(kMigrations.size()); }

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& db_path) {
  return Open(db_path, JobStoreOptions());
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& db_path,
                                                         JobStoreOptions options) {
  if (db_path.empty() || db_path == ":memory:" || db_path.rfind("file:", 0) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("db_path must name a database file, got \"", db_path, "\""));
  }
  if (options.read_connections < 1 || options.read_connections > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("read_connections must be in [1, 64], got ", options.read_connections));
  }
  if (options.max_active_jobs_per_tenant < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_active_jobs_per_tenant must be >= 0, got ",
                                                   options.max_active_jobs_per_tenant));
  }
  if (sqlite3_threadsafe() == 0) {
    return absl::FailedPreconditionError("SQLite was built without thread support");
  }
  std::unique_ptr<JobStore> store(new JobStore(db_path, std::move(options)));
  const JobStoreOptions& opts = store->options_;

  absl::MutexLock lock(&store->write_mu_);
  OFT_ASSIGN_OR_RETURN(store->writer_, OpenConnection(db_path, opts.busy_timeout));
  sqlite3* w = store->writer_;
  {
    // journal_mode answers with the mode in effect, which stays "delete" where WAL is
    // impossible (e.g. no shared memory); we depend on WAL for readers beside the writer.
    OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(w, "PRAGMA journal_mode=WAL"));
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    const std::string mode = row ? s.Text(0) : "";
    if (mode != "wal") {
      return absl::FailedPreconditionError(absl::StrCat(
          "job store: \"", db_path, "\" cannot use WAL journaling (got \"", mode, "\")"));
    }
  }
  // FULL: a commit is fsynced before it returns, so acknowledged jobs survive power loss.
  OFT_RETURN_IF_ERROR(Exec(w, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", "pragmas"));

  // Migrate under an exclusive write transaction so concurrent openers serialise.
  OFT_RETURN_IF_ERROR(Exec(w, "BEGIN IMMEDIATE", "begin migration"));
  absl::Status migrated = [&]() -> absl::Status {
    OFT_RETURN_IF_ERROR(
        Exec(w, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", "schema"));
    OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(w, "SELECT MAX(version) FROM schema_version"));
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    const int64_t version = row && !s.IsNull(0) ? s.Int(0) : 0;
    const int64_t target = SchemaVersion();
    if (version > target) {
      return absl::FailedPreconditionError(
          absl::StrCat("job store: \"", db_path, "\" has schema version ", version,
                       ", newer than this server supports (", target, "); upgrade the server"));
    }
    for (int64_t v = version; v < target; ++v) {
      OFT_RETURN_IF_ERROR(
          Exec(w, kMigrations[v], absl::StrCat("migrate schema to version ", v + 1)));
    }
    if (version != target) {
      OFT_RETURN_IF_ERROR(Exec(w, "DELETE FROM schema_version", "schema"));
      OFT_ASSIGN_OR_RETURN(Stmt ins,
                           Stmt::Prepare(w, "INSERT INTO schema_version (version) VALUES (?)"));
      OFT_RETURN_IF_ERROR(ins.Bind(1, target).Run());
    }
    return absl::OkStatus();
  }();
  if (migrated.ok()) migrated = Exec(w, "COMMIT", "commit migration");
  if (!migrated.ok()) {
    (void)Exec(w, "ROLLBACK", "rollback migration");
    return migrated;
  }

  absl::MutexLock read_lock(&store->read_mu_);
  for (int i = 0; i < opts.read_connections; ++i) {
    OFT_ASSIGN_OR_RETURN(sqlite3 * r, OpenConnection(db_path, opts.busy_timeout));
    store->all_readers_.push_back(r);
    store->free_readers_.push_back(r);
    OFT_RETURN_IF_ERROR(Exec(r, "PRAGMA query_only=ON", "reader pragmas"));
  }
  return store;
}

absl::Time JobStore::Now() const { return options_.clock ? options_.clock() : absl::Now(); }

std::string JobStore::NewId(absl::string_view prefix) {
  const uint64_t hi = absl::Uniform<uint64_t>(rng_);
  const uint32_t lo = absl::Uniform<uint32_t>(rng_);
  const std::string bytes = absl::StrCat(absl::string_view(reinterpret_cast<const char*>(&hi), 8),
                                         absl::string_view(reinterpret_cast<const char*>(&lo), 4));
  return absl::StrCat(prefix, "-", absl::BytesToHexString(bytes));
}

void JobStore::SetEventListener(EventListener listener) {
  absl::MutexLock lock(&listener_mu_);
  listener_ = listener ? std::make_shared<const EventListener>(std::move(listener)) : nullptr;
}

void JobStore::Notify(const std::vector<std::pair<std::string, int64_t>>& events) {
  if (events.empty()) return;
  std::shared_ptr<const EventListener> listener;
  {
    absl::MutexLock lock(&listener_mu_);
    listener = listener_;
  }
  if (!listener) return;
  for (const auto& [job_id, event_id] : events) (*listener)(job_id, event_id);
}

absl::Status JobStore::RunInWriteTxn(const std::function<absl::Status()>& body) {
  std::vector<std::pair<std::string, int64_t>> events;
  {
    absl::MutexLock lock(&write_mu_);
    pending_events_.clear();
    OFT_RETURN_IF_ERROR(Exec(writer_, "BEGIN IMMEDIATE", "begin"));
    absl::Status status = body();
    if (status.ok()) status = Exec(writer_, "COMMIT", "commit");
    if (!status.ok()) {
      // A failed COMMIT may already have rolled back; ROLLBACK then fails harmlessly.
      if (sqlite3_get_autocommit(writer_) == 0) (void)Exec(writer_, "ROLLBACK", "rollback");
      pending_events_.clear();
      return status;
    }
    events.swap(pending_events_);
  }
  Notify(events);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> JobStore::AppendEventLocked(const std::string& job_id,
                                                    absl::string_view kind,
                                                    absl::string_view payload_json) {
  // The counter lives on the job row, so ids are gap-free and assigned in this transaction.
  OFT_ASSIGN_OR_RETURN(Stmt bump, Stmt::Prepare(writer_,
                                                "UPDATE jobs SET last_event_id = last_event_id + 1 "
                                                "WHERE id = ? RETURNING last_event_id"));
  bump.Bind(1, job_id);
  OFT_ASSIGN_OR_RETURN(bool row, bump.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job \"", job_id, "\" not found"));
  const int64_t event_id = bump.Int(0);
  OFT_RETURN_IF_ERROR(bump.Run());  // finish the statement before the next write
  OFT_ASSIGN_OR_RETURN(Stmt ins, Stmt::Prepare(writer_,
                                               "INSERT INTO events (job_id, event_id, kind, "
                                               "payload_json, created_at) VALUES (?, ?, ?, ?, ?)"));
  OFT_RETURN_IF_ERROR(ins.Bind(1, job_id)
                          .Bind(2, event_id)
                          .Bind(3, kind)
                          .Bind(4, payload_json)
                          .Bind(5, absl::ToUnixMicros(Now()))
                          .Run());
  pending_events_.emplace_back(job_id, event_id);
  return event_id;
}

absl::StatusOr<JobRecord> JobStore::GetJobLocked(const std::string& id) {
  OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(writer_, absl::StrCat(kJobColumns, "WHERE j.id = ?")));
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
  OFT_RETURN_IF_ERROR(RunInWriteTxn([&]() -> absl::Status {
    if (!job.idempotency_key.empty()) {
      OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(writer_,
                                                 "SELECT id, spec_json FROM jobs "
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
        OFT_ASSIGN_OR_RETURN(result.job, GetJobLocked(existing_id));
        result.created = false;
        return absl::OkStatus();
      }
    }
    for (const std::string& ds : job.dataset_ids) {
      OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(writer_,
                                                 "SELECT 1 FROM datasets "
                                                 "WHERE tenant = ? AND id = ?"));
      s.Bind(1, job.tenant).Bind(2, ds);
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) return absl::NotFoundError(absl::StrCat("dataset \"", ds, "\" not found"));
    }
    if (options_.max_active_jobs_per_tenant > 0) {
      OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(writer_,
                                                 "SELECT COUNT(*) FROM jobs WHERE tenant = ? "
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
    const std::string id = NewId("job");
    OFT_ASSIGN_OR_RETURN(Stmt ins, Stmt::Prepare(writer_,
                                                 "INSERT INTO jobs (id, tenant, state, priority, "
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
      OFT_ASSIGN_OR_RETURN(Stmt link, Stmt::Prepare(writer_,
                                                    "INSERT OR IGNORE INTO job_datasets "
                                                    "(job_id, dataset_id) VALUES (?, ?)"));
      OFT_RETURN_IF_ERROR(link.Bind(1, id).Bind(2, ds).Run());
    }
    OFT_RETURN_IF_ERROR(
        AppendEventLocked(id, kEventStateChanged,
                          StateChangedPayload("STATE_UNSPECIFIED", JobState::kQueued, "job created",
                                              std::nullopt))
            .status());
    OFT_ASSIGN_OR_RETURN(result.job, GetJobLocked(id));
    result.created = true;
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<JobRecord> JobStore::GetJob(const std::string& tenant, const std::string& id) const {
  ReadLease lease(this);
  OFT_ASSIGN_OR_RETURN(
      Stmt s,
      Stmt::Prepare(lease.db(), absl::StrCat(kJobColumns, "WHERE j.id = ? AND j.tenant = ?")));
  s.Bind(1, id).Bind(2, tenant);
  OFT_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
  return ReadJobRow(s);
}

absl::StatusOr<JobPage> JobStore::ListJobs(const std::string& tenant,
                                           const std::vector<JobState>& states, int page_size,
                                           const std::string& page_token) const {
  OFT_ASSIGN_OR_RETURN(const int limit, EffectivePageSize(page_size));
  std::vector<std::string> names;
  for (JobState st : states) names.emplace_back(JobStateName(st));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  const std::string fp = Fingerprint("jobs", tenant, absl::StrJoin(names, ","));
  OFT_ASSIGN_OR_RETURN(const int64_t below, DecodePageToken(page_token, fp));

  std::string sql = absl::StrCat(kJobColumns, "WHERE j.tenant = ? AND j.seq < ?");
  if (!names.empty()) {
    std::vector<std::string> marks(names.size(), "?");
    absl::StrAppend(&sql, " AND j.state IN (", absl::StrJoin(marks, ", "), ")");
  }
  absl::StrAppend(&sql, " ORDER BY j.seq DESC LIMIT ?");

  ReadLease lease(this);
  OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(lease.db(), sql));
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
      page.next_page_token = EncodePageToken(fp, last_seq);
      break;
    }
    OFT_ASSIGN_OR_RETURN(JobRecord job, ReadJobRow(s));
    last_seq = s.Int(kJobSeqColumn);
    page.jobs.push_back(std::move(job));
  }
  return page;
}

absl::StatusOr<JobRecord> JobStore::TransitionLocked(const std::string& id, JobState from,
                                                     JobState to, const TransitionFields& fields) {
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
  OFT_ASSIGN_OR_RETURN(Stmt cur, Stmt::Prepare(writer_, "SELECT state FROM jobs WHERE id = ?"));
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
  OFT_ASSIGN_OR_RETURN(Stmt up, Stmt::Prepare(writer_, R"sql(
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
      AppendEventLocked(id, kEventStateChanged,
                        StateChangedPayload(JobStateName(from), to, message, fields.failure))
          .status());
  return GetJobLocked(id);
}

absl::StatusOr<JobRecord> JobStore::Transition(const std::string& id, JobState from, JobState to,
                                               const TransitionFields& fields) {
  JobRecord out;
  OFT_RETURN_IF_ERROR(RunInWriteTxn([&]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(out, TransitionLocked(id, from, to, fields));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<JobRecord> JobStore::RequestCancel(const std::string& tenant,
                                                  const std::string& id) {
  JobRecord out;
  OFT_RETURN_IF_ERROR(RunInWriteTxn([&]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(JobRecord job, GetJobLocked(id));
    if (job.tenant != tenant)
      return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
    switch (job.state) {
      case JobState::kQueued: {
        TransitionFields f;
        f.message = "cancelled while queued";
        OFT_ASSIGN_OR_RETURN(out, TransitionLocked(id, JobState::kQueued, JobState::kCancelled, f));
        return absl::OkStatus();
      }
      case JobState::kRunning: {
        if (!job.cancel_requested) {
          OFT_ASSIGN_OR_RETURN(Stmt up, Stmt::Prepare(writer_,
                                                      "UPDATE jobs SET "
                                                      "cancel_requested = 1 WHERE id = ?"));
          OFT_RETURN_IF_ERROR(up.Bind(1, id).Run());
          OFT_RETURN_IF_ERROR(
              AppendEventLocked(id, "warning",
                                R"({"code":"CANCEL_REQUESTED","message":"cancellation requested; )"
                                R"(the job stops after the current step"})")
                  .status());
        }
        OFT_ASSIGN_OR_RETURN(out, GetJobLocked(id));
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
  OFT_RETURN_IF_ERROR(RunInWriteTxn([&]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(Stmt cur, Stmt::Prepare(writer_, "SELECT state FROM jobs WHERE id = ?"));
    cur.Bind(1, job_id);
    OFT_ASSIGN_OR_RETURN(bool row, cur.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("job \"", job_id, "\" not found"));
    OFT_ASSIGN_OR_RETURN(JobState state, ParseJobState(cur.Text(0)));
    if (IsTerminal(state)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job \"", job_id, "\" is ", JobStateName(state), "; its event log is closed"));
    }
    if (progress) {
      OFT_ASSIGN_OR_RETURN(Stmt up, Stmt::Prepare(writer_, R"sql(
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
    OFT_ASSIGN_OR_RETURN(event_id, AppendEventLocked(job_id, kind, payload_json));
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
  ReadLease lease(this);
  // One read transaction: the existence check and the events see the same snapshot.
  OFT_RETURN_IF_ERROR(Exec(lease.db(), "BEGIN", "begin read"));
  absl::StatusOr<std::vector<EventRecord>> result =
      [&]() -> absl::StatusOr<std::vector<EventRecord>> {
    OFT_ASSIGN_OR_RETURN(Stmt job, Stmt::Prepare(lease.db(), "SELECT 1 FROM jobs WHERE id = ?"));
    job.Bind(1, job_id);
    OFT_ASSIGN_OR_RETURN(bool found, job.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("job \"", job_id, "\" not found"));
    OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(lease.db(), R"sql(
        SELECT event_id, kind, payload_json, created_at FROM events
        WHERE job_id = ? AND event_id > ? ORDER BY event_id LIMIT ?)sql"));
    s.Bind(1, job_id).Bind(2, after_event_id).Bind(3, limit);
    std::vector<EventRecord> events;
    while (true) {
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      events.push_back({job_id, s.Int(0), s.Text(1), s.Text(2), s.Time(3)});
    }
    return events;
  }();
  (void)Exec(lease.db(), "COMMIT", "end read");
  return result;
}

absl::StatusOr<std::vector<JobRecord>> JobStore::QueuedJobs() const {
  ReadLease lease(this);
  OFT_ASSIGN_OR_RETURN(Stmt s,
                       Stmt::Prepare(lease.db(), absl::StrCat(kJobColumns,
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
  ReadLease lease(this);
  OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(lease.db(),
                                             "SELECT state, COUNT(*) FROM jobs GROUP BY state"));
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
  OFT_RETURN_IF_ERROR(RunInWriteTxn([&]() -> absl::Status {
    report = {};
    std::vector<std::pair<std::string, bool>> running;
    {
      OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(writer_,
                                                 "SELECT id, cancel_requested FROM jobs "
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
            TransitionLocked(id, JobState::kRunning, JobState::kCancelled, f).status());
        report.cancelled.push_back(id);
      } else {
        f.message = "requeued after restart";
        OFT_RETURN_IF_ERROR(
            TransitionLocked(id, JobState::kRunning, JobState::kQueued, f).status());
        report.requeued.push_back(id);
      }
    }
    return absl::OkStatus();
  }));
  return report;
}

// ---- datasets ----

absl::StatusOr<DatasetRecord> JobStore::CreateDataset(const NewDataset& d) {
  OFT_RETURN_IF_ERROR(CheckTenant(d.tenant));
  OFT_RETURN_IF_ERROR(ValidateName("name", d.name));
  if (!IsLowerHex(d.sha256, 64)) {
    return absl::InvalidArgumentError(absl::StrCat("sha256 must be 64 lowercase hex digits, got \"",
                                                   d.sha256.substr(0, 80), "\""));
  }
  if (d.size_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("size_bytes must be > 0, got ", d.size_bytes));
  }
  if (d.rows < 0)
    return absl::InvalidArgumentError(absl::StrCat("rows must be >= 0, got ", d.rows));
  if (d.blank_lines < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("blank_lines must be >= 0, got ", d.blank_lines));
  }
  if (d.format.empty()) return absl::InvalidArgumentError("format must not be empty");
  if (d.path.empty()) return absl::InvalidArgumentError("path must not be empty");

  DatasetRecord out;
  OFT_RETURN_IF_ERROR(RunInWriteTxn([&]() -> absl::Status {
    out = {NewId("ds"), d.tenant,      d.name,   d.sha256, d.size_bytes,
           d.rows,      d.blank_lines, d.format, d.path,   Now()};
    OFT_ASSIGN_OR_RETURN(Stmt ins, Stmt::Prepare(writer_, R"sql(
        INSERT INTO datasets (id, tenant, name, sha256, size_bytes, rows, blank_lines, format,
                              path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?))sql"));
    return ins.Bind(1, out.id)
        .Bind(2, out.tenant)
        .Bind(3, out.name)
        .Bind(4, out.sha256)
        .Bind(5, out.size_bytes)
        .Bind(6, out.rows)
        .Bind(7, out.blank_lines)
        .Bind(8, out.format)
        .Bind(9, out.path)
        .Bind(10, absl::ToUnixMicros(out.created_at))
        .Run();
  }));
  // Round to the stored precision so the result equals what GetDataset returns.
  out.created_at = absl::FromUnixMicros(absl::ToUnixMicros(out.created_at));
  return out;
}

absl::StatusOr<DatasetRecord> JobStore::GetDataset(const std::string& tenant,
                                                   const std::string& id) const {
  ReadLease lease(this);
  OFT_ASSIGN_OR_RETURN(
      Stmt s,
      Stmt::Prepare(lease.db(), absl::StrCat(kDatasetColumns, "WHERE id = ? AND tenant = ?")));
  s.Bind(1, id).Bind(2, tenant);
  OFT_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("dataset \"", id, "\" not found"));
  return ReadDatasetRow(s);
}

absl::StatusOr<DatasetPage> JobStore::ListDatasets(const std::string& tenant, int page_size,
                                                   const std::string& page_token) const {
  OFT_ASSIGN_OR_RETURN(const int limit, EffectivePageSize(page_size));
  const std::string fp = Fingerprint("datasets", tenant, "");
  OFT_ASSIGN_OR_RETURN(const int64_t below, DecodePageToken(page_token, fp));
  ReadLease lease(this);
  OFT_ASSIGN_OR_RETURN(Stmt s,
                       Stmt::Prepare(lease.db(), absl::StrCat(kDatasetColumns,
                                                              "WHERE tenant = ? AND seq < ? "
                                                              "ORDER BY seq DESC LIMIT ?")));
  s.Bind(1, tenant).Bind(2, below).Bind(3, limit + 1);
  DatasetPage page;
  int64_t last_seq = 0;
  while (true) {
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    if (static_cast<int>(page.datasets.size()) == limit) {
      page.next_page_token = EncodePageToken(fp, last_seq);
      break;
    }
    page.datasets.push_back(ReadDatasetRow(s));
    last_seq = s.Int(kDatasetSeqColumn);
  }
  return page;
}

absl::StatusOr<DeletedDataset> JobStore::DeleteDataset(const std::string& tenant,
                                                       const std::string& id) {
  DeletedDataset out;
  OFT_RETURN_IF_ERROR(RunInWriteTxn([&]() -> absl::Status {
    {
      OFT_ASSIGN_OR_RETURN(
          Stmt s,
          Stmt::Prepare(writer_, absl::StrCat(kDatasetColumns, "WHERE id = ? AND tenant = ?")));
      s.Bind(1, id).Bind(2, tenant);
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) return absl::NotFoundError(absl::StrCat("dataset \"", id, "\" not found"));
      out.record = ReadDatasetRow(s);
    }
    {
      OFT_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(writer_, R"sql(
          SELECT j.id, j.state FROM job_datasets d JOIN jobs j ON j.id = d.job_id
          WHERE d.dataset_id = ? AND j.state IN ('QUEUED', 'RUNNING') ORDER BY j.seq LIMIT 1)sql"));
      s.Bind(1, id);
      OFT_ASSIGN_OR_RETURN(bool row, s.Step());
      if (row) {
        return absl::FailedPreconditionError(
            absl::StrCat("dataset \"", id, "\" is used by job \"", s.Text(0), "\" (", s.Text(1),
                         "); cancel the job or wait until it ends"));
      }
    }
    OFT_ASSIGN_OR_RETURN(Stmt del, Stmt::Prepare(writer_, "DELETE FROM datasets WHERE id = ?"));
    OFT_RETURN_IF_ERROR(del.Bind(1, id).Run());
    OFT_ASSIGN_OR_RETURN(Stmt refs, Stmt::Prepare(writer_,
                                                  "SELECT 1 FROM datasets WHERE path = ? "
                                                  "LIMIT 1"));
    refs.Bind(1, out.record.path);
    OFT_ASSIGN_OR_RETURN(out.path_still_referenced, refs.Step());
    return absl::OkStatus();
  }));
  return out;
}

// ---- API keys ----

absl::Status JobStore::AddApiKey(const std::string& key, const std::string& tenant) {
  if (key.size() < kMinApiKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("api key must be at least ", kMinApiKeyBytes, " bytes, got ", key.size()));
  }
  OFT_RETURN_IF_ERROR(CheckTenant(tenant));
  const std::string hash = Sha256Hex(key);
  return RunInWriteTxn([&]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(Stmt s,
                         Stmt::Prepare(writer_, "SELECT 1 FROM api_keys WHERE key_hash = ?"));
    s.Bind(1, hash);
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    if (row) {
      return absl::AlreadyExistsError(
          absl::StrCat("api key with sha256 prefix ", hash.substr(0, 12), " already exists"));
    }
    OFT_ASSIGN_OR_RETURN(Stmt ins, Stmt::Prepare(writer_,
                                                 "INSERT INTO api_keys (key_hash, "
                                                 "tenant, created_at) VALUES (?, ?, ?)"));
    return ins.Bind(1, hash).Bind(2, tenant).Bind(3, absl::ToUnixMicros(Now())).Run();
  });
}

absl::StatusOr<std::string> JobStore::LookupApiKey(const std::string& key) const {
  const std::string hash = Sha256Hex(key);
  ReadLease lease(this);
  OFT_ASSIGN_OR_RETURN(Stmt s,
                       Stmt::Prepare(lease.db(), "SELECT tenant FROM api_keys WHERE key_hash = ?"));
  s.Bind(1, hash);
  OFT_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError("api key not found");
  return s.Text(0);
}

absl::Status JobStore::RevokeApiKey(const std::string& key) {
  const std::string hash = Sha256Hex(key);
  return RunInWriteTxn([&]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(Stmt del,
                         Stmt::Prepare(writer_, "DELETE FROM api_keys WHERE key_hash = ?"));
    OFT_RETURN_IF_ERROR(del.Bind(1, hash).Run());
    if (sqlite3_changes(writer_) == 0) return absl::NotFoundError("api key not found");
    return absl::OkStatus();
  });
}

}  // namespace oft
