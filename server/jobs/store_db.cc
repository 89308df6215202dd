#include "server/jobs/store_db.h"

#include <array>

#include "absl/strings/str_cat.h"

namespace oft {
namespace {

constexpr size_t kMaxTenantBytes = 128;

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

}  // namespace

int StoreSchemaVersion() { return static_cast<int>(kMigrations.size()); }

absl::StatusOr<std::shared_ptr<SqliteDb>> OpenStoreDb(const std::string& db_path,
                                                      SqliteDbOptions options) {
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(db_path, options, kMigrations);
  if (!db.ok()) return db.status();
  return std::shared_ptr<SqliteDb>(std::move(*db));
}

absl::Status CheckTenant(absl::string_view tenant) {
  if (tenant.empty()) return absl::InvalidArgumentError("tenant must not be empty");
  if (tenant.size() > kMaxTenantBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant must be at most ", kMaxTenantBytes, " bytes, got ", tenant.size()));
  }
  return absl::OkStatus();
}

}  // namespace oft
