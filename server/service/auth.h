// API-key authentication: `authorization: Bearer <key>` (gRPC metadata or HTTP header) -> tenant.
//
// Keys are looked up in an ApiKeyLookup (ApiKeyStore stores only their SHA-256). Successful
// lookups are cached for `cache_ttl` so that busy clients do not cost a database read per
// call; a revoked key therefore stops working within cache_ttl. Thread-safe.
#ifndef OFT_SERVER_SERVICE_AUTH_H_
#define OFT_SERVER_SERVICE_AUTH_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "server/jobs/api_key_store.h"

namespace oft {

struct AuthOptions {
  bool allow_unauthenticated = false;  // no key needed: every caller is `default_tenant`
  std::string default_tenant = "default";
  absl::Duration cache_ttl = absl::Seconds(5);
};

class Authenticator {
 public:
  // `keys` is not owned and must outlive the Authenticator.
  Authenticator(const ApiKeyLookup* keys, AuthOptions options);

  // The caller's tenant. UNAUTHENTICATED (never echoing the key) when the metadata is
  // missing, malformed or names an unknown key.
  absl::StatusOr<std::string> Authenticate(const grpc::ServerContextBase& context)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The same from the values of every `authorization` header of a request (gRPC metadata or
  // HTTP headers): exactly one "Bearer <key>" is accepted.
  absl::StatusOr<std::string> AuthenticateBearer(const std::vector<std::string>& values)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    std::string tenant;
    absl::Time expires;
  };
  const ApiKeyLookup* keys_;
  const AuthOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> cache_ ABSL_GUARDED_BY(mu_);  // key -> tenant
};

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_AUTH_H_
