// Rendering of job progress and the exit-code contract of oftctl. Pure functions over
// oft.v1 messages (no I/O), so they are unit-tested directly. Thread-compatible.
#ifndef OFT_CLIENT_PROGRESS_H_
#define OFT_CLIENT_PROGRESS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "oft/v1/jobs.pb.h"

namespace oft {

// oftctl's exit codes.
enum ExitCode : int {
  kExitOk = 0,                // success (a watched job SUCCEEDED)
  kExitRpcError = 1,          // an RPC or local error; "oftctl: <CODE>: <message>" on stderr
  kExitUsage = 2,             // bad command line
  kExitJobFailed = 3,         // the watched job ended FAILED
  kExitJobCancelled = 4,      // the watched job ended CANCELLED
  kExitChecksumMismatch = 5,  // a downloaded file did not match its sha256
  kExitLocalFile = 6,         // a local input file (dataset, --file, --chat-file, TLS PEM)
                              // cannot be read; nothing was sent
};

// SUCCEEDED -> kExitOk, FAILED -> kExitJobFailed, CANCELLED -> kExitJobCancelled,
// anything else (the job is not terminal) -> kExitRpcError.
int ExitCodeForJobState(v1::Job::State state);
// OK -> kExitOk; DATA_LOSS from a download -> kExitChecksumMismatch; other -> kExitRpcError.
int ExitCodeForStatus(const absl::Status& status, bool is_download = false);
// `msg` as JSON (proto3 JSON mapping); pretty = indented, without a trailing newline.
std::string ToJson(const google::protobuf::Message& msg, bool pretty);
// "oftctl: NOT_FOUND: job job-1 not found" (no trailing newline).
std::string FormatCliError(const absl::Status& status);

// "45s", "2m05s", "1h02m", "3d04h"; "?" for negative (unknown) seconds.
std::string FormatEta(double seconds);
// 950 -> "950", 1234 -> "1.2k", 2500000 -> "2.5M".
std::string FormatCount(double value);
// 512 -> "512 B", 1536 -> "1.5 KiB", ...
std::string FormatBytes(int64_t bytes);
// Job.State name without prefix, e.g. "RUNNING".
std::string StateName(v1::Job::State state);

// What a watcher knows about a job, folded from its events (and optionally GetJob).
struct WatchProgress {
  std::string job_id;
  v1::Job::State state = v1::Job::STATE_UNSPECIFIED;
  int64_t step = 0;
  int64_t total_steps = 0;  // 0 = unknown
  double epoch = 0;
  double loss = 0;
  std::optional<double> eval_loss;
  double learning_rate = 0;
  double tokens_per_second = 0;
  double eta_seconds = -1;  // < 0 = unknown
  int64_t queue_position = 0;
  std::string queue_reason;
  int64_t last_event_id = 0;
  bool has_step = false;  // a Step event (or a job with progress) was seen

  // Folds one event in.
  void Apply(const v1::JobEvent& event);
  // Takes state, progress and metrics from a GetJob answer.
  void ApplyJob(const v1::Job& job);
};

// The single-line progress display for a terminal `width` columns wide (the result is at
// most width - 1 characters so the cursor never wraps), e.g.
//   RUNNING [#######.............] 120/500 24% loss 1.2345 lr 1.00e-04 1.2k tok/s ETA 2m05s
// Without a known total it shows "step 120"; for QUEUED jobs the queue position and reason.
// When space is short the bar goes first, then lr, eval loss, tokens/s and ETA.
std::string RenderProgressLine(const WatchProgress& progress, int width);

// One plain line per event, for non-terminal output, e.g.
//   #12 state RUNNING -> SUCCEEDED: training finished
//   #13 step 120/500 loss 1.2345 lr 1.00e-04 1.2k tok/s ETA 2m05s
//   #14 eval step 100 eval_loss 1.2300 (best)
std::string FormatEventLine(const v1::JobEvent& event);

}  // namespace oft

#endif  // OFT_CLIENT_PROGRESS_H_
