// A training job in its own process (issue 12): the server runs RunTrainingJob in a child
// `oft_train_worker` instead of a thread, so a crash, abort, OOM kill or hang of training
// ends that child only, and a job's process-wide settings (torch threads, generator seeds)
// cannot touch the server or other jobs.
//
// Protocol: the job goes to the worker as a JSON file (training_job_json.h). The worker
// writes one JSON line per event on its stdout (TrainEventToJson), {"kind":"heartbeat"}
// every second, and ends with {"kind":"result","adapter":NAME,"version":N},
// {"kind":"failed","code":C,"message":M,"reason":R,"field":F} or {"kind":"cancelled"}.
// Its stderr is appended to <work_dir>/worker.stderr. The worker publishes into the adapter
// store under the server's data dir (AdapterStore versions are claimed by an atomic rename).
//
// Supervision: `stop` set -> SIGTERM (the worker checkpoints and exits), SIGKILL after
// `grace`. No line for `heartbeat_timeout` -> SIGKILL (a hang). A worker that dies without a
// final line (a signal, a crash, a hang) is restarted from the job's last checkpoint up to
// `max_restarts` times, with a warning event each time; then the job fails with the exit
// status or signal and the last lines of the worker's stderr. The worker's parent-death
// signal is SIGTERM, so a server that dies takes its workers with it (they checkpoint first).
#ifndef OFT_SERVER_TRAIN_WORKER_PROCESS_H_
#define OFT_SERVER_TRAIN_WORKER_PROCESS_H_

#include <atomic>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/artifacts/store.h"
#include "server/train/job_runner.h"
#include "server/train/train_events.h"

namespace oft {

struct WorkerOptions {
  std::string binary;                               // path to oft_train_worker
  std::string data_dir;                             // the server's --data_dir (adapter store root)
  absl::Duration grace = absl::Seconds(30);         // after SIGTERM, before SIGKILL
  absl::Duration heartbeat_timeout = absl::Seconds(60);
  int max_restarts = 1;                             // restarts after a worker died, as torchrun's
};

// RunTrainingJob's contract (job_runner.h), run in worker processes. `store` reads the
// published version's manifest. Errors carry the worker's failure reason (ClassifyFailure);
// a worker that died is INTERNAL naming the signal or exit status.
absl::StatusOr<TrainingJobResult> RunTrainingJobInWorker(const TrainingJob& job, const WorkerOptions& options,
                                                         const AdapterStore& store, const EventSink& on_event,
                                                         const std::atomic<bool>* stop);

// The worker binary next to `self` (the server's own path): <dir>/oft_train_worker, else
// <dir>/../tools/oft_train_worker (the build tree). "" when neither exists.
std::string DefaultWorkerBinary(const std::string& self);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_WORKER_PROCESS_H_
