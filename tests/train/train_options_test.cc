#include "server/train/train_options.h"

#include <functional>
#include <string>

#include "gtest/gtest.h"

namespace oft {
namespace {

TEST(TrainOptionsTest, DefaultsAreValid) { EXPECT_TRUE(TrainOptions().Validate().ok()); }

struct BadCase {
  std::function<void(TrainOptions&)> edit;
  std::string message;
};

TEST(TrainOptionsTest, EachBadFieldNamesItself) {
  const BadCase cases[] = {
      {[](auto& o) { o.learning_rate = -3; }, "learning_rate must be in (0, 1], got -3"},
      {[](auto& o) { o.learning_rate = 0; }, "learning_rate must be in (0, 1], got 0"},
      {[](auto& o) { o.learning_rate = 2; }, "learning_rate must be in (0, 1], got 2"},
      {[](auto& o) { o.beta1 = 1; }, "beta1 must be in [0, 1), got 1"},
      {[](auto& o) { o.beta2 = -0.5; }, "beta2 must be in [0, 1), got -0.5"},
      {[](auto& o) { o.adam_eps = 0; }, "adam_eps must be in (0, 0.01], got 0"},
      {[](auto& o) { o.weight_decay = 1.5; }, "weight_decay must be in [0, 1], got 1.5"},
      {[](auto& o) { o.warmup_steps = -1; }, "warmup_steps must be in [0, inf), got -1"},
      {[](auto& o) { o.min_lr_ratio = 2; }, "min_lr_ratio must be in [0, 1], got 2"},
      {[](auto& o) { o.grad_accum_steps = 0; }, "grad_accum_steps must be in [1, 1024], got 0"},
      {[](auto& o) { o.max_grad_norm = -1; }, "max_grad_norm must be in [0, inf) (0 = off), got -1"},
      {[](auto& o) { o.batch_size = 0; }, "batch_size must be in [1, 4096], got 0"},
      {[](auto& o) { o.max_seq_len = 1; }, "max_seq_len must be in [2, 1048576], got 1"},
      {[](auto& o) { o.max_steps = -2; }, "max_steps must be in [0, inf), got -2"},
      {[](auto& o) { o.epochs = -1; }, "epochs must be in [0, 100000], got -1"},
      {[](auto& o) { o.max_steps = 10; },
       "set exactly one of max_steps and epochs (the other 0), got max_steps=10, epochs=1"},
      {[](auto& o) { o.epochs = 0; },
       "set exactly one of max_steps and epochs (the other 0), got max_steps=0, epochs=0"},
      {[](auto& o) { o.eval_every = -1; }, "eval_every must be in [0, inf) (0 = off), got -1"},
      {[](auto& o) { o.eval_fraction = 0.9; }, "eval_fraction must be in [0, 0.5], got 0.9"},
      {[](auto& o) { o.early_stopping_patience = -1; },
       "early_stopping_patience must be in [0, inf) (0 = off), got -1"},
      {[](auto& o) { o.early_stopping_patience = 2; }, "early_stopping_patience needs eval_every > 0"},
      {[](auto& o) { o.select_best = true; }, "select_best needs eval_every > 0"},
      {[](auto& o) { o.checkpoint_every = -1; }, "checkpoint_every must be in [0, inf) (0 = off), got -1"},
      {[](auto& o) { o.keep_checkpoints = -1; }, "keep_checkpoints must be in [0, inf) (0 = all), got -1"},
  };
  for (const auto& c : cases) {
    TrainOptions o;
    c.edit(o);
    absl::Status st = o.Validate();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(st.message(), c.message);
  }
}

TEST(TrainOptionsTest, NanIsRejected) {
  TrainOptions o;
  o.learning_rate = std::nan("");
  EXPECT_FALSE(o.Validate().ok());
}

TEST(TrainOptionsTest, JsonRoundTripIsExact) {
  TrainOptions o;
  o.learning_rate = 0.1 + 0.2;  // not exactly representable in short decimal
  o.beta1 = 0.85;
  o.schedule = LrSchedule::kCosine;
  o.warmup_steps = 7;
  o.min_lr_ratio = 0.1;
  o.pack = true;
  o.max_steps = 123;
  o.epochs = 0;
  o.seed = 18446744073709551557ULL;
  o.select_best = true;
  o.eval_every = 5;
  o.bf16_autocast = false;
  auto back = TrainOptionsFromJson(TrainOptionsToJson(o));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(TrainOptionsToJson(*back), TrainOptionsToJson(o));
  EXPECT_EQ(back->learning_rate, o.learning_rate);
  EXPECT_EQ(back->seed, o.seed);
  EXPECT_EQ(back->schedule, LrSchedule::kCosine);
  EXPECT_TRUE(back->pack);
}

TEST(TrainOptionsTest, JsonErrorsNameTheKey) {
  auto a = TrainOptionsFromJson(R"({"learning_rat": 0.1})");
  EXPECT_EQ(a.status().message(), "unknown train option \"learning_rat\"");
  auto b = TrainOptionsFromJson(R"({"batch_size": "eight"})");
  EXPECT_EQ(b.status().message(), "batch_size must be an integer");
  auto c = TrainOptionsFromJson(R"({"schedule": "step"})");
  EXPECT_EQ(c.status().message(), "schedule must be one of constant, linear, cosine, got \"step\"");
  auto d = TrainOptionsFromJson(R"({"max_steps": 5, "epochs": 0})");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->max_steps, 5);
  EXPECT_EQ(d->batch_size, TrainOptions().batch_size);  // missing keys keep defaults
  EXPECT_FALSE(TrainOptionsFromJson("[1]").ok());
}

}  // namespace
}  // namespace oft
