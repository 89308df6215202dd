// ApiKeyStore: API keys and their tenants, in the service database. Only a key's SHA-256
// is stored, so keys must be high-entropy secrets (at least 16 bytes).
//
// Thread safety: all methods may be called from any thread.
#ifndef OFT_SERVER_JOBS_API_KEY_STORE_H_
#define OFT_SERVER_JOBS_API_KEY_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/jobs/sqlite_db.h"

namespace oft {

// What Authenticator needs: key -> tenant. Implemented by ApiKeyStore; tests may fake it.
class ApiKeyLookup {
 public:
  virtual ~ApiKeyLookup() = default;
  // The key's tenant. NOT_FOUND for an unknown key; the message never contains the key.
  virtual absl::StatusOr<std::string> LookupApiKey(const std::string& key) const = 0;
};

class ApiKeyStore : public ApiKeyLookup {
 public:
  // `db` must hold the service schema (OpenStoreDb). `clock` empty = absl::Now.
  explicit ApiKeyStore(std::shared_ptr<SqliteDb> db, std::function<absl::Time()> clock = {});

  // Errors: INVALID_ARGUMENT (key shorter than 16 bytes, bad tenant), ALREADY_EXISTS (the
  // message names the hash prefix, never the key).
  absl::Status AddApiKey(const std::string& key, const std::string& tenant);
  absl::StatusOr<std::string> LookupApiKey(const std::string& key) const override;
  // Errors: NOT_FOUND.
  absl::Status RevokeApiKey(const std::string& key);
  // How many keys are stored (all tenants).
  absl::StatusOr<int64_t> CountApiKeys() const;

 private:
  const std::shared_ptr<SqliteDb> db_;
  const std::function<absl::Time()> clock_;
};

}  // namespace oft

#endif  // OFT_SERVER_JOBS_API_KEY_STORE_H_
