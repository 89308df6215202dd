#include "server/jobs/scheduler.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace oft {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

namespace fs = std::filesystem;

// Polls `pred` every 2 ms for up to 10 s.
bool Eventually(const std::function<bool()>& pred) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return pred();
}

// Distinct, increasing creation times.
class FakeClock {
 public:
  absl::Time Now() { return absl::FromUnixMicros(micros_.fetch_add(1000)); }

 private:
  std::atomic<int64_t> micros_{1'700'000'000'000'000};
};

// A fake executor: records starts; each job either returns at once (`outcomes`), or,
// when `gated`, waits until released or stopped.
class FakeExecutor {
 public:
  JobOutcome Run(const JobRecord& job, const std::vector<std::string>& devices,
                 JobControl& control) {
    absl::Notification* release = nullptr;
    {
      absl::MutexLock lock(&mu_);
      starts_.push_back(job.id);
      devices_[job.id] = absl::StrJoin(devices, ",");
      release = &releases_[job.id];
    }
    if (throw_for_.count(job.id)) throw std::runtime_error("boom in the executor");
    if (auto it = outcomes_.find(job.id); it != outcomes_.end()) return it->second;
    if (gated_) {
      const absl::Time deadline = absl::Now() + absl::Seconds(20);
      while (!release->HasBeenNotified() && !control.stop.load() && absl::Now() < deadline) {
        release->WaitForNotificationWithTimeout(absl::Milliseconds(1));
      }
      if (control.stop.load()) {
        JobOutcome o;
        o.kind = control.shutting_down.load() ? shutdown_kind_ : JobOutcome::Kind::kCancelled;
        return o;
      }
    }
    JobOutcome ok;
    ok.result_adapter_name = "adapter-" + job.id;
    ok.result_adapter_version = 1;
    return ok;
  }

  JobExecutor AsExecutor() {
    return [this](const JobRecord& j, const std::vector<std::string>& d, JobControl& c) {
      return Run(j, d, c);
    };
  }
  void Release(const std::string& id) {
    absl::MutexLock lock(&mu_);
    releases_[id].Notify();
  }
  // Waits until `n` jobs have started.
  bool WaitStarted(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return starts_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }
  std::vector<std::string> starts() {
    absl::MutexLock lock(&mu_);
    return starts_;
  }
  // The job's devices, joined with ",".
  std::string device(const std::string& id) {
    absl::MutexLock lock(&mu_);
    return devices_[id];
  }

  bool gated_ = false;
  JobOutcome::Kind shutdown_kind_ = JobOutcome::Kind::kInterrupted;
  std::map<std::string, JobOutcome> outcomes_;  // set before Start()
  std::set<std::string> throw_for_;             // set before Start()

 private:
  absl::Mutex mu_;
  std::vector<std::string> starts_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> devices_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Notification> releases_ ABSL_GUARDED_BY(mu_);
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("scheduler_test_", getpid(), "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    JobStoreOptions o;
    o.clock = [this] { return clock_.Now(); };
    auto s = JobStore::Open((dir_ / "jobs.db").string(), o);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  void TearDown() override {
    scheduler_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }

  std::string AddJob(int priority = 0, int num_devices = 1) {
    const NewJob j{.tenant = "t1", .idempotency_key = "",
                   .spec_json = absl::StrCat(R"({"num_devices":)", num_devices, "}"),
                   .priority = priority, .dataset_ids = {}};
    auto r = store_->CreateJob(j);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->job.id : "";
  }

  void MakeScheduler(SchedulerOptions options, SchedulerObserver obs = {}) {
    obs.on_job_finished = [this](const std::string& id, JobState state) {
      absl::MutexLock lock(&mu_);
      finished_[id] = state;
    };
    auto s = Scheduler::Create(store_.get(), std::move(options), fake_.AsExecutor(), obs);
    ASSERT_TRUE(s.ok()) << s.status();
    scheduler_ = std::move(*s);
  }

  bool WaitFinished(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return finished_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }
  std::map<std::string, JobState> finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }

  JobRecord Get(const std::string& id) {
    auto r = store_->GetJob("t1", id);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : JobRecord{};
  }

  std::vector<EventRecord> Events(const std::string& id, const std::string& kind) {
    auto r = store_->EventsAfter(id, 0);
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<EventRecord> out;
    if (!r.ok()) return out;
    for (auto& e : *r) {
      if (e.kind == kind) out.push_back(e);
    }
    return out;
  }

  std::string LastStateMessage(const std::string& id) {
    auto events = Events(id, "state_changed");
    if (events.empty()) return "";
    return nlohmann::json::parse(events.back().payload_json).value("message", "");
  }

  fs::path dir_;
  FakeClock clock_;
  std::unique_ptr<JobStore> store_;
  FakeExecutor fake_;
  std::unique_ptr<Scheduler> scheduler_;
  absl::Mutex mu_;
  std::map<std::string, JobState> finished_ ABSL_GUARDED_BY(mu_);
};

TEST_F(SchedulerTest, CreateRejectsBadOptions) {
  JobExecutor ex = fake_.AsExecutor();
  EXPECT_TRUE(absl::IsInvalidArgument(Scheduler::Create(nullptr, {}, ex).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Scheduler::Create(store_.get(), {}, nullptr).status()));
  SchedulerOptions o;
  o.devices = {};
  EXPECT_TRUE(absl::IsInvalidArgument(Scheduler::Create(store_.get(), o, ex).status()));
  o.devices = {"cpu"};
  o.jobs_per_device = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(Scheduler::Create(store_.get(), o, ex).status()));
  o.jobs_per_device = 1;
  o.poll_interval = absl::ZeroDuration();
  EXPECT_TRUE(absl::IsInvalidArgument(Scheduler::Create(store_.get(), o, ex).status()));
}

TEST_F(SchedulerTest, RunsByPriorityThenCreationOnOneDevice) {
  const std::string a = AddJob(0), b = AddJob(5), c = AddJob(0), d = AddJob(10);
  MakeScheduler({});
  scheduler_->Start();
  ASSERT_TRUE(WaitFinished(4));
  EXPECT_THAT(fake_.starts(), ElementsAre(d, b, a, c));
  for (const std::string& id : {a, b, c, d}) {
    const JobRecord j = Get(id);
    EXPECT_EQ(j.state, JobState::kSucceeded) << id;
    EXPECT_EQ(j.result_adapter_name, "adapter-" + id);
    EXPECT_EQ(j.result_adapter_version, 1);
    EXPECT_EQ(finished()[id], JobState::kSucceeded);
    EXPECT_EQ(fake_.device(id), "cpu");
  }
}

TEST_F(SchedulerTest, TwoDevicesRunTwoJobsAtOnce) {
  fake_.gated_ = true;
  const std::string a = AddJob(), b = AddJob(), c = AddJob();
  SchedulerOptions o;
  o.devices = {"cpu", "cuda:0"};
  MakeScheduler(o);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(2));
  EXPECT_THAT(scheduler_->RunningJobIds(), UnorderedElementsAre(a, b));
  EXPECT_EQ(Get(a).state, JobState::kRunning);
  EXPECT_EQ(Get(b).state, JobState::kRunning);
  EXPECT_EQ(Get(c).state, JobState::kQueued);
  EXPECT_NE(fake_.device(a), fake_.device(b));
  EXPECT_THAT(fake_.starts(), SizeIs(2));  // c waits for a free device
  fake_.Release(a);
  fake_.Release(b);
  fake_.Release(c);
  ASSERT_TRUE(WaitFinished(3));
  for (const std::string& id : {a, b, c}) EXPECT_EQ(Get(id).state, JobState::kSucceeded);
}

TEST_F(SchedulerTest, JobsPerDeviceAllowsConcurrentJobsOnOneDevice) {
  fake_.gated_ = true;
  const std::string a = AddJob(), b = AddJob();
  SchedulerOptions o;
  o.jobs_per_device = 2;
  MakeScheduler(o);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(2));
  EXPECT_EQ(fake_.device(a), "cpu");
  EXPECT_EQ(fake_.device(b), "cpu");
  fake_.Release(a);
  fake_.Release(b);
  ASSERT_TRUE(WaitFinished(2));
}

TEST_F(SchedulerTest, CancelStopsARunningJob) {
  fake_.gated_ = true;
  const std::string a = AddJob(), b = AddJob();
  SchedulerOptions o;
  o.poll_interval = absl::Minutes(10);  // only Cancel() can stop it
  MakeScheduler(o);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(1));
  ASSERT_EQ(fake_.starts()[0], a);
  scheduler_->Cancel(b);  // queued: harmless
  scheduler_->Cancel("job-unknown");
  scheduler_->Cancel(a);
  // Eventually gives up after 10 s, far below the 10-minute poll: the job finished because
  // of Cancel(), not a poll (no wall-clock bound of its own on a busy machine).
  ASSERT_TRUE(Eventually([&] { return finished().count(a) > 0; }));
  EXPECT_EQ(finished()[a], JobState::kCancelled);
  EXPECT_EQ(Get(a).state, JobState::kCancelled);
  // The device is free again: b runs.
  ASSERT_TRUE(fake_.WaitStarted(2));
  fake_.Release(b);
  ASSERT_TRUE(WaitFinished(2));
  EXPECT_EQ(Get(b).state, JobState::kSucceeded);
}

TEST_F(SchedulerTest, CancelRequestedInTheStoreIsPolled) {
  fake_.gated_ = true;
  const std::string a = AddJob();
  SchedulerOptions o;
  o.poll_interval = absl::Milliseconds(20);
  MakeScheduler(o);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(1));
  ASSERT_TRUE(store_->RequestCancel("t1", a).ok());  // no Scheduler::Cancel
  ASSERT_TRUE(WaitFinished(1));
  EXPECT_EQ(Get(a).state, JobState::kCancelled);
}

TEST_F(SchedulerTest, ShutdownRequeuesRunningJobs) {
  fake_.gated_ = true;
  const std::string a = AddJob(), b = AddJob();
  SchedulerOptions o;
  o.poll_interval = absl::Minutes(10);
  MakeScheduler(o);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(1));
  scheduler_->Shutdown();
  scheduler_->Shutdown();  // idempotent
  EXPECT_THAT(fake_.starts(), ElementsAre(a));
  const JobRecord ja = Get(a);
  EXPECT_EQ(ja.state, JobState::kQueued);
  EXPECT_EQ(LastStateMessage(a), "requeued at shutdown");
  EXPECT_EQ(Get(b).state, JobState::kQueued);
  EXPECT_TRUE(finished().empty());
  EXPECT_TRUE(scheduler_->RunningJobIds().empty());
  // Requeued first (priority, then creation): a starts again first on the next server.
  auto q = store_->QueuedJobs();
  ASSERT_TRUE(q.ok());
  ASSERT_THAT(*q, SizeIs(2));
  EXPECT_EQ((*q)[0].id, a);
}

TEST_F(SchedulerTest, ShutdownRequeuesAJobWhoseExecutorReportsCancelled) {
  fake_.gated_ = true;
  fake_.shutdown_kind_ = JobOutcome::Kind::kCancelled;  // executor does not tell them apart
  const std::string a = AddJob();
  MakeScheduler({});
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(1));
  scheduler_->Shutdown();
  EXPECT_EQ(Get(a).state, JobState::kQueued);
}

TEST_F(SchedulerTest, ShutdownKeepsAPendingCancel) {
  fake_.gated_ = true;
  const std::string a = AddJob();
  SchedulerOptions o;
  o.poll_interval = absl::Minutes(10);  // the poll never sees the request
  MakeScheduler(o);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(1));
  ASSERT_TRUE(store_->RequestCancel("t1", a).ok());
  scheduler_->Shutdown();
  EXPECT_EQ(Get(a).state, JobState::kCancelled);
}

TEST_F(SchedulerTest, ShutdownWithoutStartAndDestructorAreSafe) {
  AddJob();
  MakeScheduler({});
  scheduler_->Shutdown();
  scheduler_->Start();  // after Shutdown: nothing runs
  EXPECT_TRUE(fake_.starts().empty());
  scheduler_.reset();
}

TEST_F(SchedulerTest, ExecutorFailureFailsTheJobWithItsReason) {
  const std::string a = AddJob();
  JobOutcome failed;
  failed.kind = JobOutcome::Kind::kFailed;
  failed.failure = {"DATASET_INVALID", "train.jsonl line 3: not JSON", "training_dataset_ids"};
  fake_.outcomes_[a] = failed;
  MakeScheduler({});
  scheduler_->Start();
  ASSERT_TRUE(WaitFinished(1));
  const JobRecord j = Get(a);
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_EQ(j.failure.reason, "DATASET_INVALID");
  EXPECT_EQ(j.failure.message, "train.jsonl line 3: not JSON");
  EXPECT_EQ(j.failure.field, "training_dataset_ids");
  EXPECT_EQ(finished()[a], JobState::kFailed);
}

TEST_F(SchedulerTest, ExecutorExceptionIsInternalAndTheWorkerSurvives) {
  const std::string a = AddJob(), b = AddJob();
  fake_.throw_for_.insert(a);
  MakeScheduler({});
  scheduler_->Start();
  ASSERT_TRUE(WaitFinished(2));
  const JobRecord ja = Get(a);
  EXPECT_EQ(ja.state, JobState::kFailed);
  EXPECT_EQ(ja.failure.reason, "INTERNAL");
  EXPECT_THAT(ja.failure.message, HasSubstr("boom in the executor"));
  EXPECT_EQ(Get(b).state, JobState::kSucceeded);
}

TEST_F(SchedulerTest, PublishesQueuePositionChanges) {
  fake_.gated_ = true;
  const std::string a = AddJob();
  SchedulerOptions o;
  o.poll_interval = absl::Minutes(10);  // only Wake() and finished jobs trigger passes
  std::vector<std::pair<int64_t, int64_t>> reports;
  absl::Mutex reports_mu;
  SchedulerObserver obs;
  obs.on_queue_changed = [&](int64_t queued, int64_t running) {
    absl::MutexLock lock(&reports_mu);
    reports.emplace_back(queued, running);
  };
  MakeScheduler(o, obs);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(1));
  EXPECT_TRUE(Events(a, "queue_position_changed").empty());  // started at once

  const std::string b = AddJob(), c = AddJob();
  scheduler_->Wake();
  ASSERT_TRUE(Eventually([&] { return Events(c, "queue_position_changed").size() == 1; }));
  auto eb = Events(b, "queue_position_changed");
  ASSERT_THAT(eb, SizeIs(1));
  // Encoded by the codec (job_events.h): proto3 JSON, int64 as a string; the reason follows
  // the one queue-reason rule (QueueReason).
  EXPECT_EQ(nlohmann::json::parse(eb[0].payload_json),
            nlohmann::json::parse(
                R"({"queuePosition":"1","reason":"0 jobs ahead; 1 of 1 device busy"})"));
  EXPECT_EQ(nlohmann::json::parse(Events(c, "queue_position_changed")[0].payload_json),
            nlohmann::json::parse(
                R"({"queuePosition":"2","reason":"1 job ahead; 1 of 1 device busy"})"));

  // Nothing changed: another pass publishes nothing new.
  scheduler_->Wake();
  fake_.Release(a);  // a finishes, b starts, c moves up
  ASSERT_TRUE(fake_.WaitStarted(2));
  ASSERT_TRUE(Eventually([&] { return Events(c, "queue_position_changed").size() == 2; }));
  EXPECT_EQ(nlohmann::json::parse(Events(c, "queue_position_changed")[1].payload_json)
                .value("queuePosition", std::string()),
            "1");
  EXPECT_THAT(Events(b, "queue_position_changed"), SizeIs(1));
  fake_.Release(b);
  fake_.Release(c);
  ASSERT_TRUE(WaitFinished(3));
  EXPECT_THAT(Events(c, "queue_position_changed"), SizeIs(2));
  EXPECT_TRUE(Eventually([&] {
    absl::MutexLock lock(&reports_mu);
    return !reports.empty() && reports.back() == std::make_pair(int64_t{0}, int64_t{0});
  }));
  scheduler_->Shutdown();
  absl::MutexLock lock(&reports_mu);
  EXPECT_NE(std::find(reports.begin(), reports.end(), std::make_pair(int64_t{2}, int64_t{1})),
            reports.end());
}

// Gang scheduling (scheduler.h): num_devices from the spec, as the server reads it.
SchedulerOptions GangOptions(std::vector<std::string> devices) {
  SchedulerOptions o;
  o.devices = std::move(devices);
  o.devices_needed = [](const JobRecord& job) {
    return nlohmann::json::parse(job.spec_json).value("num_devices", 1);
  };
  return o;
}

std::string LastReason(const std::vector<EventRecord>& events) {
  if (events.empty()) return "";
  return nlohmann::json::parse(events.back().payload_json).value("reason", "");
}

TEST_F(SchedulerTest, GangJobGetsAllItsDevicesAtOnce) {
  fake_.gated_ = true;
  const std::string g = AddJob(0, 2);
  MakeScheduler(GangOptions({"cpu", "cuda:0"}));
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(1));
  EXPECT_EQ(fake_.device(g), "cpu,cuda:0");  // rank 0 on devices[0]
  EXPECT_THAT(scheduler_->RunningJobIds(), ElementsAre(g));
  EXPECT_EQ(scheduler_->BusySlots(), 2);
  fake_.Release(g);
  ASSERT_TRUE(WaitFinished(1));
  EXPECT_EQ(Get(g).state, JobState::kSucceeded);
  EXPECT_TRUE(Eventually([&] { return scheduler_->BusySlots() == 0; }));
}

// The stated policy: a 2-device job at the head of the queue reserves the device that frees
// first; the 1-device jobs behind it (a stream of them, some queued while it waits) start
// only after it, and all of them run in the end.
TEST_F(SchedulerTest, GangJobAtTheHeadIsNotStarvedByOneDeviceJobs) {
  fake_.gated_ = true;
  const std::string a = AddJob(), b = AddJob();  // both devices busy
  const std::string g = AddJob(0, 2);
  const std::string c = AddJob(), d = AddJob();
  SchedulerOptions o = GangOptions({"cpu", "cpu"});  // two CPU devices
  o.poll_interval = absl::Milliseconds(20);
  MakeScheduler(o);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(2));
  EXPECT_THAT(fake_.starts(), UnorderedElementsAre(a, b));
  ASSERT_TRUE(Eventually([&] {
    return LastReason(Events(g, "queue_position_changed")) ==
           "waiting for 2 devices, 0 free; 0 jobs ahead; 2 of 2 devices busy";
  })) << LastReason(Events(g, "queue_position_changed"));

  fake_.Release(a);  // one device frees: g keeps it, c and d must not take it
  ASSERT_TRUE(Eventually([&] {
    return LastReason(Events(g, "queue_position_changed")) ==
           "waiting for 2 devices, 1 free; 0 jobs ahead; 1 of 2 devices busy";
  })) << LastReason(Events(g, "queue_position_changed"));
  const std::string e = AddJob();  // more 1-device jobs arrive while g waits
  scheduler_->Wake();
  absl::SleepFor(absl::Milliseconds(200));  // several passes
  EXPECT_THAT(fake_.starts(), SizeIs(2));
  EXPECT_EQ(Get(c).state, JobState::kQueued);
  EXPECT_EQ(Get(g).state, JobState::kQueued);

  fake_.Release(b);  // both free: g starts on both
  ASSERT_TRUE(fake_.WaitStarted(3));
  EXPECT_EQ(fake_.starts()[2], g);
  EXPECT_EQ(fake_.device(g), "cpu,cpu");
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_THAT(fake_.starts(), SizeIs(3));  // g holds both devices

  fake_.Release(g);
  ASSERT_TRUE(fake_.WaitStarted(5));
  const std::vector<std::string> after_g = fake_.starts();
  EXPECT_THAT(std::vector<std::string>(after_g.begin() + 3, after_g.end()),
              UnorderedElementsAre(c, d));
  for (const std::string& id : {c, d, e}) fake_.Release(id);
  ASSERT_TRUE(WaitFinished(6));
  const std::vector<std::string> order = fake_.starts();
  EXPECT_EQ(order.back(), e);
  for (const std::string& id : {a, b, g, c, d, e}) EXPECT_EQ(Get(id).state, JobState::kSucceeded);
}

// Priority still comes first: a higher-priority 1-device job queued while a gang waits is
// ahead of it in the queue, so it may take a free device (the policy reserves devices only
// against jobs behind the gang).
TEST_F(SchedulerTest, HigherPriorityJobGoesAheadOfAWaitingGang) {
  fake_.gated_ = true;
  const std::string a = AddJob();
  const std::string g = AddJob(0, 2);
  SchedulerOptions o = GangOptions({"cpu", "cpu"});
  o.poll_interval = absl::Milliseconds(20);
  MakeScheduler(o);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(1));
  const std::string urgent = AddJob(10);
  scheduler_->Wake();
  ASSERT_TRUE(fake_.WaitStarted(2));
  EXPECT_EQ(fake_.starts()[1], urgent);
  fake_.Release(a);
  fake_.Release(urgent);
  ASSERT_TRUE(fake_.WaitStarted(3));
  EXPECT_EQ(fake_.starts()[2], g);
  fake_.Release(g);
  ASSERT_TRUE(WaitFinished(3));
}

TEST_F(SchedulerTest, JobNeedingMoreDevicesThanThereAreFailsAndDoesNotBlockTheQueue) {
  const std::string big = AddJob(0, 3), small = AddJob();
  MakeScheduler(GangOptions({"cpu", "cpu"}));
  scheduler_->Start();
  ASSERT_TRUE(WaitFinished(2));
  const JobRecord r = Get(big);
  EXPECT_EQ(r.state, JobState::kFailed);
  EXPECT_EQ(r.failure.field, "num_devices");
  EXPECT_THAT(r.failure.message, HasSubstr("needs 3 devices but this server has 2"));
  EXPECT_EQ(Get(small).state, JobState::kSucceeded);
  EXPECT_THAT(fake_.starts(), ElementsAre(small));
}

// A gang needs distinct devices: two slots of one device (jobs_per_device) are not two devices.
TEST_F(SchedulerTest, GangNeedsDistinctDevicesNotSlots) {
  fake_.gated_ = true;
  const std::string g = AddJob(0, 2);
  const std::string a = AddJob();
  SchedulerOptions o = GangOptions({"cpu", "cuda:0"});
  o.jobs_per_device = 2;
  o.poll_interval = absl::Milliseconds(20);
  MakeScheduler(o);
  scheduler_->Start();
  ASSERT_TRUE(fake_.WaitStarted(2));  // g on cpu and cuda:0 (not both cpu slots); a on cpu
  EXPECT_EQ(fake_.device(a), "cpu");
  EXPECT_EQ(fake_.device(g), "cpu,cuda:0");
  EXPECT_EQ(scheduler_->BusySlots(), 3);
  fake_.Release(a);
  fake_.Release(g);
  ASSERT_TRUE(WaitFinished(2));
}

}  // namespace
}  // namespace oft
