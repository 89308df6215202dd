// DatasetStore: records of uploaded datasets, in the service database. The bytes live in
// files the service names (content-addressed); the store keeps id, owner, checksum, shape
// and path.
//
// Tenancy: a dataset of another tenant is reported exactly like a missing one (NOT_FOUND).
// A dataset cannot be deleted while a QUEUED or RUNNING job (JobStore) uses it.
//
// Thread safety: all methods may be called from any thread.
#ifndef OFT_SERVER_JOBS_DATASET_STORE_H_
#define OFT_SERVER_JOBS_DATASET_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/jobs/sqlite_db.h"

namespace oft {

struct NewDataset {
  std::string tenant;       // owner; required
  std::string name;         // display name (validated by the caller)
  std::string sha256;       // lowercase hex, 64 characters
  int64_t size_bytes = 0;   // > 0
  int64_t rows = 0;         // non-blank rows, >= 0
  int64_t blank_lines = 0;  // >= 0
  std::string format;       // row format as the service names it (e.g. "DATASET_FORMAT_CHAT")
  std::string path;         // where the bytes are (server-chosen, content-addressed)
};

struct DatasetRecord {
  std::string id;  // "ds-" + 24 lowercase hex digits
  std::string tenant;
  std::string name;
  std::string sha256;
  int64_t size_bytes = 0;
  int64_t rows = 0;
  int64_t blank_lines = 0;
  std::string format;
  std::string path;
  absl::Time created_at;
};

struct DatasetPage {
  std::vector<DatasetRecord> datasets;  // newest first
  std::string next_page_token;          // "" = last page
};

struct DeletedDataset {
  DatasetRecord record;
  bool path_still_referenced = false;  // another dataset record (any tenant) has the same
                                       // path: do not delete the file
};

class DatasetStore {
 public:
  // `db` must hold the service schema (OpenStoreDb). `clock` empty = absl::Now.
  explicit DatasetStore(std::shared_ptr<SqliteDb> db, std::function<absl::Time()> clock = {});

  // Inserts a dataset record with a new id. INVALID_ARGUMENT names a bad field.
  absl::StatusOr<DatasetRecord> CreateDataset(const NewDataset& dataset);
  // NOT_FOUND (naming the id) when there is no such dataset for `tenant`.
  absl::StatusOr<DatasetRecord> GetDataset(const std::string& tenant, const std::string& id) const;
  // The tenant's datasets, newest first. Paging as kDefaultPageSize / PageToken describe
  // (INVALID_ARGUMENT for a negative page_size or a foreign token).
  absl::StatusOr<DatasetPage> ListDatasets(const std::string& tenant, int page_size,
                                           const std::string& page_token) const;
  // The ListDatasets page token that continues after the tenant's dataset `id`.
  // NOT_FOUND naming `field` for an unknown id.
  absl::StatusOr<std::string> PageTokenAfter(const std::string& tenant, const std::string& id,
                                             absl::string_view field) const;
  // Deletes the record. The caller deletes the file when !path_still_referenced.
  // Errors: NOT_FOUND, FAILED_PRECONDITION naming a QUEUED or RUNNING job that uses it.
  absl::StatusOr<DeletedDataset> DeleteDataset(const std::string& tenant, const std::string& id);

 private:
  absl::Time Now() const { return clock_ ? clock_() : absl::Now(); }

  const std::shared_ptr<SqliteDb> db_;
  const std::function<absl::Time()> clock_;
};

}  // namespace oft

#endif  // OFT_SERVER_JOBS_DATASET_STORE_H_
