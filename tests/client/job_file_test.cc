#include "client/job_file.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft {
namespace {

using ::testing::HasSubstr;

constexpr char kYaml[] = R"(# a job
base_model: default
training_dataset_ids: [ds-a, ds-b]
validation_fraction: 0.1
output_adapter_name: support-bot
priority: -5
hyperparameters:
  learning_rate: 2e-4
  schedule: cosine
  max_steps: 200
  batch_size: 4
  seed: 7
  pack: true
adapter_config:
  oft_block_size: 16
  bias: none
  target_modules:
    - q_proj
    - v_proj
)";

TEST(JobFileTest, ParsesYaml) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(kYaml, "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->base_model(), "default");
  ASSERT_EQ(spec->training_dataset_ids_size(), 2);
  EXPECT_EQ(spec->training_dataset_ids(1), "ds-b");
  EXPECT_EQ(spec->validation_case(), v1::JobSpec::kValidationFraction);
  EXPECT_DOUBLE_EQ(spec->validation_fraction(), 0.1);
  EXPECT_EQ(spec->output_adapter_name(), "support-bot");
  EXPECT_EQ(spec->priority(), -5);
  const auto& h = spec->hyperparameters();
  EXPECT_TRUE(h.has_learning_rate());
  EXPECT_DOUBLE_EQ(h.learning_rate(), 2e-4);
  EXPECT_EQ(h.schedule(), v1::Hyperparameters::COSINE);
  EXPECT_EQ(h.length_case(), v1::Hyperparameters::kMaxSteps);
  EXPECT_EQ(h.max_steps(), 200);
  EXPECT_EQ(h.batch_size(), 4);
  EXPECT_EQ(h.seed(), 7u);
  EXPECT_TRUE(h.pack());
  EXPECT_FALSE(h.has_weight_decay());  // unset stays unset (server default applies)
  const auto& a = spec->adapter_config();
  EXPECT_EQ(a.oft_block_size(), 16);
  EXPECT_FALSE(a.has_r());
  EXPECT_EQ(a.bias(), v1::AdapterConfig::BIAS_NONE);
  ASSERT_EQ(a.target_modules_size(), 2);
  EXPECT_EQ(a.target_modules(0), "q_proj");
}

TEST(JobFileTest, ParsesProto3JsonWithCamelCaseAndQuotedInt64) {
  constexpr char kJson[] = R"({
  "baseModel": "default",
  "trainingDatasetIds": ["ds-a"],
  "validationDatasetId": "ds-v",
  "outputAdapterName": "bot",
  "hyperparameters": {"learningRate": 0.001, "epochs": "3", "schedule": "CONSTANT",
                      "evalEvery": 10, "selectBest": true, "warmupSteps": null},
  "adapterConfig": {"r": "4", "oftBlockSize": 0, "bias": "BIAS_OFT_ONLY",
                    "layersToTransform": [0, 2]}
})";
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(kJson, "job.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->base_model(), "default");
  EXPECT_EQ(spec->validation_dataset_id(), "ds-v");
  EXPECT_EQ(spec->hyperparameters().epochs(), 3);
  EXPECT_EQ(spec->hyperparameters().schedule(), v1::Hyperparameters::CONSTANT);
  EXPECT_EQ(spec->hyperparameters().eval_every(), 10);
  EXPECT_TRUE(spec->hyperparameters().select_best());
  EXPECT_FALSE(spec->hyperparameters().has_warmup_steps());
  EXPECT_EQ(spec->adapter_config().r(), 4);
  EXPECT_TRUE(spec->adapter_config().has_oft_block_size());
  EXPECT_EQ(spec->adapter_config().oft_block_size(), 0);
  EXPECT_EQ(spec->adapter_config().bias(), v1::AdapterConfig::BIAS_OFT_ONLY);
  EXPECT_THAT(spec->adapter_config().layers_to_transform(), ::testing::ElementsAre(0, 2));
}

TEST(JobFileTest, UnknownKeyNamesKeyLineAndMessage) {
  constexpr char kBad[] = "base_model: default\nhyperparameters:\n  batch_size: 4\n"
                          "  learning_rat: 0.1\n";
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(kBad, "job.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("job.yaml:4:"));
  EXPECT_THAT(spec.status().message(), HasSubstr("\"learning_rat\""));
  EXPECT_THAT(spec.status().message(), HasSubstr("in hyperparameters"));
  EXPECT_THAT(spec.status().message(), HasSubstr("learning_rate"));  // lists known keys
}

TEST(JobFileTest, UnknownTopLevelKeyInJsonHasLine) {
  absl::StatusOr<v1::JobSpec> spec =
      ParseJobSpec("{\n  \"base_model\": \"x\",\n  \"bogus\": 1\n}\n", "job.json");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("job.json:3:"));
  EXPECT_THAT(spec.status().message(), HasSubstr("\"bogus\" in JobSpec"));
}

TEST(JobFileTest, BadValuesNameFieldAndLine) {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {"hyperparameters:\n  max_steps: lots\n", "job.yaml:2: hyperparameters.max_steps: expected an integer"},
      {"hyperparameters:\n  schedule: wavy\n", "job.yaml:2: hyperparameters.schedule: expected one of"},
      {"priority: 1.5\n", "job.yaml:1: priority: expected a 32-bit integer"},
      {"hyperparameters:\n  pack: maybe\n", "expected true or false"},
      {"hyperparameters: 3\n", "job.yaml:1: hyperparameters: expected a mapping"},
      {"base_model: [a, b]\n", "base_model: expected a single value"},
      {"base_model: a\nbase_model: b\n", "job.yaml:2: duplicate key"},
      {"hyperparameters:\n  max_steps: 10\n  epochs: 2\n",
       "job.yaml:3: \"max_steps\" and \"epochs\" are both set"},
      {"base_model: [unclosed\n", "job.yaml:"},
      {"", "is empty"},
      {"- a\n- b\n", "expected a mapping of JobSpec fields"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(c.text, "job.yaml");
    ASSERT_FALSE(spec.ok()) << c.text;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(spec.status().message(), HasSubstr(c.want)) << c.text;
  }
}

TEST(JobFileTest, FlagsOverrideFile) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(kYaml, "job.yaml");
  ASSERT_TRUE(spec.ok());
  ASSERT_TRUE(ApplyJobSpecFlags({{"learning-rate", "5e-5"},
                                 {"dataset", "ds-x"},
                                 {"dataset", "ds-y,ds-z"},
                                 {"epochs", "2"},
                                 {"validation-dataset", "ds-v"},
                                 {"r", "8"},
                                 {"target-modules", "all-linear"},
                                 {"schedule", "linear"},
                                 {"set", "hyperparameters.pack=false"},
                                 {"output-adapter", "other"}},
                                &*spec)
                  .ok());
  EXPECT_DOUBLE_EQ(spec->hyperparameters().learning_rate(), 5e-5);
  EXPECT_THAT(spec->training_dataset_ids(), ::testing::ElementsAre("ds-x", "ds-y", "ds-z"));
  // oneofs: the flag's member replaces the file's.
  EXPECT_EQ(spec->hyperparameters().length_case(), v1::Hyperparameters::kEpochs);
  EXPECT_EQ(spec->hyperparameters().epochs(), 2);
  EXPECT_EQ(spec->validation_case(), v1::JobSpec::kValidationDatasetId);
  // --r without --oft-block-size zeroes the file's block size.
  EXPECT_EQ(spec->adapter_config().r(), 8);
  EXPECT_EQ(spec->adapter_config().oft_block_size(), 0);
  EXPECT_THAT(spec->adapter_config().target_modules(), ::testing::ElementsAre("all-linear"));
  EXPECT_EQ(spec->hyperparameters().schedule(), v1::Hyperparameters::LINEAR);
  EXPECT_FALSE(spec->hyperparameters().pack());
  EXPECT_EQ(spec->output_adapter_name(), "other");
  // Untouched fields keep the file's values.
  EXPECT_EQ(spec->hyperparameters().batch_size(), 4);
  EXPECT_EQ(spec->base_model(), "default");
}

TEST(JobFileTest, BlockSizeFlagZeroesR) {
  v1::JobSpec spec;
  spec.mutable_adapter_config()->set_r(4);
  ASSERT_TRUE(ApplyJobSpecFlags({{"oft-block-size", "32"}}, &spec).ok());
  EXPECT_EQ(spec.adapter_config().oft_block_size(), 32);
  EXPECT_EQ(spec.adapter_config().r(), 0);
}

TEST(JobFileTest, MaxStepsAndEpochsOnOneCommandLineAreRefused) {
  v1::JobSpec spec;
  absl::Status s = ApplyJobSpecFlags({{"max-steps", "60"}, {"epochs", "2"}}, &spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--max-steps and --epochs exclude each other"));
  s = ApplyJobSpecFlags({{"epochs", "2"}, {"set", "hyperparameters.max_steps=60"}}, &spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--set=hyperparameters.max_steps and --epochs"));
  // One of them replaces the file's choice (FlagsOverrideFile).
  spec.mutable_hyperparameters()->set_epochs(3);
  ASSERT_TRUE(ApplyJobSpecFlags({{"max-steps", "60"}}, &spec).ok());
  EXPECT_EQ(spec.hyperparameters().max_steps(), 60);
  EXPECT_FALSE(spec.hyperparameters().has_epochs());
}

TEST(JobFileTest, BadFlagsNameTheFlag) {
  v1::JobSpec spec;
  absl::Status s = ApplyJobSpecFlags({{"max-steps", "ten"}}, &spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--max-steps"));
  EXPECT_THAT(s.message(), HasSubstr("\"ten\""));
  s = ApplyJobSpecFlags({{"set", "hyperparameters.nope=1"}}, &spec);
  EXPECT_THAT(s.message(), HasSubstr("unknown field \"nope\" in hyperparameters"));
  s = ApplyJobSpecFlags({{"set", "no-equals"}}, &spec);
  EXPECT_THAT(s.message(), HasSubstr("PATH=VALUE"));
  s = ApplyJobSpecFlags({{"bogus", "1"}}, &spec);
  EXPECT_THAT(s.message(), HasSubstr("--bogus"));
  EXPECT_TRUE(IsJobSpecFlag("learning-rate"));
  EXPECT_TRUE(IsJobSpecFlag("dataset"));
  EXPECT_FALSE(IsJobSpecFlag("server"));
}

TEST(JobFileTest, LoadsFilesAndChatPrompts) {
  const std::string dir = ::testing::TempDir();
  const std::string job = dir + "/h1_job.json";
  std::ofstream(job) << R"({"base_model": "default", "training_dataset_ids": ["ds-1"]})";
  absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(job);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->training_dataset_ids(0), "ds-1");
  EXPECT_EQ(LoadJobSpecFile(dir + "/h1_missing.yaml").status().code(),
            absl::StatusCode::kNotFound);

  const std::string chat = dir + "/h1_chat.yaml";
  std::ofstream(chat) << "- role: system\n  content: be brief\n- role: user\n  content: hi\n";
  absl::StatusOr<v1::ChatPrompt> prompt = LoadChatPromptFile(chat);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  ASSERT_EQ(prompt->messages_size(), 2);
  EXPECT_EQ(prompt->messages(1).content(), "hi");
  std::ofstream(chat) << R"({"messages": [{"role": "user", "content": "yo", "x": 1}]})";
  EXPECT_THAT(LoadChatPromptFile(chat).status().message(), HasSubstr("\"x\""));
  std::remove(job.c_str());
  std::remove(chat.c_str());
}

}  // namespace
}  // namespace oft
