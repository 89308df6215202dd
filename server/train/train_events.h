// What a training run reports while it runs (TrainEvent through an EventSink) and when it
// ends (TrainMetrics). No LibTorch here: the service's composition root and the job runner's
// callers use these without compiling LibTorch headers.
#ifndef OFT_SERVER_TRAIN_TRAIN_EVENTS_H_
#define OFT_SERVER_TRAIN_TRAIN_EVENTS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oft {

// The kind of a warning event (oft.v1.JobEvent.Warning.Code).
enum class WarningCode {
  kTrainingWarning,        // anything without a more specific code
  kBlockSizeAdjusted,      // a module uses an adjusted OFT block size
  kExamplesTruncated,      // examples longer than max_seq_len were cut
  kResumedFromCheckpoint,  // the run resumed from a checkpoint
  kEarlyStopping,          // early stopping ended the run
  kCancelRequested,        // (job store) cancellation of the running job was requested
};

struct TrainEvent {
  enum class Kind { kStep, kEval, kCheckpoint, kWarning, kDone };
  Kind kind = Kind::kStep;
  int64_t step = 0;              // optimizer steps completed (1-based after the first step)
  int64_t total_steps = 0;       // steps the run will take (if not stopped early)
  double epoch = 0;              // fractional epochs of training data consumed
  double loss = 0;               // kStep: mean masked loss of this step
  double learning_rate = 0;      // kStep: learning rate used by this step
  double grad_norm = 0;          // kStep: global gradient L2 norm before clipping
  double tokens_per_second = 0;  // kStep: non-padding tokens of this step / its wall time
  double eval_loss = 0;          // kEval (and kDone when evaluated): mean eval loss
  double eta_seconds = 0;        // kStep: mean of the last 20 step times x steps remaining
  std::string message;           // kCheckpoint: its directory; kWarning / kDone: text
  WarningCode warning = WarningCode::kTrainingWarning;  // kWarning: its kind
};

// "step", "eval", "checkpoint", "warning", "done".
const char* TrainEventKindName(TrainEvent::Kind kind);
// One-line JSON object with every field (kind as its name, warning as its number).
std::string TrainEventToJson(const TrainEvent& event);
// Parses TrainEventToJson's form (a training worker's event lines). INVALID_ARGUMENT naming
// the field for anything else.
absl::StatusOr<TrainEvent> TrainEventFromJson(absl::string_view json);

// Receives events on the thread that calls Run(); must not block for long.
using EventSink = std::function<void(const TrainEvent&)>;

struct TrainMetrics {
  int64_t steps_completed = 0;
  int64_t total_steps = 0;
  double final_loss = 0;         // loss of the last step taken
  double last_eval_loss = -1;    // -1 when never evaluated
  double best_eval_loss = -1;    // -1 when never evaluated
  int64_t best_step = 0;         // step of best_eval_loss
  int64_t result_step = 0;       // step whose adapter is the result (best_step with select_best)
  bool stopped_early = false;    // early stopping ended the run
  int64_t tokens_trained = 0;    // non-padding tokens in all steps, across resumes
  int64_t train_sequences = 0;   // sequences in one training epoch
  int64_t eval_sequences = 0;    // sequences in the eval set (0: no eval)
  double seconds = 0;            // wall time of Run() in this process
  int64_t allreduce_bytes_per_step = 0;  // gradient bucket all-reduced per step (0: one process)
};

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_TRAIN_EVENTS_H_
