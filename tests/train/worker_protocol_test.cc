// What crosses the process boundary to a training worker: a TrainingJob as JSON and the
// worker's TrainEvent lines, each round-tripped field by field.
#include <gtest/gtest.h>

#include <string>

#include "server/train/train_events.h"
#include "server/train/training_job_json.h"

namespace oft {
namespace {

TEST(TrainingJobJson, EveryFieldRoundTrips) {
  TrainingJob j;
  j.job_id = "job-1";
  j.tenant = "t";
  j.base_model_name = "default";
  j.model_dir = "/m";
  j.device = "cuda:1";
  j.device_memory_bytes = 123;
  j.train_threads = 3;
  j.train_paths = {"/a.jsonl", "/b.jsonl"};
  j.valid_path = "/v.jsonl";
  j.validation_fraction = 0.25;
  j.adapter.r = 4;
  j.adapter.oft_block_size = 0;
  j.adapter.use_cayley_neumann = false;
  j.adapter.num_cayley_neumann_terms = 7;
  j.adapter.block_share = true;
  j.adapter.coft = true;
  j.adapter.eps = 1e-3;
  j.adapter.module_dropout = 0.1;
  j.adapter.bias = OftBias::kNone;
  j.adapter.init_weights = false;
  j.targets.target_modules = {"q_proj", "o_proj"};
  j.targets.target_regex = ".*proj";
  j.targets.exclude_modules = {"lm_head"};
  j.targets.layers_to_transform = {0, 2};
  j.targets.layers_pattern = "layers";
  j.quantize_base_nf4 = true;
  j.chat_template = "chatml";
  j.options.max_steps = 17;
  j.options.epochs = 0;
  j.options.learning_rate = 0.003;
  j.options.seed = 99;
  j.work_dir = "/w";
  j.output_adapter_name = "bot";
  j.hyperparameters_json = R"({"x":1})";
  absl::StatusOr<TrainingJob> back = TrainingJobFromJson(TrainingJobToJson(j));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(TrainingJobToJson(*back), TrainingJobToJson(j));
  EXPECT_EQ(back->device, "cuda:1");
  EXPECT_EQ(back->train_paths, j.train_paths);
  EXPECT_EQ(back->adapter.num_cayley_neumann_terms, 7);
  EXPECT_FALSE(back->adapter.init_weights);
  EXPECT_EQ(back->targets.target_regex, ".*proj");
  EXPECT_FALSE(back->targets.exclude_regex.has_value());
  EXPECT_EQ(back->targets.layers_to_transform, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(back->options.max_steps, 17);
  EXPECT_EQ(back->options.seed, 99u);
  EXPECT_EQ(back->chat_template, "chatml");
}

TEST(TrainingJobJson, MissingOrMistypedFieldsAreNamed) {
  TrainingJob j;
  j.job_id = "job-1";
  std::string text = TrainingJobToJson(j);
  auto missing = TrainingJobFromJson(std::string(text).replace(text.find("\"work_dir\""), 10, "\"work_dix\""));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("work_dir is missing"), std::string::npos) << missing.status();
  auto typed = TrainingJobFromJson(std::string(text).replace(text.find("\"train_threads\":1"), 17,
                                                             "\"train_threads\":\"x\""));
  ASSERT_FALSE(typed.ok());
  EXPECT_NE(typed.status().message().find("train_threads"), std::string::npos) << typed.status();
  EXPECT_FALSE(TrainingJobFromJson("[]").ok());
}

TEST(TrainEventJson, RoundTripsIncludingTheWarningCode) {
  TrainEvent e;
  e.kind = TrainEvent::Kind::kWarning;
  e.step = 5;
  e.total_steps = 9;
  e.loss = 1.25;
  e.message = "resumed";
  e.warning = WarningCode::kResumedFromCheckpoint;
  absl::StatusOr<TrainEvent> back = TrainEventFromJson(TrainEventToJson(e));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, TrainEvent::Kind::kWarning);
  EXPECT_EQ(back->warning, WarningCode::kResumedFromCheckpoint);
  EXPECT_EQ(back->step, 5);
  EXPECT_EQ(back->message, "resumed");
  EXPECT_EQ(TrainEventToJson(*back), TrainEventToJson(e));
  EXPECT_FALSE(TrainEventFromJson(R"({"kind":"nope"})").ok());
  EXPECT_FALSE(TrainEventFromJson(R"({"kind":"step","step":"x"})").ok());
  EXPECT_FALSE(TrainEventFromJson(R"({"kind":"warning","warning":99})").ok());
}

}  // namespace
}  // namespace oft
