// The job event codec: what a job's event log holds, and the one place that knows how it
// is stored.
//
// Every event is one oft.v1.JobEvent payload message. It is stored as `kind`, the name of
// the payload's oneof field ("state_changed", "step", "eval", "checkpoint_saved",
// "queue_position_changed", "warning"), and `payload_json`, the proto3 JSON of that message.
// The Encode* functions below build those pairs from plain values; DecodeJobEvent
// (job_event_proto.h) turns a stored event back into the oft.v1.JobEvent the API returns.
// Nothing else writes or parses payload JSON.
//
// No protobuf in this header: the job runner (which compiles LibTorch, whose bundled
// protobuf headers clash with the system's) uses it too.
#ifndef OFT_SERVER_JOBS_JOB_EVENTS_H_
#define OFT_SERVER_JOBS_JOB_EVENTS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/jobs/job_state.h"
#include "server/train/train_events.h"

namespace oft {

// Why a job FAILED.
struct JobFailureInfo {
  std::string reason;   // oft.v1.JobFailure.Reason value name, e.g. "OUT_OF_MEMORY"
  std::string message;  // human-readable, says what to fix
  std::string field;    // offending JobSpec field path, "" if none
};

// Progress and latest metrics of a job (the columns the job view shows).
struct JobProgressInfo {
  int64_t step = 0;                 // optimizer steps completed
  int64_t total_steps = 0;          // 0 = unknown
  double epoch = 0.0;               // fractional epoch
  double loss = 0.0;                // latest training loss
  std::optional<double> eval_loss;  // latest eval loss; nullopt before the first eval
  double learning_rate = 0.0;       // learning rate of the latest step
  double grad_norm = 0.0;           // gradient norm of the latest step, before clipping
  double tokens_per_second = 0.0;   // recent training throughput
  double eta_seconds = -1.0;        // estimated seconds to completion; < 0 = unknown
};

// One event as the store keeps it.
struct EventRecord {
  std::string job_id;
  int64_t event_id = 0;      // 1, 2, 3, ... per job, no gaps
  std::string kind;          // oft.v1.JobEvent payload field name
  std::string payload_json;  // proto3 JSON of that payload message
  absl::Time created_at;
};

// An encoded event, ready for JobStore::AppendEvent.
struct EncodedEvent {
  std::string kind;
  std::string payload_json;
  std::optional<JobProgressInfo> progress;  // the job's progress columns to store with it
};

// The payload field names (= EncodedEvent::kind).
inline constexpr absl::string_view kEventStateChanged = "state_changed";
inline constexpr absl::string_view kEventStep = "step";
inline constexpr absl::string_view kEventEval = "eval";
inline constexpr absl::string_view kEventCheckpointSaved = "checkpoint_saved";
inline constexpr absl::string_view kEventQueuePositionChanged = "queue_position_changed";
inline constexpr absl::string_view kEventWarning = "warning";

// Encoders. Failure reasons are oft.v1.JobFailure.Reason names (an unknown name is stored
// as INTERNAL). Non-finite numbers are stored as proto3 JSON's "NaN" / "Infinity".
// `from` nullopt: the job's first event (previous_state STATE_UNSPECIFIED).
EncodedEvent EncodeStateChanged(std::optional<JobState> from, JobState to,
                                absl::string_view message,
                                const std::optional<JobFailureInfo>& failure);
// A step: progress and metrics from `progress` (eval_loss included when known).
EncodedEvent EncodeStep(const JobProgressInfo& progress);
EncodedEvent EncodeEval(int64_t step, double eval_loss, bool is_best,
                        int64_t evals_without_improvement);
EncodedEvent EncodeCheckpointSaved(int64_t step);
EncodedEvent EncodeQueuePositionChanged(int64_t queue_position, absl::string_view reason);
EncodedEvent EncodeWarning(WarningCode code, absl::string_view message);

// The oft.v1.JobEvent.Warning.Code name of `code` ("BLOCK_SIZE_ADJUSTED", ...).
absl::string_view WarningCodeName(WarningCode code);

// The one rule for why a queued job waits, shown in Job.queue_reason and in
// queue_position_changed events: "2 jobs ahead; 1 of 1 device busy". A job that needs
// `needed` > 1 devices (a gang, see scheduler.h) says so first:
// "waiting for 2 devices, 1 free; 0 jobs ahead; 1 of 2 devices busy".
std::string QueueReason(int64_t queue_position, int64_t busy_devices, int64_t devices,
                        int64_t needed = 1);

// What the server adds to each eval event: whether it has the lowest eval loss so far, and
// how many evaluations in a row have not improved on the best (0 for a new best).
class EvalTracker {
 public:
  struct Verdict {
    bool is_best = false;
    int64_t evals_without_improvement = 0;
  };
  Verdict Observe(double eval_loss);

 private:
  std::optional<double> best_;
  int64_t without_improvement_ = 0;
};

// The stored event for a trainer event, with the job's progress after it: `*progress`
// (the job's progress so far) is updated for step and eval events, `*evals` for eval
// events. kDone is not an event (nullopt).
std::optional<EncodedEvent> EncodeTrainEvent(const TrainEvent& event, JobProgressInfo* progress,
                                             EvalTracker* evals);

// The eval loss of a stored eval event, to replay an EvalTracker after a restart; nullopt
// for other kinds and for payloads that do not decode (DecodeJobEvent reports those).
std::optional<double> StoredEvalLoss(const EventRecord& record);

}  // namespace oft

#endif  // OFT_SERVER_JOBS_JOB_EVENTS_H_
