// Scheduling on one CPU device: cancellation of RUNNING, QUEUED and finished jobs, and the
// priority queue (higher priority starts first; queue positions reported).
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "tests/integration/alice_server_fixture.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using google::protobuf::util::TimeUtil;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class SchedulingTest : public AliceServerTest {
 protected:
  absl::StatusOr<v1::Job> Create(const std::string& adapter, int64_t steps, int priority = 0) {
    v1::CreateJobRequest req;
    *req.mutable_spec() = SmallSpec(dataset_id_, adapter, steps);
    req.mutable_spec()->set_priority(priority);
    return client_->CreateJob(req);
  }

  // A job that would train for a very long time, RUNNING with a few steps done.
  std::string StartLongJob() {
    absl::StatusOr<v1::Job> job = Create("long", 1000000);
    EXPECT_TRUE(job.ok()) << job.status();
    if (!job.ok()) return "";
    absl::StatusOr<v1::Job> running = WaitForStep(*client_, job->id(), 2, absl::Seconds(60));
    EXPECT_TRUE(running.ok()) << running.status();
    return job->id();
  }

};

TEST_F(SchedulingTest, Cancellation) {
  const std::string long_id = StartLongJob();
  ASSERT_FALSE(long_id.empty());

  // A QUEUED job is cancelled at once: the response already says CANCELLED.
  absl::StatusOr<v1::Job> queued = Create("queued", 2);
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_EQ(queued->state(), v1::Job::QUEUED);
  EXPECT_EQ(queued->queue_position(), 1);
  absl::StatusOr<v1::Job> cancelled = client_->CancelJob(queued->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::Job::CANCELLED);
  EXPECT_FALSE(cancelled->has_start_time());
  // Cancelling a CANCELLED job is a no-op that returns it.
  cancelled = client_->CancelJob(queued->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::Job::CANCELLED);

  // A RUNNING job stops within about one optimizer step. Measure the step time first
  // (over >= 20 steps, since the stored progress is refreshed a few times a second).
  absl::StatusOr<v1::Job> t0_job = client_->GetJob(long_id);
  ASSERT_TRUE(t0_job.ok()) << t0_job.status();
  const absl::Time t0 = absl::Now();
  absl::StatusOr<v1::Job> before =
      WaitForStep(*client_, long_id, t0_job->progress().step() + 20, absl::Seconds(60));
  ASSERT_TRUE(before.ok()) << before.status();
  const absl::Duration step_time =
      (absl::Now() - t0) / (before->progress().step() - t0_job->progress().step());
  const absl::Time cancel_time = absl::Now();
  absl::StatusOr<v1::Job> requested = client_->CancelJob(long_id);
  ASSERT_TRUE(requested.ok()) << requested.status();
  EXPECT_TRUE(requested->state() == v1::Job::CANCELLED ||
              (requested->state() == v1::Job::RUNNING && requested->cancel_requested()))
      << requested->DebugString();
  absl::StatusOr<v1::Job> after =
      WaitForState(*client_, long_id, v1::Job::CANCELLED, absl::Seconds(10));
  ASSERT_TRUE(after.ok()) << after.status();
  const absl::Duration latency = absl::Now() - cancel_time;
  std::printf("cancellation of a RUNNING job took %s (a step takes about %s)\n",
              absl::FormatDuration(latency).c_str(), absl::FormatDuration(step_time).c_str());
  // One step, the checkpoint and the polling interval, with room for a busy machine.
  EXPECT_LE(latency, absl::Seconds(1) + 5 * step_time);
  EXPECT_LT(after->progress().step(), 1000000);
  EXPECT_TRUE(after->has_end_time());
  EXPECT_FALSE(after->has_result());

  // The log ends with the cancellation, after the checkpoint that keeps the work.
  absl::StatusOr<std::vector<v1::JobEvent>> events =
      CollectEvents(*client_, long_id, 0, absl::Seconds(30));
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(CheckContiguous(*events), "");
  ASSERT_GE(events->size(), 2u);
  EXPECT_EQ(events->back().state_changed().state(), v1::Job::CANCELLED);
  bool checkpoint = false;
  for (const v1::JobEvent& e : *events) checkpoint |= e.has_checkpoint_saved();
  EXPECT_TRUE(checkpoint) << "no checkpoint before the cancellation";
  absl::StatusOr<std::vector<v1::Adapter>> adapters = client_->ListAllAdapters("long");
  ASSERT_TRUE(adapters.ok()) << adapters.status();
  EXPECT_THAT(*adapters, IsEmpty());

  // A finished job cannot be cancelled.
  absl::StatusOr<v1::Job> small = Create("small", 2);
  ASSERT_TRUE(small.ok()) << small.status();
  ASSERT_TRUE(WaitForState(*client_, small->id(), v1::Job::SUCCEEDED, absl::Seconds(60)).ok());
  absl::StatusOr<v1::Job> refused = client_->CancelJob(small->id());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("SUCCEEDED"));
  absl::StatusOr<v1::Job> still = client_->GetJob(small->id());
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->state(), v1::Job::SUCCEEDED);
}

TEST_F(SchedulingTest, PriorityOrder) {
  const std::string long_id = StartLongJob();
  ASSERT_FALSE(long_id.empty());

  // B (priority 0) is queued before C (priority 10); C goes ahead of B.
  absl::StatusOr<v1::Job> b = Create("b", 2, 0);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->state(), v1::Job::QUEUED);
  EXPECT_EQ(b->queue_position(), 1);
  absl::StatusOr<v1::Job> c = Create("c", 2, 10);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state(), v1::Job::QUEUED);
  EXPECT_EQ(c->queue_position(), 1);
  EXPECT_FALSE(c->queue_reason().empty());
  absl::StatusOr<v1::Job> b_now = client_->GetJob(b->id());
  ASSERT_TRUE(b_now.ok());
  EXPECT_EQ(b_now->state(), v1::Job::QUEUED);
  EXPECT_EQ(b_now->queue_position(), 2);
  EXPECT_FALSE(b_now->queue_reason().empty());
  EXPECT_LT(b_now->eta_seconds(), 0);  // unknown while queued

  absl::StatusOr<std::vector<v1::Job>> queued = client_->ListAllJobs({v1::Job::QUEUED});
  ASSERT_TRUE(queued.ok()) << queued.status();
  ASSERT_EQ(queued->size(), 2u);
  for (const v1::Job& j : *queued) {
    EXPECT_EQ(j.queue_position(), j.id() == c->id() ? 1 : 2) << j.id();
  }

  // Free the device: C runs, then B.
  ASSERT_TRUE(client_->CancelJob(long_id).ok());
  absl::StatusOr<v1::Job> b_done =
      WaitForState(*client_, b->id(), v1::Job::SUCCEEDED, absl::Seconds(90));
  ASSERT_TRUE(b_done.ok()) << b_done.status();
  absl::StatusOr<v1::Job> c_done =
      WaitForState(*client_, c->id(), v1::Job::SUCCEEDED, absl::Seconds(10));
  ASSERT_TRUE(c_done.ok()) << c_done.status();
  EXPECT_LT(c_done->start_time(), b_done->start_time());
  EXPECT_LE(c_done->end_time(), b_done->start_time()) << "one device: B starts after C ends";
  absl::StatusOr<v1::Job> long_done = client_->GetJob(long_id);
  ASSERT_TRUE(long_done.ok());
  EXPECT_EQ(long_done->state(), v1::Job::CANCELLED);
  EXPECT_LE(long_done->end_time(), c_done->start_time());
}

}  // namespace
}  // namespace oft::testing
