// The state machine of a job: its states (= oft.v1.Job.State names) and legal moves.
#ifndef OFT_SERVER_JOBS_JOB_STATE_H_
#define OFT_SERVER_JOBS_JOB_STATE_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oft {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };

// "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED" (= oft.v1.Job.State names).
absl::string_view JobStateName(JobState state);
// Inverse of JobStateName; INVALID_ARGUMENT naming the known states.
absl::StatusOr<JobState> ParseJobState(absl::string_view name);
// SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(JobState state);
// The legal moves: QUEUED -> RUNNING | CANCELLED | FAILED;
// RUNNING -> SUCCEEDED | FAILED | CANCELLED | QUEUED (requeue on restart/shutdown).
bool IsLegalTransition(JobState from, JobState to);

}  // namespace oft

#endif  // OFT_SERVER_JOBS_JOB_STATE_H_
