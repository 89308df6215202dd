#include "server/service/auth.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace oft {

Authenticator::Authenticator(const ApiKeyLookup* keys, AuthOptions options)
    : keys_(keys), options_(std::move(options)) {}

absl::StatusOr<std::string> Authenticator::Authenticate(const grpc::ServerContextBase& context) {
  const auto& md = context.client_metadata();
  std::vector<std::string> values;
  for (auto [it, end] = md.equal_range("authorization"); it != end; ++it) {
    values.emplace_back(it->second.data(), it->second.size());
  }
  return AuthenticateBearer(values);
}

absl::StatusOr<std::string> Authenticator::AuthenticateBearer(const std::vector<std::string>& values) {
  if (values.size() > 1) {
    // Which one would win is up to the proxy chain; refuse instead of guessing.
    return absl::UnauthenticatedError("more than one authorization header: send exactly one");
  }
  if (values.empty()) {
    if (options_.allow_unauthenticated) return options_.default_tenant;
    return absl::UnauthenticatedError(
        "missing API key: send the header 'authorization: Bearer <key>'");
  }
  const std::string& value = values[0];
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWithIgnoreCase(value, kBearer)) {
    return absl::UnauthenticatedError(
        "malformed authorization header: expected 'Bearer <key>'");
  }
  std::string key(absl::StripAsciiWhitespace(absl::string_view(value).substr(kBearer.size())));
  if (key.empty()) return absl::UnauthenticatedError("empty API key in the authorization header");
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    auto c = cache_.find(key);
    if (c != cache_.end() && c->second.expires > now) return c->second.tenant;
  }
  absl::StatusOr<std::string> tenant = keys_->LookupApiKey(key);
  if (!tenant.ok()) {
    if (absl::IsNotFound(tenant.status())) {
      return absl::UnauthenticatedError("unknown API key");
    }
    return absl::UnavailableError("cannot check the API key right now: " +
                                  std::string(tenant.status().message()));
  }
  absl::MutexLock lock(&mu_);
  if (cache_.size() > 10000) cache_.clear();  // bounded: keys are few, guessing is not
  cache_[key] = Entry{*tenant, now + options_.cache_ttl};
  return *tenant;
}

}  // namespace oft
