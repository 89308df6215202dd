#include "server/jobs/api_key_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/jobs/store_db.h"

namespace oft {
namespace {

constexpr size_t kMinApiKeyBytes = 16;

}  // namespace

ApiKeyStore::ApiKeyStore(std::shared_ptr<SqliteDb> db, std::function<absl::Time()> clock)
    : db_(std::move(db)), clock_(std::move(clock)) {}

absl::Status ApiKeyStore::AddApiKey(const std::string& key, const std::string& tenant) {
  if (key.size() < kMinApiKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("api key must be at least ", kMinApiKeyBytes, " bytes, got ", key.size()));
  }
  OFT_RETURN_IF_ERROR(CheckTenant(tenant));
  const std::string hash = Sha256Hex(key);
  const absl::Time now = clock_ ? clock_() : absl::Now();
  return db_->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare("SELECT 1 FROM api_keys WHERE key_hash = ?"));
    s.Bind(1, hash);
    OFT_ASSIGN_OR_RETURN(bool row, s.Step());
    if (row) {
      return absl::AlreadyExistsError(
          absl::StrCat("api key with sha256 prefix ", hash.substr(0, 12), " already exists"));
    }
    OFT_ASSIGN_OR_RETURN(SqlStatement ins,
                         txn.Prepare("INSERT INTO api_keys (key_hash, tenant, created_at) "
                                     "VALUES (?, ?, ?)"));
    return ins.Bind(1, hash).Bind(2, tenant).Bind(3, absl::ToUnixMicros(now)).Run();
  });
}

absl::StatusOr<std::string> ApiKeyStore::LookupApiKey(const std::string& key) const {
  const std::string hash = Sha256Hex(key);
  SqliteDb::ReadLease lease(*db_);
  OFT_ASSIGN_OR_RETURN(SqlStatement s,
                       lease.Prepare("SELECT tenant FROM api_keys WHERE key_hash = ?"));
  s.Bind(1, hash);
  OFT_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::NotFoundError("api key not found");
  return s.Text(0);
}

absl::Status ApiKeyStore::RevokeApiKey(const std::string& key) {
  const std::string hash = Sha256Hex(key);
  return db_->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    OFT_ASSIGN_OR_RETURN(SqlStatement del, txn.Prepare("DELETE FROM api_keys WHERE key_hash = ?"));
    OFT_RETURN_IF_ERROR(del.Bind(1, hash).Run());
    if (txn.Changes() == 0) return absl::NotFoundError("api key not found");
    return absl::OkStatus();
  });
}

absl::StatusOr<int64_t> ApiKeyStore::CountApiKeys() const {
  SqliteDb::ReadLease lease(*db_);
  OFT_ASSIGN_OR_RETURN(SqlStatement s, lease.Prepare("SELECT COUNT(*) FROM api_keys"));
  OFT_ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? s.Int(0) : 0;
}

}  // namespace oft
