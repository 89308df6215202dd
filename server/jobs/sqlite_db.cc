#include "server/jobs/sqlite_db.h"

#include <sqlite3.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace oft {
namespace {

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

}  // namespace

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

absl::Status SqlExec(sqlite3* db, const char* sql, absl::string_view what) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  sqlite3_free(err);  // sqlite3_errmsg(db) still holds the message
  if (rc != SQLITE_OK) return SqliteStatus(db, rc, what);
  return absl::OkStatus();
}

// ---- statements ----

absl::StatusOr<SqlStatement> SqlStatement::Prepare(sqlite3* db, absl::string_view sql) {
  sqlite3_stmt* s = nullptr;
  const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &s, nullptr);
  if (rc != SQLITE_OK) return SqliteStatus(db, rc, "prepare");
  return SqlStatement(db, s);
}

SqlStatement::SqlStatement(SqlStatement&& o) noexcept
    : db_(o.db_), s_(std::exchange(o.s_, nullptr)), bind_status_(std::move(o.bind_status_)) {}

SqlStatement::~SqlStatement() { sqlite3_finalize(s_); }

void SqlStatement::Check(int rc) {
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = SqliteStatus(db_, rc, "bind");
}

SqlStatement& SqlStatement::Bind(int i, int64_t v) {
  Check(sqlite3_bind_int64(s_, i, v));
  return *this;
}

SqlStatement& SqlStatement::Bind(int i, double v) {
  Check(sqlite3_bind_double(s_, i, v));
  return *this;
}

SqlStatement& SqlStatement::Bind(int i, absl::string_view v) {
  Check(sqlite3_bind_text64(s_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

SqlStatement& SqlStatement::BindNull(int i) {
  Check(sqlite3_bind_null(s_, i));
  return *this;
}

SqlStatement& SqlStatement::Bind(int i, std::optional<absl::Time> t) {
  return t ? Bind(i, absl::ToUnixMicros(*t)) : BindNull(i);
}

SqlStatement& SqlStatement::Bind(int i, std::optional<double> v) {
  return v ? Bind(i, *v) : BindNull(i);
}

SqlStatement& SqlStatement::BindOrNull(int i, absl::string_view v) {
  return v.empty() ? BindNull(i) : Bind(i, v);
}

absl::StatusOr<bool> SqlStatement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  const int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteStatus(db_, rc, "step");
}

absl::Status SqlStatement::Run() {
  OFT_ASSIGN_OR_RETURN(bool row, Step());
  (void)row;
  return absl::OkStatus();
}

bool SqlStatement::IsNull(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
int64_t SqlStatement::Int(int c) const { return sqlite3_column_int64(s_, c); }
double SqlStatement::Double(int c) const { return sqlite3_column_double(s_, c); }

std::string SqlStatement::Text(int c) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, c));
  return p == nullptr ? std::string() : std::string(p, sqlite3_column_bytes(s_, c));
}

absl::Time SqlStatement::Time(int c) const { return absl::FromUnixMicros(Int(c)); }

std::optional<absl::Time> SqlStatement::OptTime(int c) const {
  if (IsNull(c)) return std::nullopt;
  return Time(c);
}

// ---- transactions and leases ----

int64_t SqliteDb::WriteTxn::Changes() const { return sqlite3_changes64(db_); }

std::string SqliteDb::WriteTxn::NewId(absl::string_view prefix) {
  const uint64_t hi = absl::Uniform<uint64_t>(*rng_);
  const uint32_t lo = absl::Uniform<uint32_t>(*rng_);
  const std::string bytes = absl::StrCat(absl::string_view(reinterpret_cast<const char*>(&hi), 8),
                                         absl::string_view(reinterpret_cast<const char*>(&lo), 4));
  return absl::StrCat(prefix, "-", absl::BytesToHexString(bytes));
}

SqliteDb::ReadLease::ReadLease(const SqliteDb& db) : owner_(db) {
  absl::MutexLock lock(&owner_.read_mu_);
  owner_.read_mu_.Await(absl::Condition(
      +[](std::vector<sqlite3*>* free) { return !free->empty(); }, &owner_.free_readers_));
  conn_ = owner_.free_readers_.back();
  owner_.free_readers_.pop_back();
}

SqliteDb::ReadLease::~ReadLease() {
  absl::MutexLock lock(&owner_.read_mu_);
  owner_.free_readers_.push_back(conn_);
}

absl::Status SqliteDb::Write(const std::function<absl::Status(WriteTxn&)>& body) {
  std::vector<std::function<void()>> after_commit;
  {
    absl::MutexLock lock(&write_mu_);
    OFT_RETURN_IF_ERROR(SqlExec(writer_, "BEGIN IMMEDIATE", "begin"));
    WriteTxn txn(writer_, &rng_);
    absl::Status status = body(txn);
    if (status.ok()) status = SqlExec(writer_, "COMMIT", "commit");
    if (!status.ok()) {
      // A failed COMMIT may already have rolled back; ROLLBACK then fails harmlessly.
      if (sqlite3_get_autocommit(writer_) == 0) (void)SqlExec(writer_, "ROLLBACK", "rollback");
      return status;
    }
    after_commit.swap(txn.after_commit_);
  }
  for (const auto& fn : after_commit) fn();
  return absl::OkStatus();
}

absl::Status SqliteDb::ReadSnapshot(
    const std::function<absl::Status(const ReadLease&)>& body) const {
  ReadLease lease(*this);
  OFT_RETURN_IF_ERROR(SqlExec(lease.db(), "BEGIN", "begin read"));
  absl::Status status = body(lease);
  (void)SqlExec(lease.db(), "COMMIT", "end read");
  return status;
}

// ---- opening ----

SqliteDb::~SqliteDb() {
  for (sqlite3* db : all_readers_) sqlite3_close(db);
  absl::MutexLock lock(&write_mu_);
  sqlite3_close(writer_);
}

absl::StatusOr<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path,
                                                         SqliteDbOptions options,
                                                         absl::Span<const char* const> migrations) {
  if (path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("db_path must name a database file, got \"", path, "\""));
  }
  if (options.read_connections < 1 || options.read_connections > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("read_connections must be in [1, 64], got ", options.read_connections));
  }
  if (sqlite3_threadsafe() == 0) {
    return absl::FailedPreconditionError("SQLite was built without thread support");
  }
  std::unique_ptr<SqliteDb> db(new SqliteDb(path, options));

  absl::MutexLock lock(&db->write_mu_);
  OFT_ASSIGN_OR_RETURN(db->writer_, OpenConnection(path, options.busy_timeout));
  sqlite3* w = db->writer_;
  {
    // journal_mode answers with the mode in effect, which stays "delete" where WAL is
    // impossible (e.g. no shared memory); we depend on WAL for readers beside the writer.
    OFT_ASSIGN_OR_RETURN(SqlStatement s, SqlStatement::Prepare(w, "PRAGMA journal_mode=WAL"));
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    const std::string mode = row ? s.Text(0) : "";
    if (mode != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat("job store: \"", path, "\" cannot use WAL journaling (got \"", mode, "\")"));
    }
  }
  // FULL: a commit is fsynced before it returns, so acknowledged writes survive power loss.
  OFT_RETURN_IF_ERROR(SqlExec(w, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", "pragmas"));

  // Migrate under an exclusive write transaction so concurrent openers serialise.
  OFT_RETURN_IF_ERROR(SqlExec(w, "BEGIN IMMEDIATE", "begin migration"));
  absl::Status migrated = [&]() -> absl::Status {
    OFT_RETURN_IF_ERROR(SqlExec(
        w, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", "schema"));
    OFT_ASSIGN_OR_RETURN(SqlStatement s,
                         SqlStatement::Prepare(w, "SELECT MAX(version) FROM schema_version"));
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    const int64_t version = row && !s.IsNull(0) ? s.Int(0) : 0;
    const int64_t target = static_cast<int64_t>(migrations.size());
    if (version > target) {
      return absl::FailedPreconditionError(
          absl::StrCat("job store: \"", path, "\" has schema version ", version,
                       ", newer than this server supports (", target, "); upgrade the server"));
    }
    for (int64_t v = version; v < target; ++v) {
      OFT_RETURN_IF_ERROR(
          SqlExec(w, migrations[v], absl::StrCat("migrate schema to version ", v + 1)));
    }
    if (version != target) {
      OFT_RETURN_IF_ERROR(SqlExec(w, "DELETE FROM schema_version", "schema"));
      OFT_ASSIGN_OR_RETURN(
          SqlStatement ins,
          SqlStatement::Prepare(w, "INSERT INTO schema_version (version) VALUES (?)"));
      OFT_RETURN_IF_ERROR(ins.Bind(1, target).Run());
    }
    return absl::OkStatus();
  }();
  if (migrated.ok()) migrated = SqlExec(w, "COMMIT", "commit migration");
  if (!migrated.ok()) {
    (void)SqlExec(w, "ROLLBACK", "rollback migration");
    return migrated;
  }

  absl::MutexLock read_lock(&db->read_mu_);
  for (int i = 0; i < options.read_connections; ++i) {
    OFT_ASSIGN_OR_RETURN(sqlite3 * r, OpenConnection(path, options.busy_timeout));
    db->all_readers_.push_back(r);
    db->free_readers_.push_back(r);
    OFT_RETURN_IF_ERROR(SqlExec(r, "PRAGMA query_only=ON", "reader pragmas"));
  }
  return db;
}

// ---- paging ----

absl::StatusOr<int> EffectivePageSize(int page_size) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat("page_size must be >= 0 (0 = default ",
                                                   kDefaultPageSize, "), got ", page_size));
  }
  if (page_size == 0) return kDefaultPageSize;
  return std::min(page_size, kMaxPageSize);
}

PageToken::PageToken(absl::string_view kind, absl::string_view tenant, absl::string_view filter)
    : fingerprint_(Sha256Hex(absl::StrCat(kind, "\n", tenant, "\n", filter)).substr(0, 16)) {}

std::string PageToken::Encode(int64_t last_seq) const {
  return absl::WebSafeBase64Escape(absl::StrCat("p1:", fingerprint_, ":", last_seq));
}

absl::StatusOr<std::string> PageToken::After(const SqliteDb& db, absl::string_view table,
                                             const std::string& tenant, const std::string& id,
                                             absl::string_view field) const {
  SqliteDb::ReadLease lease(db);
  OFT_ASSIGN_OR_RETURN(SqlStatement s,
                       lease.Prepare(absl::StrCat("SELECT seq FROM ", table, " WHERE tenant = ? AND id = ?")));
  s.Bind(1, tenant).Bind(2, id);
  OFT_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError(absl::StrCat(field, ": no such id \"", id.substr(0, 80), "\""));
  return Encode(s.Int(0));
}

absl::StatusOr<int64_t> PageToken::Decode(const std::string& token) const {
  if (token.empty()) return std::numeric_limits<int64_t>::max();
  const absl::Status bad = absl::InvalidArgumentError(
      "page_token is invalid, or was issued for a different filter or caller; "
      "pass the next_page_token of the previous response with the same filter");
  std::string raw;
  if (token.size() > 256 || !absl::WebSafeBase64Unescape(token, &raw)) return bad;
  std::vector<absl::string_view> parts = absl::StrSplit(raw, ':');
  int64_t seq = 0;
  if (parts.size() != 3 || parts[0] != "p1" || parts[1] != fingerprint_ ||
      !absl::SimpleAtoi(parts[2], &seq) || seq <= 0) {
    return bad;
  }
  return seq;
}

}  // namespace oft
