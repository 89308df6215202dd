// The job event codec: every encoder round-trips through DecodeJobEvent into the oft.v1
// payload message, trainer events map to the right kinds, eval verdicts and the queue
// reason follow their one rule, and undecodable events are errors.
#include "server/jobs/job_events.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/jobs/job_event_proto.h"

namespace oft {
namespace {

using ::testing::HasSubstr;

v1::JobEvent Decode(const EncodedEvent& e, int64_t id = 1) {
  absl::StatusOr<v1::JobEvent> d =
      DecodeJobEvent(EventRecord{"job-1", id, e.kind, e.payload_json, absl::FromUnixSeconds(5)});
  EXPECT_TRUE(d.ok()) << d.status() << " " << e.payload_json;
  return d.ok() ? *d : v1::JobEvent();
}

TEST(JobEventsTest, StateChangedRoundTrips) {
  v1::JobEvent e = Decode(EncodeStateChanged(std::nullopt, JobState::kQueued, "job created",
                                             std::nullopt),
                          3);
  ASSERT_TRUE(e.has_state_changed());
  EXPECT_EQ(e.event_id(), 3);
  EXPECT_EQ(e.job_id(), "job-1");
  EXPECT_EQ(e.create_time().seconds(), 5);
  EXPECT_EQ(e.state_changed().previous_state(), v1::Job::STATE_UNSPECIFIED);
  EXPECT_EQ(e.state_changed().state(), v1::Job::QUEUED);
  EXPECT_EQ(e.state_changed().message(), "job created");

  e = Decode(EncodeStateChanged(JobState::kRunning, JobState::kFailed, "bad \xFF byte",
                                JobFailureInfo{"OUT_OF_MEMORY", "too big", "batch_size"}));
  EXPECT_EQ(e.state_changed().previous_state(), v1::Job::RUNNING);
  EXPECT_EQ(e.state_changed().failure().reason(), v1::JobFailure::OUT_OF_MEMORY);
  EXPECT_EQ(e.state_changed().failure().field(), "batch_size");
  EXPECT_EQ(e.state_changed().message(), "bad \xEF\xBF\xBD byte");  // repaired, not dropped
}

TEST(JobEventsTest, TrainEventsMapToPayloadsAndProgress) {
  TrainEvent step;
  step.kind = TrainEvent::Kind::kStep;
  step.step = 3;
  step.total_steps = 10;
  step.epoch = 0.5;
  step.loss = 2.5;
  step.learning_rate = 0.001;
  step.grad_norm = 0.25;
  step.tokens_per_second = 1000;
  step.eta_seconds = 7;
  JobProgressInfo progress;
  progress.eval_loss = 3.0;
  EvalTracker evals;
  std::optional<EncodedEvent> enc = EncodeTrainEvent(step, &progress, &evals);
  ASSERT_TRUE(enc.has_value());
  EXPECT_EQ(enc->kind, kEventStep);
  ASSERT_TRUE(enc->progress.has_value());
  EXPECT_EQ(enc->progress->step, 3);
  EXPECT_EQ(enc->progress->eval_loss, 3.0);  // kept from the progress so far
  EXPECT_EQ(progress.loss, 2.5);
  v1::JobEvent e = Decode(*enc);
  EXPECT_EQ(e.step().progress().total_steps(), 10);
  EXPECT_DOUBLE_EQ(e.step().metrics().learning_rate(), 0.001);
  EXPECT_DOUBLE_EQ(e.step().metrics().eval_loss(), 3.0);
  EXPECT_DOUBLE_EQ(e.step().eta_seconds(), 7);

  step.loss = std::numeric_limits<double>::quiet_NaN();
  e = Decode(*EncodeTrainEvent(step, &progress, &evals));
  EXPECT_TRUE(std::isnan(e.step().metrics().loss()));

  TrainEvent ckpt;
  ckpt.kind = TrainEvent::Kind::kCheckpoint;
  ckpt.step = 4;
  enc = EncodeTrainEvent(ckpt, &progress, &evals);
  EXPECT_EQ(enc->kind, kEventCheckpointSaved);
  EXPECT_FALSE(enc->progress.has_value());
  EXPECT_EQ(Decode(*enc).checkpoint_saved().step(), 4);

  TrainEvent warn;
  warn.kind = TrainEvent::Kind::kWarning;
  warn.warning = WarningCode::kResumedFromCheckpoint;
  warn.message = "resumed from checkpoint /x/step-4";
  e = Decode(*EncodeTrainEvent(warn, &progress, &evals));
  EXPECT_EQ(e.warning().kind(), v1::JobEvent::Warning::RESUMED_FROM_CHECKPOINT);
  EXPECT_EQ(e.warning().code(), "RESUMED_FROM_CHECKPOINT");
  EXPECT_EQ(e.warning().message(), warn.message);

  TrainEvent done;
  done.kind = TrainEvent::Kind::kDone;
  EXPECT_FALSE(EncodeTrainEvent(done, &progress, &evals).has_value());
}

TEST(JobEventsTest, EveryWarningCodeHasItsProtoName) {
  for (WarningCode c :
       {WarningCode::kTrainingWarning, WarningCode::kBlockSizeAdjusted,
        WarningCode::kExamplesTruncated, WarningCode::kResumedFromCheckpoint,
        WarningCode::kEarlyStopping, WarningCode::kCancelRequested}) {
    v1::JobEvent e = Decode(EncodeWarning(c, "m"));
    EXPECT_NE(e.warning().kind(), v1::JobEvent::Warning::CODE_UNSPECIFIED) << WarningCodeName(c);
    EXPECT_EQ(v1::JobEvent::Warning::Code_Name(e.warning().kind()), WarningCodeName(c));
  }
}

TEST(JobEventsTest, EvalsCarryIsBestAndEvalsWithoutImprovement) {
  JobProgressInfo progress;
  EvalTracker evals;
  const auto eval = [&](int64_t step, double loss) {
    TrainEvent t;
    t.kind = TrainEvent::Kind::kEval;
    t.step = step;
    t.eval_loss = loss;
    std::optional<EncodedEvent> enc = EncodeTrainEvent(t, &progress, &evals);
    EXPECT_TRUE(enc->progress->eval_loss == loss || std::isnan(loss));
    return Decode(*enc).eval();
  };
  v1::JobEvent::Eval e = eval(10, 2.0);
  EXPECT_TRUE(e.is_best());
  EXPECT_EQ(e.evals_without_improvement(), 0);
  e = eval(20, 2.5);
  EXPECT_FALSE(e.is_best());
  EXPECT_EQ(e.evals_without_improvement(), 1);
  e = eval(30, 2.0);  // equal is not better
  EXPECT_EQ(e.evals_without_improvement(), 2);
  e = eval(40, std::numeric_limits<double>::quiet_NaN());
  EXPECT_FALSE(e.is_best());
  EXPECT_EQ(e.evals_without_improvement(), 3);
  e = eval(50, 1.5);
  EXPECT_TRUE(e.is_best());
  EXPECT_EQ(e.evals_without_improvement(), 0);
  EXPECT_EQ(e.step(), 50);

  // A restarted server replays the stored evals and continues the count.
  EvalTracker replayed;
  EXPECT_EQ(StoredEvalLoss(EventRecord{"job-1", 1, "eval", EncodeEval(10, 2.0, true, 0).payload_json,
                                       absl::Now()}),
            2.0);
  replayed.Observe(2.0);
  EXPECT_FALSE(StoredEvalLoss(EventRecord{"job-1", 2, "step", "{}", absl::Now()}).has_value());
  EXPECT_EQ(replayed.Observe(2.2).evals_without_improvement, 1);
}

TEST(JobEventsTest, QueueReasonIsOneRule) {
  EXPECT_EQ(QueueReason(1, 1, 1), "0 jobs ahead; 1 of 1 device busy");
  EXPECT_EQ(QueueReason(2, 2, 4), "1 job ahead; 2 of 4 devices busy");
  EXPECT_EQ(QueueReason(1, 1, 2, 2), "waiting for 2 devices, 1 free; 0 jobs ahead; 1 of 2 devices busy");
  EXPECT_EQ(QueueReason(1, 1, 2, 1), "0 jobs ahead; 1 of 2 devices busy");
  v1::JobEvent e = Decode(EncodeQueuePositionChanged(3, QueueReason(3, 0, 2)));
  EXPECT_EQ(e.queue_position_changed().queue_position(), 3);
  EXPECT_EQ(e.queue_position_changed().reason(), "2 jobs ahead; 0 of 2 devices busy");
}

TEST(JobEventsTest, UndecodableEventsAreErrorsNamingTheEvent) {
  absl::StatusOr<v1::JobEvent> d =
      DecodeJobEvent(EventRecord{"job-9", 4, "step", R"({"progress":{"step":"x"}})", absl::Now()});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("job job-9 event 4 (step)"));
  d = DecodeJobEvent(EventRecord{"job-9", 5, "event_id", "{}", absl::Now()});  // not a payload
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
  d = DecodeJobEvent(EventRecord{"job-9", 6, "eval", "[1]", absl::Now()});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
  // Fields a newer server wrote are ignored.
  d = DecodeJobEvent(
      EventRecord{"job-9", 7, "checkpoint_saved", R"({"step":"2","future":1})", absl::Now()});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->checkpoint_saved().step(), 2);
}

}  // namespace
}  // namespace oft
