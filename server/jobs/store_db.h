// The service's database (jobs.db): its schema, shared by JobStore, DatasetStore and
// ApiKeyStore, and the checks those stores share.
//
// Times are stored as unix microseconds (UTC). Every listing is keyed on an insertion
// sequence number (`seq`), so rows created while a client pages never repeat or shift a
// later page.
#ifndef OFT_SERVER_JOBS_STORE_DB_H_
#define OFT_SERVER_JOBS_STORE_DB_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/jobs/sqlite_db.h"

namespace oft {

// Opens (creating if needed) the service database at `db_path` and migrates it to
// StoreSchemaVersion(). Errors: as SqliteDb::Open.
absl::StatusOr<std::shared_ptr<SqliteDb>> OpenStoreDb(const std::string& db_path,
                                                      SqliteDbOptions options = {});

// The schema version this binary writes.
int StoreSchemaVersion();

// A tenant name as the stores accept it: non-empty, at most 128 bytes. INVALID_ARGUMENT
// names the rule.
absl::Status CheckTenant(absl::string_view tenant);

}  // namespace oft

#endif  // OFT_SERVER_JOBS_STORE_DB_H_
