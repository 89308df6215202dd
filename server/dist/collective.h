// The collective operations a data-parallel trainer needs from its process group.
//
// One Collective object stands for this process's membership in a group of world_size()
// ranks. Every method is collective: all ranks call the same methods in the same order,
// or the group waits (bounded by the implementation's timeout, then an error).
//
// Errors: DEADLINE_EXCEEDED when a peer did not answer within the timeout (a hung or
// never-started rank), UNAVAILABLE when a peer's connection broke (a dead rank),
// FAILED_PRECONDITION when ranks disagree (CheckAgreement). After an error the group is
// unusable; the caller ends the run.
//
// Thread-compatibility: one thread uses a Collective at a time.
#ifndef OFT_SERVER_DIST_COLLECTIVE_H_
#define OFT_SERVER_DIST_COLLECTIVE_H_

#include <string>

#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace oft {

class Collective {
 public:
  virtual ~Collective() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Replaces `t` (a contiguous tensor on this rank's device) in place by its element-wise
  // sum over all ranks. Every rank passes a tensor of the same shape and dtype.
  virtual absl::Status AllReduceSum(at::Tensor& t) = 0;

  // Every rank publishes `identity` (a JSON object) under the name `what`; returns OK on
  // every rank when all ranks published the same object, else FAILED_PRECONDITION on every
  // rank naming the first differing key and the ranks' values, e.g.
  //   "ranks disagree on the job: data_sha256 is \"ab..\" on rank 1 but \"cd..\" on rank 0".
  // A rank that never publishes makes the others fail with DEADLINE_EXCEEDED.
  virtual absl::Status CheckAgreement(absl::string_view what, const std::string& identity) = 0;
};

}  // namespace oft

#endif  // OFT_SERVER_DIST_COLLECTIVE_H_
