// SqliteDb: one SQLite database file in WAL mode, shared by the stores built on it
// (JobStore, DatasetStore, ApiKeyStore): one writer connection, a pool of reader
// connections, write transactions, read leases, prepared statements, schema migrations and
// opaque page tokens. It knows nothing about jobs; the stores own their SQL.
//
// Durability: synchronous=FULL, so a write transaction that returned OK has been fsynced.
//
// Thread safety: every method may be called from any thread. Write transactions are
// serialised by a mutex (SQLite allows one writer at a time anyway); reads borrow one of
// `read_connections` separate connections, which WAL lets run beside each other and beside
// a write, so readers never wait for a commit's fsync. A read started after a write
// returned sees that write.
#ifndef OFT_SERVER_JOBS_SQLITE_DB_H_
#define OFT_SERVER_JOBS_SQLITE_DB_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

struct sqlite3;
struct sqlite3_stmt;

namespace oft {

// A SQLite result code as a Status, "job store: <what>: <sqlite message>": BUSY / LOCKED ->
// UNAVAILABLE, FULL / NOMEM -> RESOURCE_EXHAUSTED, CORRUPT / NOTADB -> DATA_LOSS,
// CANTOPEN / PERM / READONLY -> FAILED_PRECONDITION, anything else INTERNAL.
absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view what);

// Runs `sql` (one or more statements without results) on `db`.
absl::Status SqlExec(sqlite3* db, const char* sql, absl::string_view what);

// A prepared statement. Bind indices are 1-based, column indices 0-based. A failed bind is
// remembered and returned by the next Step, so binds can be chained.
class SqlStatement {
 public:
  // Errors: as SqliteStatus (a syntax error is INTERNAL).
  static absl::StatusOr<SqlStatement> Prepare(sqlite3* db, absl::string_view sql);
  SqlStatement(SqlStatement&& o) noexcept;
  SqlStatement& operator=(SqlStatement&&) = delete;
  ~SqlStatement();

  SqlStatement& Bind(int i, int64_t v);
  SqlStatement& Bind(int i, int v) { return Bind(i, static_cast<int64_t>(v)); }
  SqlStatement& Bind(int i, double v);
  SqlStatement& Bind(int i, absl::string_view v);
  SqlStatement& Bind(int i, const std::string& v) { return Bind(i, absl::string_view(v)); }
  SqlStatement& Bind(int i, const char* v) { return Bind(i, absl::string_view(v)); }
  SqlStatement& BindNull(int i);
  // Unix microseconds, or NULL.
  SqlStatement& Bind(int i, std::optional<absl::Time> t);
  SqlStatement& Bind(int i, std::optional<double> v);
  // "" binds NULL (optional text columns).
  SqlStatement& BindOrNull(int i, absl::string_view v);

  // true: a row is available; false: done.
  absl::StatusOr<bool> Step();
  // Runs a statement that returns no rows (or ignores them).
  absl::Status Run();

  bool IsNull(int c) const;
  int64_t Int(int c) const;
  double Double(int c) const;
  std::string Text(int c) const;
  absl::Time Time(int c) const;  // a unix-microseconds column
  std::optional<absl::Time> OptTime(int c) const;

 private:
  SqlStatement(sqlite3* db, sqlite3_stmt* s) : db_(db), s_(s) {}
  void Check(int rc);

  sqlite3* db_;
  sqlite3_stmt* s_;
  absl::Status bind_status_;
};

struct SqliteDbOptions {
  absl::Duration busy_timeout = absl::Seconds(10);  // wait for another process's lock
  int read_connections = 4;                         // reader pool size, in [1, 64]
};

class SqliteDb {
 public:
  // The open write transaction, handed to the body of Write. Valid only inside it.
  class WriteTxn {
   public:
    sqlite3* db() const { return db_; }
    absl::StatusOr<SqlStatement> Prepare(absl::string_view sql) const {
      return SqlStatement::Prepare(db_, sql);
    }
    // Rows changed by the latest INSERT, UPDATE or DELETE.
    int64_t Changes() const;
    // A fresh random id "<prefix>-" + 24 lowercase hex digits.
    std::string NewId(absl::string_view prefix);
    // Runs `fn` after this transaction commits, outside every lock of the db, in the
    // order registered. Dropped when the transaction rolls back.
    void AfterCommit(std::function<void()> fn) { after_commit_.push_back(std::move(fn)); }

   private:
    friend class SqliteDb;
    WriteTxn(sqlite3* db, absl::BitGen* rng) : db_(db), rng_(rng) {}
    sqlite3* db_;
    absl::BitGen* rng_;
    std::vector<std::function<void()>> after_commit_;
  };

  // A borrowed reader connection (query_only) for the lifetime of the lease; blocks while
  // all readers are lent.
  class ReadLease {
   public:
    explicit ReadLease(const SqliteDb& db);
    ReadLease(const ReadLease&) = delete;
    ReadLease& operator=(const ReadLease&) = delete;
    ~ReadLease();
    sqlite3* db() const { return conn_; }
    absl::StatusOr<SqlStatement> Prepare(absl::string_view sql) const {
      return SqlStatement::Prepare(conn_, sql);
    }

   private:
    const SqliteDb& owner_;
    sqlite3* conn_ = nullptr;
  };

  // Opens (creating if needed) the database file at `path` in WAL mode and migrates its
  // schema: migrations[i] takes version i to i + 1, each in the same exclusive transaction
  // (concurrent openers serialise). Errors: INVALID_ARGUMENT (":memory:", a "file:" URI or
  // bad options), FAILED_PRECONDITION (WAL not available, or the file's schema is newer
  // than migrations.size()), DATA_LOSS (not a database / corrupt), UNAVAILABLE (locked past
  // busy_timeout), INTERNAL.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path,
                                                        SqliteDbOptions options,
                                                        absl::Span<const char* const> migrations);

  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;
  ~SqliteDb();

  const std::string& path() const { return path_; }

  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT on the writer; ROLLBACK when the body or
  // the commit fails (and the body's status, or the commit's, is returned). On success the
  // body's AfterCommit functions run after the write lock is released.
  absl::Status Write(const std::function<absl::Status(WriteTxn&)>& body)
      ABSL_LOCKS_EXCLUDED(write_mu_);

  // Runs `body` in one read transaction on a leased reader: every statement of the body
  // sees the same snapshot.
  absl::Status ReadSnapshot(const std::function<absl::Status(const ReadLease&)>& body) const;

 private:
  SqliteDb(std::string path, SqliteDbOptions options) : path_(std::move(path)), options_(options) {}

  const std::string path_;
  const SqliteDbOptions options_;

  absl::Mutex write_mu_;
  sqlite3* writer_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  absl::BitGen rng_ ABSL_GUARDED_BY(write_mu_);

  mutable absl::Mutex read_mu_;
  std::vector<sqlite3*> all_readers_;  // owned; fixed after Open
  mutable std::vector<sqlite3*> free_readers_ ABSL_GUARDED_BY(read_mu_);
};

// ---- paging ----

// page_size 0 means kDefaultPageSize, larger than kMaxPageSize is lowered to it.
inline constexpr int kDefaultPageSize = 50;
inline constexpr int kMaxPageSize = 1000;

// The number of rows a page holds for a requested `page_size`; INVALID_ARGUMENT when it
// is negative.
absl::StatusOr<int> EffectivePageSize(int page_size);

// Opaque page tokens: the last returned row's insertion sequence number plus a
// fingerprint of (listing kind, tenant, filter), so a token used with another listing,
// tenant or filter is rejected instead of silently misapplied. Tokens never expire.
class PageToken {
 public:
  PageToken(absl::string_view kind, absl::string_view tenant, absl::string_view filter);
  // The token that continues after the row with sequence number `last_seq`.
  std::string Encode(int64_t last_seq) const;
  // The sequence number to continue below: INT64_MAX for "" (the first page).
  // INVALID_ARGUMENT for a malformed token or one issued for another listing.
  absl::StatusOr<int64_t> Decode(const std::string& token) const;
  // The token that continues after the row of `table` with this tenant and id: a cursor
  // given as an object id (OpenAI's `after`). NOT_FOUND naming `field` when the tenant has
  // no such row. `table` is a constant of the caller, never user input.
  absl::StatusOr<std::string> After(const SqliteDb& db, absl::string_view table,
                                    const std::string& tenant, const std::string& id,
                                    absl::string_view field) const;

 private:
  std::string fingerprint_;
};

}  // namespace oft

#endif  // OFT_SERVER_JOBS_SQLITE_DB_H_
