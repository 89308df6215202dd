// Durability across server restarts: a SIGKILL mid-training (the job resumes from its
// checkpoint and succeeds; the event log has every event exactly once, also for a watcher
// that stays connected across the crash) and a graceful SIGTERM (the running job is
// checkpointed and requeued, the process exits 0, the job finishes after a restart).
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/alice_server_fixture.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kSteps = 150;

// Events collected by a background WatchJob that reconnects across restarts.
class BackgroundWatcher {
 public:
  BackgroundWatcher(Client* client, std::string job_id) {
    thread_ = std::thread([this, client, job_id] {
      WatchOptions options;
      options.max_reconnects = 200;
      options.backoff = absl::Milliseconds(50);
      options.max_backoff = absl::Milliseconds(300);
      options.deadline = absl::Seconds(120);
      absl::Status st = client->WatchJob(
          job_id, 0,
          [this](const v1::JobEvent& e) {
            absl::MutexLock lock(&mu_);
            events_.push_back(e);
            return true;
          },
          options);
      absl::MutexLock lock(&mu_);
      status_ = st;
      done_ = true;
    });
  }
  ~BackgroundWatcher() { Join(); }

  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  std::vector<v1::JobEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  // The step of the newest CheckpointSaved event, 0 if none.
  int64_t LastCheckpoint() {
    absl::MutexLock lock(&mu_);
    int64_t step = 0;
    for (const v1::JobEvent& e : events_) {
      if (e.has_checkpoint_saved()) step = e.checkpoint_saved().step();
    }
    return step;
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return done_ ? status_ : absl::UnknownError("watch still running");
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::JobEvent> events_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// The index of the first event that moves the job from `from` to `to` at or after `start`;
// events.size() if none.
size_t FindTransition(const std::vector<v1::JobEvent>& events, v1::Job::State from,
                      v1::Job::State to, size_t start = 0) {
  for (size_t i = start; i < events.size(); ++i) {
    if (events[i].has_state_changed() && events[i].state_changed().previous_state() == from &&
        events[i].state_changed().state() == to) {
      return i;
    }
  }
  return events.size();
}

// The step of the first Step event at or after `start`; -1 if none.
int64_t FirstStepAfter(const std::vector<v1::JobEvent>& events, size_t start) {
  for (size_t i = start; i < events.size(); ++i) {
    if (events[i].has_step()) return events[i].step().progress().step();
  }
  return -1;
}

class RestartTest : public AliceServerTest {
 protected:
  absl::StatusOr<v1::Job> CreateJob(int64_t checkpoint_every) {
    v1::CreateJobRequest req;
    *req.mutable_spec() = SmallSpec(dataset_id_, "durable", kSteps);
    req.mutable_spec()->mutable_hyperparameters()->set_checkpoint_every(checkpoint_every);
    return client_->CreateJob(req);
  }

  // After the job succeeded: the whole log read from event 0 is ids 1..N exactly once and
  // matches `watched` (a watcher's view); one adapter version was published.
  void ExpectCompleteLog(const std::string& job_id, const std::vector<v1::JobEvent>& watched) {
    absl::StatusOr<v1::Job> job = client_->GetJob(job_id);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state(), v1::Job::SUCCEEDED);
    EXPECT_EQ(job->progress().step(), kSteps);
    absl::StatusOr<std::vector<v1::JobEvent>> replay =
        CollectEvents(*client_, job_id, 0, absl::Seconds(30));
    ASSERT_TRUE(replay.ok()) << replay.status();
    EXPECT_EQ(CheckContiguous(*replay), "");
    ASSERT_EQ(static_cast<int64_t>(replay->size()), job->latest_event_id());
    EXPECT_EQ(CheckContiguous(watched), "") << "the watcher across the restart";
    ASSERT_EQ(watched.size(), replay->size());
    for (size_t i = 0; i < watched.size(); ++i) {
      EXPECT_EQ(watched[i].SerializeAsString(), (*replay)[i].SerializeAsString()) << "event " << i;
    }
    EXPECT_EQ(replay->back().state_changed().state(), v1::Job::SUCCEEDED);
    absl::StatusOr<std::vector<v1::Adapter>> adapters = client_->ListAllAdapters("durable");
    ASSERT_TRUE(adapters.ok()) << adapters.status();
    ASSERT_EQ(adapters->size(), 1u);
    EXPECT_EQ((*adapters)[0].job_id(), job_id);
  }

  // The resumed run says so (RESUMED_FROM_CHECKPOINT naming the step), and no event the
  // tenant sees holds a server path: not the data dir (as given or canonical), not the
  // model directory.
  void ExpectResumedWithoutServerPaths(const std::vector<v1::JobEvent>& events) {
    bool resumed = false;
    for (const v1::JobEvent& e : events) {
      if (e.has_warning() && e.warning().code() == "RESUMED_FROM_CHECKPOINT") {
        resumed = true;
        EXPECT_THAT(e.warning().message(), HasSubstr("checkpoint at step "));
      }
    }
    EXPECT_TRUE(resumed) << "no RESUMED_FROM_CHECKPOINT warning";
    const std::string data_dir = server_->data_dir();
    const std::string canonical = std::filesystem::canonical(data_dir).string();
    const std::string model_dir = std::filesystem::canonical(SourceDir() + "/models/default").string();
    for (const v1::JobEvent& e : events) {
      const std::string text = e.DebugString();
      EXPECT_THAT(text, Not(HasSubstr(data_dir))) << "event " << e.event_id();
      EXPECT_THAT(text, Not(HasSubstr(canonical))) << "event " << e.event_id();
      EXPECT_THAT(text, Not(HasSubstr(model_dir))) << "event " << e.event_id();
    }
  }

};

TEST_F(RestartTest, SigkillMidTrainingResumesFromCheckpoint) {
  absl::StatusOr<v1::Job> job = CreateJob(/*checkpoint_every=*/10);
  ASSERT_TRUE(job.ok()) << job.status();
  BackgroundWatcher watcher(client_.get(), job->id());
  ASSERT_TRUE(WaitUntil([&] { return watcher.LastCheckpoint() >= 20; }, absl::Seconds(60)))
      << "no checkpoint at step >= 20";
  const int64_t checkpoint = watcher.LastCheckpoint();
  server_->Kill();
  const size_t seen_before_kill = watcher.events().size();
  absl::StatusOr<v1::Job> mid = client_->GetJob(job->id());
  EXPECT_EQ(mid.status().code(), absl::StatusCode::kUnavailable) << "the server is down";

  ASSERT_TRUE(server_->Start().ok()) << server_->LogTail();
  absl::StatusOr<v1::Job> done =
      WaitForState(*client_, job->id(), v1::Job::SUCCEEDED, absl::Seconds(90));
  ASSERT_TRUE(done.ok()) << done.status();
  watcher.Join();
  ASSERT_TRUE(watcher.status().ok()) << watcher.status();
  const std::vector<v1::JobEvent> events = watcher.events();
  EXPECT_GT(events.size(), seen_before_kill);
  ExpectCompleteLog(job->id(), events);
  ExpectResumedWithoutServerPaths(events);

  // Recovery requeued the job, and training went on from the checkpoint, not from step 1.
  const size_t requeued = FindTransition(events, v1::Job::RUNNING, v1::Job::QUEUED);
  ASSERT_LT(requeued, events.size()) << "no RUNNING -> QUEUED after the crash";
  EXPECT_THAT(events[requeued].state_changed().message(), HasSubstr("restart"));
  const size_t resumed = FindTransition(events, v1::Job::QUEUED, v1::Job::RUNNING, requeued);
  ASSERT_LT(resumed, events.size());
  const int64_t first_step = FirstStepAfter(events, resumed);
  std::printf("killed after checkpoint %lld; first step after the restart %lld; %zu events\n",
              static_cast<long long>(checkpoint), static_cast<long long>(first_step),
              events.size());
  EXPECT_GT(first_step, checkpoint)
      << "resumed from step " << first_step << ", checkpoint was at " << checkpoint;
}

TEST_F(RestartTest, SigtermCheckpointsRequeuesAndExitsZero) {
  absl::StatusOr<v1::Job> job = CreateJob(/*checkpoint_every=*/0);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForStep(*client_, job->id(), 5, absl::Seconds(60)).ok());
  BackgroundWatcher watcher(client_.get(), job->id());

  absl::StatusOr<int> exit_code = server_->Terminate(absl::Seconds(60));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
  // The checkpoint is on disk (checkpoint_every = 0: written only because of the shutdown).
  const std::filesystem::path ckpt_dir =
      std::filesystem::path(server_->data_dir()) / "jobs" / job->id() / "checkpoints";
  ASSERT_TRUE(std::filesystem::is_directory(ckpt_dir)) << ckpt_dir;
  EXPECT_FALSE(std::filesystem::is_empty(ckpt_dir));
  EXPECT_THAT(server_->LogTail(), HasSubstr("stopped"));

  ASSERT_TRUE(server_->Start().ok()) << server_->LogTail();
  absl::StatusOr<v1::Job> done =
      WaitForState(*client_, job->id(), v1::Job::SUCCEEDED, absl::Seconds(90));
  ASSERT_TRUE(done.ok()) << done.status();
  watcher.Join();
  ASSERT_TRUE(watcher.status().ok()) << watcher.status();
  const std::vector<v1::JobEvent> events = watcher.events();
  ExpectCompleteLog(job->id(), events);
  ExpectResumedWithoutServerPaths(events);

  // At shutdown: a checkpoint, then RUNNING -> QUEUED; after the restart it resumed there.
  const size_t requeued = FindTransition(events, v1::Job::RUNNING, v1::Job::QUEUED);
  ASSERT_LT(requeued, events.size()) << "no RUNNING -> QUEUED at shutdown";
  EXPECT_THAT(events[requeued].state_changed().message(), HasSubstr("shutdown"));
  int64_t checkpoint = -1, last_step = -1;
  for (size_t i = 0; i < requeued; ++i) {
    if (events[i].has_checkpoint_saved()) checkpoint = events[i].checkpoint_saved().step();
    if (events[i].has_step()) last_step = events[i].step().progress().step();
  }
  ASSERT_GE(checkpoint, 5) << "no checkpoint written at shutdown";
  EXPECT_GE(checkpoint, last_step) << "the shutdown checkpoint holds the last step";
  const size_t resumed = FindTransition(events, v1::Job::QUEUED, v1::Job::RUNNING, requeued);
  ASSERT_LT(resumed, events.size());
  const int64_t first_step = FirstStepAfter(events, resumed);
  std::printf("shutdown checkpoint at step %lld; first step after the restart %lld; %zu events\n",
              static_cast<long long>(checkpoint), static_cast<long long>(first_step),
              events.size());
  EXPECT_GT(first_step, checkpoint);
}

}  // namespace
}  // namespace oft::testing
