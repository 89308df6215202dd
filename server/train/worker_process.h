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
#include <vector>

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
// `rank_devices` with k >= 2 entries: a data-parallel job of k ranks, one worker process per
// rank (`--device=rank_devices[r]`), each with torchrun's environment: RANK=r, WORLD_SIZE=k,
// LOCAL_RANK=r, LOCAL_WORLD_SIZE=k, MASTER_ADDR=127.0.0.1, MASTER_PORT=a loopback port free
// at launch (rank 0 hosts the TCPStore), TORCHELASTIC_RESTART_COUNT=the attempt; c10d waits
// are bounded by heartbeat_timeout. Rank 0's events are the job's (the others' are read
// for heartbeats and their final line only); rank 0 publishes. The group is one unit:
// a rank that dies or hangs gets every rank SIGKILLed at once and the whole group restarts
// from the last checkpoint (max_restarts, the failure naming the rank); a rank that fails
// or is cancelled, or `stop`, sends every rank SIGTERM, then SIGKILL after `grace`.
// Empty or one entry: one worker on job.device with the server's environment.
absl::StatusOr<TrainingJobResult> RunTrainingJobInWorker(const TrainingJob& job, const WorkerOptions& options,
                                                         const AdapterStore& store, const EventSink& on_event,
                                                         const std::atomic<bool>* stop,
                                                         const std::vector<std::string>& rank_devices = {});

// The worker binary next to `self` (the server's own path): <dir>/oft_train_worker, else
// <dir>/../tools/oft_train_worker (the build tree). "" when neither exists.
std::string DefaultWorkerBinary(const std::string& self);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_WORKER_PROCESS_H_
