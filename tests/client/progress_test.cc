#include "client/progress.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

v1::JobEvent StepEvent(int64_t id, int64_t step, int64_t total, double loss, double lr,
                       double tps, double eta) {
  v1::JobEvent e;
  e.set_event_id(id);
  e.set_job_id("job-1");
  auto* s = e.mutable_step();
  s->mutable_progress()->set_step(step);
  s->mutable_progress()->set_total_steps(total);
  s->mutable_metrics()->set_loss(loss);
  s->mutable_metrics()->set_learning_rate(lr);
  s->mutable_metrics()->set_tokens_per_second(tps);
  s->set_eta_seconds(eta);
  return e;
}

v1::JobEvent StateEvent(int64_t id, v1::Job::State from, v1::Job::State to) {
  v1::JobEvent e;
  e.set_event_id(id);
  e.mutable_state_changed()->set_previous_state(from);
  e.mutable_state_changed()->set_state(to);
  return e;
}

TEST(ExitCodeTest, JobStates) {
  EXPECT_EQ(ExitCodeForJobState(v1::Job::SUCCEEDED), 0);
  EXPECT_EQ(ExitCodeForJobState(v1::Job::FAILED), 3);
  EXPECT_EQ(ExitCodeForJobState(v1::Job::CANCELLED), 4);
  EXPECT_EQ(ExitCodeForJobState(v1::Job::RUNNING), 1);
  EXPECT_EQ(ExitCodeForJobState(v1::Job::STATE_UNSPECIFIED), 1);
}

TEST(ExitCodeTest, Statuses) {
  EXPECT_EQ(ExitCodeForStatus(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeForStatus(absl::NotFoundError("x")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::DataLossError("x")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::DataLossError("x"), /*is_download=*/true), 5);
  EXPECT_EQ(ExitCodeForStatus(absl::UnavailableError("x"), /*is_download=*/true), 1);
  EXPECT_EQ(FormatCliError(absl::NotFoundError("job job-9 not found")),
            "oftctl: NOT_FOUND: job job-9 not found");
}

TEST(FormatTest, EtaCountsBytes) {
  EXPECT_EQ(FormatEta(-1), "?");
  EXPECT_EQ(FormatEta(0), "0s");
  EXPECT_EQ(FormatEta(45.4), "45s");
  EXPECT_EQ(FormatEta(125), "2m05s");
  EXPECT_EQ(FormatEta(3720), "1h02m");
  EXPECT_EQ(FormatEta(3 * 86400 + 4 * 3600 + 59), "3d04h");
  EXPECT_EQ(FormatCount(950), "950");
  EXPECT_EQ(FormatCount(1234), "1.2k");
  EXPECT_EQ(FormatCount(2.5e6), "2.5M");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(int64_t{3} << 30), "3.0 GiB");
}

TEST(WatchProgressTest, FoldsEvents) {
  WatchProgress p;
  p.Apply(StateEvent(1, v1::Job::STATE_UNSPECIFIED, v1::Job::QUEUED));
  v1::JobEvent q;
  q.set_event_id(2);
  q.mutable_queue_position_changed()->set_queue_position(2);
  q.mutable_queue_position_changed()->set_reason("1 job ahead");
  p.Apply(q);
  EXPECT_EQ(p.state, v1::Job::QUEUED);
  EXPECT_EQ(RenderProgressLine(p, 80), "QUEUED position 2 (1 job ahead)");
  p.Apply(StateEvent(3, v1::Job::QUEUED, v1::Job::RUNNING));
  EXPECT_EQ(p.queue_position, 0);
  EXPECT_EQ(RenderProgressLine(p, 80), "RUNNING");
  p.Apply(StepEvent(4, 120, 500, 1.23456, 1e-4, 1234, 125));
  EXPECT_EQ(p.last_event_id, 4);
  EXPECT_TRUE(p.has_step);
  EXPECT_EQ(p.step, 120);
  EXPECT_EQ(p.total_steps, 500);
  p.Apply(StateEvent(5, v1::Job::RUNNING, v1::Job::SUCCEEDED));
  EXPECT_EQ(p.state, v1::Job::SUCCEEDED);
  EXPECT_EQ(p.eta_seconds, 0);
}

TEST(ProgressLineTest, FullLineHasBarAndAllParts) {
  WatchProgress p;
  p.state = v1::Job::RUNNING;
  p.Apply(StepEvent(4, 120, 500, 1.23456, 1e-4, 1234, 125));
  const std::string line = RenderProgressLine(p, 120);
  EXPECT_THAT(line, StartsWith("RUNNING ["));
  EXPECT_THAT(line, HasSubstr("] 120/500 24% loss 1.2346 lr 1.00e-04 1.2k tok/s ETA 2m05s"));
  EXPECT_LE(line.size(), 119u);
  // 24% of a 30-cell bar.
  EXPECT_THAT(line, HasSubstr("[#######......................."));
}

TEST(ProgressLineTest, NarrowTerminalsDropBarThenLowPriorityParts) {
  WatchProgress p;
  p.state = v1::Job::RUNNING;
  p.Apply(StepEvent(4, 250, 500, 0.5, 3e-4, 2000, 3600));
  for (int width : {200, 100, 80, 70, 60, 50, 40, 30, 20, 10}) {
    const std::string line = RenderProgressLine(p, width);
    EXPECT_LT(line.size(), static_cast<size_t>(std::max(width, 20))) << width;
    EXPECT_THAT(line, StartsWith("RUNNING")) << width;
  }
  const std::string w60 = RenderProgressLine(p, 60);
  EXPECT_THAT(w60, Not(HasSubstr("[")));  // no room for a 10-cell bar
  EXPECT_THAT(w60, HasSubstr("250/500 50% loss 0.5000"));
  EXPECT_THAT(w60, HasSubstr("ETA 1h00m"));
  const std::string w50 = RenderProgressLine(p, 50);
  EXPECT_THAT(w50, Not(HasSubstr("lr ")));  // lr goes first
  EXPECT_THAT(w50, HasSubstr("ETA"));
  EXPECT_EQ(RenderProgressLine(p, 45), "RUNNING 250/500 50% loss 0.5000 ETA 1h00m");
  EXPECT_EQ(RenderProgressLine(p, 40), "RUNNING 250/500 50% loss 0.5000");
}

TEST(ProgressLineTest, UnknownTotalShowsStep) {
  WatchProgress p;
  p.Apply(StepEvent(4, 7, 0, 2.0, 1e-3, 10, -1));
  EXPECT_EQ(p.state, v1::Job::RUNNING);  // a step implies RUNNING
  const std::string line = RenderProgressLine(p, 100);
  EXPECT_THAT(line, StartsWith("RUNNING step 7 loss 2.0000"));
  EXPECT_THAT(line, HasSubstr("ETA ?"));
  EXPECT_THAT(line, Not(HasSubstr("[")));
}

TEST(EventLineTest, EachPayload) {
  EXPECT_EQ(FormatEventLine(StepEvent(13, 120, 500, 1.23456, 1e-4, 1234, 125)),
            "#13 step 120/500 24% loss 1.2346 lr 1.00e-04 1.2k tok/s ETA 2m05s");
  v1::JobEvent failed = StateEvent(20, v1::Job::RUNNING, v1::Job::FAILED);
  failed.mutable_state_changed()->set_message("training diverged");
  failed.mutable_state_changed()->mutable_failure()->set_reason(
      v1::JobFailure::TRAINING_DIVERGED);
  EXPECT_EQ(FormatEventLine(failed),
            "#20 state RUNNING -> FAILED: training diverged [TRAINING_DIVERGED]");
  EXPECT_EQ(FormatEventLine(StateEvent(1, v1::Job::STATE_UNSPECIFIED, v1::Job::QUEUED)),
            "#1 state QUEUED");
  v1::JobEvent eval;
  eval.set_event_id(14);
  eval.mutable_eval()->set_step(100);
  eval.mutable_eval()->set_eval_loss(1.23);
  eval.mutable_eval()->set_is_best(true);
  EXPECT_EQ(FormatEventLine(eval), "#14 eval step 100 eval_loss 1.2300 (best)");
  v1::JobEvent warn;
  warn.set_event_id(2);
  warn.mutable_warning()->set_code("BLOCK_SIZE_ADJUSTED");
  warn.mutable_warning()->set_message("32 -> 16 for mlp.down_proj");
  EXPECT_EQ(FormatEventLine(warn), "#2 warning BLOCK_SIZE_ADJUSTED: 32 -> 16 for mlp.down_proj");
  v1::JobEvent ckpt;
  ckpt.set_event_id(15);
  ckpt.mutable_checkpoint_saved()->set_step(100);
  EXPECT_EQ(FormatEventLine(ckpt), "#15 checkpoint step 100");
  v1::JobEvent unknown;
  unknown.set_event_id(16);
  EXPECT_EQ(FormatEventLine(unknown), "#16 (unknown event)");
}

}  // namespace
}  // namespace oft
