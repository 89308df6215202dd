#include "server/train/lr_schedule.h"

#include "gtest/gtest.h"

namespace oft {
namespace {

TrainOptions Opts(LrSchedule s, int64_t warmup, double min_ratio = 0) {
  TrainOptions o;
  o.learning_rate = 1.0;
  o.schedule = s;
  o.warmup_steps = warmup;
  o.min_lr_ratio = min_ratio;
  return o;
}

TEST(LrScheduleTest, ConstantWithWarmup) {
  const auto o = Opts(LrSchedule::kConstant, 4);
  const double want[] = {0.25, 0.5, 0.75, 1.0, 1.0, 1.0};
  for (int k = 0; k < 6; ++k) EXPECT_DOUBLE_EQ(LearningRateAt(o, k, 6), want[k]) << k;
}

TEST(LrScheduleTest, LinearWithWarmup) {
  // W = 2, N = 6: decay over 4 steps, q = 0, .25, .5, .75.
  const auto o = Opts(LrSchedule::kLinear, 2);
  const double want[] = {0.5, 1.0, 1.0, 0.75, 0.5, 0.25};
  for (int k = 0; k < 6; ++k) EXPECT_DOUBLE_EQ(LearningRateAt(o, k, 6), want[k]) << k;
}

TEST(LrScheduleTest, CosineWithWarmupAndFloor) {
  const auto o = Opts(LrSchedule::kCosine, 2);
  const double want[] = {0.5, 1.0, 1.0, 0.8535533905932737, 0.5, 0.14644660940672627};
  for (int k = 0; k < 6; ++k) EXPECT_NEAR(LearningRateAt(o, k, 6), want[k], 1e-15) << k;
  // With a floor of 0.1: 0.1 + 0.9 * cosine part.
  const auto f = Opts(LrSchedule::kCosine, 0, 0.1);
  EXPECT_DOUBLE_EQ(LearningRateAt(f, 0, 4), 1.0);
  EXPECT_NEAR(LearningRateAt(f, 2, 4), 0.1 + 0.9 * 0.5, 1e-15);
  EXPECT_NEAR(LearningRateAt(f, 3, 4), 0.1 + 0.9 * 0.14644660940672627, 1e-15);
}

TEST(LrScheduleTest, ScalesWithPeakAndNeverZero) {
  auto o = Opts(LrSchedule::kLinear, 0);
  o.learning_rate = 3e-4;
  EXPECT_DOUBLE_EQ(LearningRateAt(o, 0, 10), 3e-4);
  EXPECT_DOUBLE_EQ(LearningRateAt(o, 9, 10), 3e-5);
  EXPECT_GT(LearningRateAt(o, 9, 10), 0);
  // Warmup longer than the run still ramps.
  auto w = Opts(LrSchedule::kCosine, 10);
  EXPECT_DOUBLE_EQ(LearningRateAt(w, 0, 5), 0.1);
}

}  // namespace
}  // namespace oft
