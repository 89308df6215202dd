// A Collective over LibTorch's c10d: rendezvous through a TCPStore, collectives through
// ProcessGroupGloo (CPU ranks, TCP) or, for CUDA ranks in a build with OFT_DIST_NCCL,
// ProcessGroupNCCL on the rank's device (CPU tensors given to AllReduceSum then travel through
// that device). The NCCL path is compiled in CUDA builds but has not run on a GPU yet.
//
// Rendezvous (torchrun's rules, launch_env.h): rank 0 hosts the TCPStore at
// MASTER_ADDR:MASTER_PORT and the others connect to it, unless use_agent_store, when every
// rank connects to the store torchrun's agent already hosts there. Keys live under
// "oft/attempt_<restart_count>/" so a store that outlives one attempt does not mix attempts.
// Before the process group is built, the ranks check through the store that they agree on
// the world size (CheckAgreement), so a rank launched with another WORLD_SIZE fails at once
// on every rank instead of leaving the others waiting for a rank that never comes.
//
// Gloo's network device: GLOO_SOCKET_IFNAME when set (as in torch), the loopback address when
// MASTER_ADDR is a loopback name (one machine), else the address this host's name resolves to.
//
// Timeouts: `timeout` bounds connecting to the store, every store wait, and every collective;
// a rank that dies makes its peers' next collective fail (UNAVAILABLE) as soon as the broken
// connection is seen, a rank that hangs makes it fail after `timeout` (DEADLINE_EXCEEDED).
//
// Gloo's headers are used by c10d_collective.cc only (see server/dist/CMakeLists.txt): the
// library touches gloo through symbols that LibTorch exports, never through gloo's own code.
#ifndef OFT_SERVER_DIST_C10D_COLLECTIVE_H_
#define OFT_SERVER_DIST_C10D_COLLECTIVE_H_

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "server/dist/collective.h"
#include "server/dist/launch_env.h"

namespace oft {

struct C10dOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};  // see above; > 0
  int cuda_device = -1;  // >= 0: a CUDA rank on this device index (NCCL); -1: a CPU rank (Gloo)
};

// Whether this build can make CUDA ranks (ProcessGroupNCCL compiled in).
bool C10dHasNccl();

// Connects this process as rank env.rank of env.world_size. Errors: INVALID_ARGUMENT for a
// non-positive timeout, or cuda_device >= 0 in a build without NCCL; UNAVAILABLE when the store cannot be hosted (port in use) or reached;
// DEADLINE_EXCEEDED when a peer does not show up in time; FAILED_PRECONDITION when the ranks
// disagree on the world size.
absl::StatusOr<std::unique_ptr<Collective>> ConnectC10d(const LaunchEnv& env,
                                                        const C10dOptions& options);

}  // namespace oft

#endif  // OFT_SERVER_DIST_C10D_COLLECTIVE_H_
