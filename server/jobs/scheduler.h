// Scheduler: runs the QUEUED jobs of a JobStore on this server's device workers.
//
// Each entry of SchedulerOptions::devices gets `jobs_per_device` worker slots (entries may
// repeat a name: "cpu,cpu" is two CPU devices). One dispatcher thread picks jobs in the
// store's queue order (priority descending, then creation ascending; JobStore::QueuedJobs),
// moves each QUEUED -> RUNNING with the store's compare-and-set Transition (a job another
// thread or process won, or a job cancelled meanwhile, is skipped) and hands it to a free
// slot, whose thread calls the JobExecutor. When the executor returns, the slot writes the
// matching Transition:
//   kSucceeded   -> SUCCEEDED (with the result adapter)
//   kFailed      -> FAILED (with the failure)
//   kCancelled   -> CANCELLED; but during Shutdown(), for a job whose cancellation was
//                   never requested, -> QUEUED like kInterrupted
//   kInterrupted -> QUEUED ("requeued at shutdown"); but -> CANCELLED when the job's
//                   cancellation was requested (moving it to QUEUED would drop the request)
// An executor that throws is treated as kFailed with reason "INTERNAL". A Transition that
// fails (e.g. the job changed state meanwhile) is logged to stderr; the worker goes on.
//
// Gang scheduling: a job needs SchedulerOptions::devices_needed(job) devices (k, default 1)
// and starts only when k free slots on k distinct device entries are there, all at once:
// the first one's thread runs the executor with all k device names (rank r on devices[r]),
// the other k-1 slots are held, idle, until the executor returns.
// Anti-starvation policy (strict queue order, with reservation): the dispatcher walks the
// queue in order and starts every job that fits in what is still free. The first job that
// does not fit stops the walk: it reserves every device that is free now and every one that
// frees later, so no job behind it (a 1-device job included) can take a device it waits
// for. It starts as soon as k devices are free, after at most the jobs already running (and
// any job of higher priority queued meanwhile) end; a stream of smaller jobs of equal or
// lower priority never delays it. The cost: devices may idle while a gang gathers.
// A job needing more devices than there are entries can never start: it is moved to FAILED
// (reason INVALID_ARGUMENT, field num_devices) instead of blocking the queue forever.
//
// Cancellation: Cancel() stops a RUNNING job of this server (JobControl::stop). The
// dispatcher also re-reads, on every pass (at least every poll_interval), each running
// job's cancel_requested flag in the store, so a cancel written with
// JobStore::RequestCancel stops the job even when Cancel() was not called.
//
// Queue positions: after every pass that may have changed the queue, the dispatcher
// appends a "queue_position_changed" event, payload
//   {"queuePosition": N, "reason": "2 jobs ahead; 1 device busy"}
// (the proto3 JSON of oft.v1.JobEvent.QueuePositionChanged), to each QUEUED job whose
// position differs from the last one published for it by this Scheduler (a job seen for
// the first time gets one too). For a gang job the reason starts with what it waits for
// ("waiting for 2 devices, 1 free; ...", QueueReason) and a change in the free count is
// published too.
//
// Threads: Create() starts nothing; Start() starts the dispatcher and the slot threads.
// Every public method is thread-safe. Executors and observer callbacks run on scheduler
// threads and must not call Shutdown() or destroy the Scheduler.
#ifndef OFT_SERVER_JOBS_SCHEDULER_H_
#define OFT_SERVER_JOBS_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/jobs/job_store.h"

namespace oft {

// What a worker did with a job; the scheduler writes the matching Transition.
struct JobOutcome {
  enum class Kind { kSucceeded, kFailed, kCancelled, kInterrupted };  // kInterrupted: shutdown -> back to QUEUED
  Kind kind = Kind::kSucceeded;
  JobFailureInfo failure;              // kFailed
  std::string message;                 // for the state_changed event ("" = a default)
  std::string result_adapter_name;     // kSucceeded
  int64_t result_adapter_version = 0;  // kSucceeded
};

// Handed to the executor; flags are set by Scheduler::Cancel / Shutdown.
struct JobControl {
  std::atomic<bool> stop{false};           // true = stop between steps (cancel OR shutdown)
  std::atomic<bool> shutting_down{false};  // true when the stop is a server shutdown
};

// Runs one job (already moved to RUNNING) on `devices` ("cpu", "cuda:0"; one entry per
// device the job was given, devices_needed(job) of them, distinct entries of
// SchedulerOptions::devices; rank r uses devices[r]); blocking. Should return soon after
// control.stop becomes true: kInterrupted when control.shutting_down, else kCancelled.
using JobExecutor = std::function<JobOutcome(
    const JobRecord& job, const std::vector<std::string>& devices, JobControl& control)>;

struct SchedulerOptions {
  std::vector<std::string> devices = {"cpu"};       // one worker per entry; non-empty
  int jobs_per_device = 1;                          // concurrent jobs per device worker, >= 1
  absl::Duration poll_interval = absl::Seconds(1);  // safety re-scan of the queue, > 0
  // Devices a job needs (its spec's num_devices); empty = 1 for every job. Values < 1 count
  // as 1. Called on the dispatcher thread; must be quick and must not call the Scheduler.
  std::function<int(const JobRecord& job)> devices_needed;
};

struct SchedulerObserver {  // all optional, for metrics; called from scheduler threads
  // After a job's terminal Transition written by this scheduler succeeded.
  std::function<void(const std::string& job_id, JobState final_state)> on_job_finished;
  // After a dispatcher pass, when (QUEUED jobs in the store, jobs running here) changed.
  std::function<void(int64_t queued, int64_t running)> on_queue_changed;
};

class Scheduler {
 public:
  // `store` is not owned and must outlive the Scheduler. Errors: INVALID_ARGUMENT (null
  // store, empty executor, no devices or an empty device name, jobs_per_device < 1,
  // poll_interval <= 0).
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(JobStore* store,
                                                           SchedulerOptions options,
                                                           JobExecutor executor,
                                                           SchedulerObserver observer = {});
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  ~Scheduler();  // calls Shutdown()

  // Starts the dispatcher and worker threads. Later calls, and calls after Shutdown(),
  // do nothing.
  void Start() ABSL_LOCKS_EXCLUDED(mu_);

  // A job was queued / something changed: rescan now rather than at the next poll.
  void Wake() ABSL_LOCKS_EXCLUDED(mu_);

  // RUNNING job on this server: sets control.stop (the executor returns kCancelled; the
  // scheduler Transitions to CANCELLED). QUEUED jobs are cancelled by JobStore::RequestCancel
  // directly; Cancel() is harmless for them (and for unknown ids).
  void Cancel(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);

  // Stops taking jobs, sets stop+shutting_down on every running job, waits for the executors
  // to return, Transitions kInterrupted ones RUNNING -> QUEUED ("requeued at shutdown").
  // Idempotent; blocks until every scheduler thread has exited.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);
  // Shutdown's first half, without waiting: no job starts any more and every running job is
  // told to checkpoint and stop (as shutting down). For a server that must stop its jobs
  // before it waits for in-flight calls.
  void StopRunning() ABSL_LOCKS_EXCLUDED(mu_);

  // Ids of the jobs this scheduler is running now (in slot order).
  std::vector<std::string> RunningJobIds() const ABSL_LOCKS_EXCLUDED(mu_);
  // Slots in use now (a k-device job holds k), out of devices.size() * jobs_per_device.
  int64_t BusySlots() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Running;  // one job in a slot
  struct Slot;     // one worker thread bound to a device

  Scheduler(JobStore* store, SchedulerOptions options, JobExecutor executor,
            SchedulerObserver observer);

  void DispatcherLoop() ABSL_LOCKS_EXCLUDED(mu_);
  void WorkerLoop(Slot* slot) ABSL_LOCKS_EXCLUDED(mu_);
  // Claims queued jobs for free slots by the gang policy; returns whether any was claimed.
  bool FillSlots() ABSL_LOCKS_EXCLUDED(mu_);
  // Free slots on `k` distinct device entries (first free slot of each entry, in entry
  // order); empty when there are not k such entries.
  std::vector<Slot*> PickSlotsLocked(int k) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails a queued job that needs more devices than this scheduler has.
  void FailUnrunnable(const JobRecord& job, int needed);
  int NeededBy(const JobRecord& job) const;
  // Sets stop on running jobs whose cancel_requested is set in the store.
  void PollCancels() ABSL_LOCKS_EXCLUDED(mu_);
  // Publishes changed queue positions and reports on_queue_changed.
  void PublishQueue() ABSL_LOCKS_EXCLUDED(mu_);
  // Runs the executor for `run` and writes the resulting Transition.
  void RunJob(Running& run) ABSL_LOCKS_EXCLUDED(mu_);
  int64_t BusySlotsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  JobStore* const store_;
  const SchedulerOptions options_;
  const JobExecutor executor_;
  const SchedulerObserver observer_;

  absl::Mutex shutdown_mu_;  // serialises Shutdown() callers
  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;  // a rescan was asked for
  std::vector<std::unique_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  std::thread dispatcher_;  // started by Start(), joined by Shutdown()

  // Dispatcher-thread only: last (position, free slots; -1 for 1-device jobs) published per
  // QUEUED job, last observer report.
  std::map<std::string, std::pair<int64_t, int64_t>> published_positions_;
  std::optional<std::pair<int64_t, int64_t>> last_reported_;
};

}  // namespace oft

#endif  // OFT_SERVER_JOBS_SCHEDULER_H_
