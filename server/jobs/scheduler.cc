#include "server/jobs/scheduler.h"

#include <algorithm>
#include <exception>
#include <iostream>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/jobs/job_events.h"

namespace oft {

// A job held by a slot. Fields other than `control` and the const ones are guarded by
// Scheduler::mu_.
struct Scheduler::Running {
  JobRecord job;                     // refreshed with the RUNNING record once claimed
  std::vector<std::string> devices;  // the job's devices; [0] is this slot's
  std::vector<Slot*> held;           // the other slots of a gang, idle until the job ends
  JobControl control;
  bool cancel_requested = false;  // Cancel() or the store's flag was seen
};

// One worker thread. `running` and `assigned` are guarded by Scheduler::mu_.
struct Scheduler::Slot {
  std::string device;
  int index = 0;  // the entry of SchedulerOptions::devices
  std::thread thread;
  // Set by the dispatcher before it tries the QUEUED -> RUNNING move (so Cancel() finds the
  // job from the start); cleared by the dispatcher when the move fails or by the worker
  // when the job is done.
  std::unique_ptr<Running> running;
  bool assigned = false;  // the move succeeded: the worker owns `running` now
  bool held = false;      // one of the other slots of a gang job run by another slot
};

namespace {

void Log(const std::string& line) { std::cerr << "scheduler: " << line << std::endl; }

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(JobStore* store,
                                                             SchedulerOptions options,
                                                             JobExecutor executor,
                                                             SchedulerObserver observer) {
  if (store == nullptr) return absl::InvalidArgumentError("scheduler: store is null");
  if (!executor) return absl::InvalidArgumentError("scheduler: executor is empty");
  if (options.devices.empty()) {
    return absl::InvalidArgumentError("scheduler: devices must name at least one device");
  }
  for (const std::string& d : options.devices) {
    if (d.empty()) return absl::InvalidArgumentError("scheduler: empty device name in devices");
  }
  if (options.jobs_per_device < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("scheduler: jobs_per_device must be >= 1, got ", options.jobs_per_device));
  }
  if (options.poll_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("scheduler: poll_interval must be > 0");
  }
  return std::unique_ptr<Scheduler>(
      new Scheduler(store, std::move(options), std::move(executor), std::move(observer)));
}

Scheduler::Scheduler(JobStore* store, SchedulerOptions options, JobExecutor executor,
                     SchedulerObserver observer)
    : store_(store),
      options_(std::move(options)),
      executor_(std::move(executor)),
      observer_(std::move(observer)) {}

Scheduler::~Scheduler() { Shutdown(); }

void Scheduler::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  wake_ = true;  // first pass at once
  for (size_t d = 0; d < options_.devices.size(); ++d) {
    for (int i = 0; i < options_.jobs_per_device; ++i) {
      auto slot = std::make_unique<Slot>();
      slot->device = options_.devices[d];
      slot->index = static_cast<int>(d);
      slots_.push_back(std::move(slot));
    }
  }
  for (auto& slot : slots_) {
    Slot* s = slot.get();
    s->thread = std::thread([this, s] { WorkerLoop(s); });
  }
  dispatcher_ = std::thread([this] { DispatcherLoop(); });
}

void Scheduler::Wake() {
  absl::MutexLock lock(&mu_);
  wake_ = true;
}

void Scheduler::Cancel(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  for (auto& slot : slots_) {
    if (slot->running != nullptr && slot->running->job.id == job_id) {
      slot->running->cancel_requested = true;
      slot->running->control.stop.store(true);
    }
  }
}

void Scheduler::StopRunning() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  for (auto& slot : slots_) {
    if (slot->running == nullptr) continue;
    // shutting_down first: an executor that sees stop must also see why.
    slot->running->control.shutting_down.store(true);
    slot->running->control.stop.store(true);
  }
}

void Scheduler::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  StopRunning();
  if (dispatcher_.joinable()) dispatcher_.join();
  // slots_ no longer changes once started; the worker threads exit after their job.
  std::vector<Slot*> slots;
  {
    absl::MutexLock lock(&mu_);
    for (auto& slot : slots_) slots.push_back(slot.get());
  }
  for (Slot* s : slots) {
    if (s->thread.joinable()) s->thread.join();
  }
}

std::vector<std::string> Scheduler::RunningJobIds() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& slot : slots_) {
    if (slot->running != nullptr && slot->assigned) ids.push_back(slot->running->job.id);
  }
  return ids;
}

int64_t Scheduler::BusySlotsLocked() const {
  int64_t busy = 0;
  for (const auto& slot : slots_) busy += slot->running != nullptr || slot->held;
  return busy;
}

int64_t Scheduler::BusySlots() const {
  absl::MutexLock lock(&mu_);
  return BusySlotsLocked();
}

int Scheduler::NeededBy(const JobRecord& job) const {
  if (!options_.devices_needed) return 1;
  return std::max(1, options_.devices_needed(job));
}

std::vector<Scheduler::Slot*> Scheduler::PickSlotsLocked(int k) const {
  std::vector<Slot*> picked;
  std::set<int> taken;
  for (const auto& slot : slots_) {
    if (static_cast<int>(picked.size()) == k) break;
    if (slot->running != nullptr || slot->held || taken.count(slot->index)) continue;
    taken.insert(slot->index);
    picked.push_back(slot.get());
  }
  if (static_cast<int>(picked.size()) < k) picked.clear();
  return picked;
}

void Scheduler::FailUnrunnable(const JobRecord& job, int needed) {
  TransitionFields fields;
  JobFailureInfo failure;
  failure.reason = "INVALID_ARGUMENT";
  failure.field = "num_devices";
  failure.message = absl::StrCat("spec.num_devices: the job needs ", needed,
                                 " devices but this server has ", options_.devices.size());
  fields.message = failure.message;
  fields.failure = failure;
  absl::StatusOr<JobRecord> failed =
      store_->Transition(job.id, JobState::kQueued, JobState::kFailed, fields);
  if (!failed.ok()) {
    if (!absl::IsFailedPrecondition(failed.status()) && !absl::IsNotFound(failed.status())) {
      Log(absl::StrCat("failing ", job.id, ": ", failed.status().ToString()));
    }
    return;
  }
  if (observer_.on_job_finished) observer_.on_job_finished(job.id, JobState::kFailed);
}

void Scheduler::DispatcherLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return wake_ || stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&woken), options_.poll_interval);
      if (stopping_) return;
      wake_ = false;
    }
    PollCancels();
    FillSlots();
    PublishQueue();
  }
}

void Scheduler::PollCancels() {
  std::vector<std::pair<std::string, std::string>> running;  // (tenant, id)
  {
    absl::MutexLock lock(&mu_);
    for (auto& slot : slots_) {
      if (slot->running != nullptr && slot->assigned && !slot->running->cancel_requested) {
        running.emplace_back(slot->running->job.tenant, slot->running->job.id);
      }
    }
  }
  for (const auto& [tenant, id] : running) {
    absl::StatusOr<JobRecord> job = store_->GetJob(tenant, id);
    if (!job.ok()) {
      Log(absl::StrCat("reading running job ", id, ": ", job.status().ToString()));
      continue;
    }
    if (!job->cancel_requested) continue;
    Cancel(id);
  }
}

bool Scheduler::FillSlots() {
  bool any = false;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return any;
      if (PickSlotsLocked(1).empty()) return any;
    }
    absl::StatusOr<std::vector<JobRecord>> queued = store_->QueuedJobs();
    if (!queued.ok()) {
      Log(absl::StrCat("reading the queue: ", queued.status().ToString()));
      return any;
    }
    // Walk the queue in order; the first job that does not fit ends the walk (it reserves
    // what is free: see the policy in scheduler.h).
    bool claimed = false;
    for (const JobRecord& job : *queued) {
      const int needed = NeededBy(job);
      if (needed > static_cast<int>(options_.devices.size())) {
        FailUnrunnable(job, needed);
        continue;
      }
      Running* run = nullptr;
      Slot* lead = nullptr;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return any;
        std::vector<Slot*> picked = PickSlotsLocked(needed);
        if (picked.empty()) return any;  // blocked: nothing behind it may start
        lead = picked[0];
        lead->running = std::make_unique<Running>();
        run = lead->running.get();
        run->job = job;
        for (Slot* s : picked) run->devices.push_back(s->device);
        for (size_t i = 1; i < picked.size(); ++i) {
          picked[i]->held = true;
          run->held.push_back(picked[i]);
        }
      }
      TransitionFields fields;
      fields.message = absl::StrCat("started on ", absl::StrJoin(run->devices, ","));
      absl::StatusOr<JobRecord> moved =
          store_->Transition(job.id, JobState::kQueued, JobState::kRunning, fields);
      absl::MutexLock lock(&mu_);
      if (!moved.ok()) {
        // Another scheduler won, or the job was cancelled meanwhile: try the next one.
        if (!absl::IsFailedPrecondition(moved.status()) && !absl::IsNotFound(moved.status())) {
          Log(absl::StrCat("starting ", job.id, ": ", moved.status().ToString()));
        }
        for (Slot* s : run->held) s->held = false;
        lead->running.reset();
        continue;
      }
      run->job = *std::move(moved);
      if (stopping_) {
        run->control.shutting_down.store(true);
        run->control.stop.store(true);
      }
      lead->assigned = true;
      claimed = true;
      any = true;
      break;
    }
    if (!claimed) return any;
  }
}

void Scheduler::PublishQueue() {
  absl::StatusOr<std::vector<JobRecord>> queued = store_->QueuedJobs();
  if (!queued.ok()) {
    Log(absl::StrCat("reading the queue: ", queued.status().ToString()));
    return;
  }
  int64_t busy = 0, running = 0, devices = 0;
  {
    absl::MutexLock lock(&mu_);
    busy = BusySlotsLocked();
    devices = static_cast<int64_t>(slots_.size());
    for (const auto& slot : slots_) running += slot->running != nullptr && slot->assigned;
  }
  std::map<std::string, std::pair<int64_t, int64_t>> still_queued;
  for (const JobRecord& job : *queued) {
    const int64_t needed = NeededBy(job);
    const std::pair<int64_t, int64_t> shown(job.queue_position,
                                            needed > 1 ? devices - busy : -1);
    auto it = published_positions_.find(job.id);
    if (it != published_positions_.end() && it->second == shown) {
      still_queued.emplace(job.id, shown);
      continue;
    }
    absl::StatusOr<int64_t> appended = store_->AppendEvent(
        job.id, EncodeQueuePositionChanged(
                    job.queue_position, QueueReason(job.queue_position, busy, devices, needed)));
    if (appended.ok()) {
      still_queued.emplace(job.id, shown);
    } else if (!absl::IsFailedPrecondition(appended.status())) {
      // FAILED_PRECONDITION: the job became terminal meanwhile; nothing to publish.
      Log(absl::StrCat("queue position of ", job.id, ": ", appended.status().ToString()));
    }
    // On error the old value (if any) is dropped, so the next pass retries.
  }
  published_positions_ = std::move(still_queued);

  const std::pair<int64_t, int64_t> report(static_cast<int64_t>(queued->size()), running);
  if (!last_reported_.has_value() || *last_reported_ != report) {
    last_reported_ = report;
    if (observer_.on_queue_changed) observer_.on_queue_changed(report.first, report.second);
  }
}

void Scheduler::WorkerLoop(Slot* slot) {
  for (;;) {
    Running* run = nullptr;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this, slot]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return slot->assigned || (stopping_ && slot->running == nullptr);
      };
      mu_.Await(absl::Condition(&ready));
      if (!slot->assigned) return;
      run = slot->running.get();
    }
    RunJob(*run);
    absl::MutexLock lock(&mu_);
    for (Slot* s : run->held) s->held = false;
    slot->running.reset();
    slot->assigned = false;
    wake_ = true;  // a slot is free and the queue changed
  }
}

void Scheduler::RunJob(Running& run) {
  const std::string& id = run.job.id;
  JobOutcome outcome;
  if (run.control.stop.load() && run.control.shutting_down.load()) {
    // Claimed while the server was shutting down: do not start it at all.
    outcome.kind = JobOutcome::Kind::kInterrupted;
  } else {
    try {
      outcome = executor_(run.job, run.devices, run.control);
    } catch (const std::exception& e) {
      outcome = JobOutcome{};
      outcome.kind = JobOutcome::Kind::kFailed;
      outcome.failure.reason = "INTERNAL";
      outcome.failure.message = absl::StrCat("the training worker failed: ", e.what());
    } catch (...) {
      outcome = JobOutcome{};
      outcome.kind = JobOutcome::Kind::kFailed;
      outcome.failure.reason = "INTERNAL";
      outcome.failure.message = "the training worker failed with an unknown exception";
    }
  }

  bool cancel_requested = false;
  {
    absl::MutexLock lock(&mu_);
    cancel_requested = run.cancel_requested;
  }
  const bool shutting_down = run.control.shutting_down.load();
  if (!cancel_requested && (outcome.kind == JobOutcome::Kind::kInterrupted ||
                            outcome.kind == JobOutcome::Kind::kCancelled)) {
    // A cancel the poll has not seen yet: requeueing would drop it (-> QUEUED clears it).
    absl::StatusOr<JobRecord> now = store_->GetJob(run.job.tenant, id);
    if (now.ok()) cancel_requested = now->cancel_requested;
  }

  JobState to = JobState::kFailed;
  TransitionFields fields;
  fields.message = outcome.message;
  switch (outcome.kind) {
    case JobOutcome::Kind::kSucceeded:
      to = JobState::kSucceeded;
      fields.result_adapter_name = outcome.result_adapter_name;
      fields.result_adapter_version = outcome.result_adapter_version;
      break;
    case JobOutcome::Kind::kFailed:
      to = JobState::kFailed;
      fields.failure = outcome.failure;
      if (fields.failure->reason.empty()) fields.failure->reason = "INTERNAL";
      if (fields.message.empty()) fields.message = outcome.failure.message;
      break;
    case JobOutcome::Kind::kCancelled:
    case JobOutcome::Kind::kInterrupted:
      if (cancel_requested) {
        to = JobState::kCancelled;
        if (outcome.kind == JobOutcome::Kind::kInterrupted || fields.message.empty()) {
          fields.message = "cancelled";
        }
      } else if (outcome.kind == JobOutcome::Kind::kInterrupted || shutting_down) {
        to = JobState::kQueued;
        if (shutting_down) {
          fields.message = "requeued at shutdown";
        } else if (fields.message.empty()) {
          fields.message = "requeued";
        }
      } else {
        to = JobState::kCancelled;  // the executor stopped on its own account
        if (fields.message.empty()) fields.message = "cancelled";
      }
      break;
  }
  absl::StatusOr<JobRecord> done = store_->Transition(id, JobState::kRunning, to, fields);
  if (!done.ok()) {
    Log(absl::StrCat("finishing ", id, " as ", JobStateName(to), ": ", done.status().ToString()));
    return;
  }
  if (IsTerminal(to) && observer_.on_job_finished) observer_.on_job_finished(id, to);
}

}  // namespace oft
