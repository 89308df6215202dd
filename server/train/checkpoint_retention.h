// What happens to a job's checkpoints once the job is over.
//
// A job in a terminal state (SUCCEEDED, FAILED, CANCELLED) is never resumed: no RPC restarts
// it, and a SUCCEEDED job's adapter is already published under adapters/. Its checkpoints
// (<work_dir>/checkpoints/step-<n>/, adapter + AdamW state, about three times the adapter's
// size each) are then only of use to an operator looking into a failure.
//
//   kNone  remove checkpoints/ and staging/ (the default of oft_server: nothing a tenant can
//          reach is lost, and disk use stops growing with the number of jobs run)
//   kLast  keep only the newest complete checkpoint (optimizer state included), remove the
//          rest and staging/
//   kAll   keep everything (debugging)
//
// Pure file-system work on one job's directory; thread-compatible (one caller per work dir).
#ifndef OFT_SERVER_TRAIN_CHECKPOINT_RETENTION_H_
#define OFT_SERVER_TRAIN_CHECKPOINT_RETENTION_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oft {

enum class CheckpointRetention { kAll, kLast, kNone };

// "all" | "last" | "none"; INVALID_ARGUMENT naming the flag's values otherwise.
absl::StatusOr<CheckpointRetention> ParseCheckpointRetention(absl::string_view text);
const char* CheckpointRetentionName(CheckpointRetention policy);

// Applies `policy` to a finished job's directory (`work_dir` = <data_dir>/jobs/<id>).
// Returns how many checkpoint directories were removed (complete or not). A missing
// work_dir is fine (0). Errors: INTERNAL naming the path that could not be removed.
absl::StatusOr<int64_t> ApplyCheckpointRetention(const std::string& work_dir,
                                                 CheckpointRetention policy);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_CHECKPOINT_RETENTION_H_
