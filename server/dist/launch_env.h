// torchrun's launch contract: which rank this process is, and where the group meets.
//
// oft_train reads the variables torchrun (and Kubeflow Trainer, or a Kubernetes Indexed Job
// that sets them) exports:
//   RANK, WORLD_SIZE               required together: this rank in [0, WORLD_SIZE)
//   MASTER_ADDR, MASTER_PORT       required with WORLD_SIZE: where the TCPStore listens
//   LOCAL_RANK, LOCAL_WORLD_SIZE   optional (default 0 and 1): this rank's place on its node
//   TORCHELASTIC_USE_AGENT_STORE   optional "True"/"False": "True" means torchrun's agent already
//                                  hosts the store at MASTER_ADDR:MASTER_PORT, so every rank (rank
//                                  0 too) connects as a client
//   TORCHELASTIC_RESTART_COUNT     optional (default 0): the agent's restart generation; keys of
//                                  one generation never meet those of another in a kept store
// None of RANK / WORLD_SIZE set means a single-process run (no process group).
// Pure functions, no LibTorch, thread-safe.
#ifndef OFT_SERVER_DIST_LAUNCH_ENV_H_
#define OFT_SERVER_DIST_LAUNCH_ENV_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace oft {

struct LaunchEnv {
  int rank = 0;                 // RANK, in [0, world_size)
  int world_size = 1;           // WORLD_SIZE, in [1, kMaxWorldSize]
  int local_rank = 0;           // LOCAL_RANK, in [0, local_world_size)
  int local_world_size = 1;     // LOCAL_WORLD_SIZE, in [1, world_size]
  std::string master_addr;      // MASTER_ADDR, a host name or address, not empty
  int master_port = 0;          // MASTER_PORT, in [1, 65535]
  bool use_agent_store = false; // TORCHELASTIC_USE_AGENT_STORE == "True"
  int restart_count = 0;        // TORCHELASTIC_RESTART_COUNT, >= 0
};

inline constexpr int kMaxWorldSize = 65536;

// Looks the variables up with `getenv` (std::getenv in production; a map in tests).
// Returns nullopt when neither RANK nor WORLD_SIZE is set. INVALID_ARGUMENT naming the
// variable when one is missing (e.g. RANK without WORLD_SIZE, or WORLD_SIZE without
// MASTER_ADDR), not an integer, or out of its range, e.g.
//   "RANK must be in [0, WORLD_SIZE=2), got 2".
absl::StatusOr<std::optional<LaunchEnv>> LaunchEnvFromEnvironment(
    const std::function<const char*(const char*)>& getenv);

}  // namespace oft

#endif  // OFT_SERVER_DIST_LAUNCH_ENV_H_
