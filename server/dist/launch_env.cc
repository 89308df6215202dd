#include "server/dist/launch_env.h"

#include <cerrno>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace oft {
namespace {

// The integer value of variable `name` in [lo, hi]; `fallback` when unset and not required.
absl::StatusOr<int> IntVar(const std::function<const char*(const char*)>& getenv, const char* name,
                           int64_t lo, int64_t hi, absl::string_view range,
                           std::optional<int> fallback) {
  const char* v = getenv(name);
  if (v == nullptr) {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be set for a distributed run (RANK or WORLD_SIZE is set)"));
  }
  int64_t x = 0;
  if (!absl::SimpleAtoi(v, &x)) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be an integer, got \"", v, "\""));
  }
  if (x < lo || x > hi) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be in ", range, ", got ", x));
  }
  return static_cast<int>(x);
}

}  // namespace

absl::StatusOr<std::optional<LaunchEnv>> LaunchEnvFromEnvironment(
    const std::function<const char*(const char*)>& getenv) {
  if (getenv("RANK") == nullptr && getenv("WORLD_SIZE") == nullptr) return std::nullopt;
  LaunchEnv e;
  auto world = IntVar(getenv, "WORLD_SIZE", 1, kMaxWorldSize,
                      absl::StrCat("[1, ", kMaxWorldSize, "]"), std::nullopt);
  if (!world.ok()) return world.status();
  e.world_size = *world;
  auto rank = IntVar(getenv, "RANK", 0, e.world_size - 1,
                     absl::StrCat("[0, WORLD_SIZE=", e.world_size, ")"), std::nullopt);
  if (!rank.ok()) return rank.status();
  e.rank = *rank;
  auto local_world = IntVar(getenv, "LOCAL_WORLD_SIZE", 1, e.world_size,
                            absl::StrCat("[1, WORLD_SIZE=", e.world_size, "]"), 1);
  if (!local_world.ok()) return local_world.status();
  e.local_world_size = *local_world;
  auto local_rank = IntVar(getenv, "LOCAL_RANK", 0, e.local_world_size - 1,
                           absl::StrCat("[0, LOCAL_WORLD_SIZE=", e.local_world_size, ")"), 0);
  if (!local_rank.ok()) return local_rank.status();
  e.local_rank = *local_rank;
  const char* addr = getenv("MASTER_ADDR");
  if (addr == nullptr || *addr == '\0') {
    return absl::InvalidArgumentError(
        "MASTER_ADDR must be set to the host of rank 0's store for a distributed run");
  }
  e.master_addr = addr;
  auto port = IntVar(getenv, "MASTER_PORT", 1, 65535, "[1, 65535]", std::nullopt);
  if (!port.ok()) return port.status();
  e.master_port = *port;
  if (const char* agent = getenv("TORCHELASTIC_USE_AGENT_STORE"); agent != nullptr) {
    const std::string a = agent;
    if (a == "True" || a == "true" || a == "1") {
      e.use_agent_store = true;
    } else if (a == "False" || a == "false" || a == "0" || a.empty()) {
      e.use_agent_store = false;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "TORCHELASTIC_USE_AGENT_STORE must be \"True\" or \"False\", got \"", a, "\""));
    }
  }
  auto restarts = IntVar(getenv, "TORCHELASTIC_RESTART_COUNT", 0, 1 << 30, "[0, 2^30]", 0);
  if (!restarts.ok()) return restarts.status();
  e.restart_count = *restarts;
  return e;
}

}  // namespace oft
