// The OpenAI files / fine-tuning wire format against oft.v1 (no server).
#include "server/http/openai_fine_tuning_types.h"

#include <gtest/gtest.h>

#include <string>

#include "server/http/json_fields.h"
#include "server/http/openai_types.h"

namespace oft {
namespace {

using json = nlohmann::json;

std::string ParamOf(const absl::Status& s) {
  const json body = ErrorBody(s);
  return body["error"]["param"].is_null() ? "<null>" : body["error"]["param"].get<std::string>();
}

TEST(FineTuningCreate, MapsOpenAiFieldsOntoTheJobSpec) {
  auto r = ParseFineTuningJobCreate(R"({"model": "default", "training_file": "ds-1",
      "validation_file": "ds-2", "suffix": "bot", "seed": 7,
      "hyperparameters": {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 2}})");
  ASSERT_TRUE(r.ok()) << r.status();
  const oft::v1::JobSpec& s = r->spec();
  EXPECT_EQ(s.base_model(), "default");
  ASSERT_EQ(s.training_dataset_ids_size(), 1);
  EXPECT_EQ(s.training_dataset_ids(0), "ds-1");
  EXPECT_EQ(s.validation_dataset_id(), "ds-2");
  EXPECT_EQ(s.output_adapter_name(), "bot");
  EXPECT_EQ(s.hyperparameters().seed(), 7u);
  EXPECT_EQ(s.hyperparameters().epochs(), 3);
  EXPECT_FALSE(s.hyperparameters().has_batch_size());  // "auto": the server's default
  EXPECT_DOUBLE_EQ(s.hyperparameters().learning_rate(), 2e-4);  // 2 x the default 1e-4
}

TEST(FineTuningCreate, OftMethodCarriesHyperparametersAndAdapterConfig) {
  auto r = ParseFineTuningJobCreate(R"({"model": "m", "training_file": "f", "seed": 5,
      "method": {"type": "oft", "oft": {
        "hyperparameters": {"max_steps": 9, "batch_size": 2, "checkpoint_every": 3},
        "adapter_config": {"oft_block_size": 16, "target_modules": ["q_proj"]}}}})");
  ASSERT_TRUE(r.ok()) << r.status();
  const oft::v1::JobSpec& s = r->spec();
  EXPECT_EQ(s.output_adapter_name(), "m-ft");
  EXPECT_EQ(s.hyperparameters().max_steps(), 9);
  EXPECT_EQ(s.hyperparameters().batch_size(), 2);
  EXPECT_EQ(s.hyperparameters().checkpoint_every(), 3);
  EXPECT_EQ(s.hyperparameters().seed(), 5u);  // set before the method: merged, not replaced
  EXPECT_EQ(s.adapter_config().oft_block_size(), 16);
  ASSERT_EQ(s.adapter_config().target_modules_size(), 1);
}

TEST(FineTuningCreate, BadInputNamesTheField) {
  struct Case {
    const char* body;
    const char* param;
  } cases[] = {
      {R"({"training_file": "f"})", "model"},
      {R"({"model": "m"})", "training_file"},
      {R"({"model": "m", "training_file": "f", "suffix": "a/b"})", "suffix"},
      {R"({"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": 0}})", "hyperparameters.n_epochs"},
      {R"({"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": "many"}})", "hyperparameters.n_epochs"},
      {R"({"model": "m", "training_file": "f", "hyperparameters": {"max_steps": 3}})", "hyperparameters.max_steps"},
      {R"({"model": "m", "training_file": "f", "method": {"type": "dpo"}})", "method.type"},
      {R"({"model": "m", "training_file": "f", "method": {"type": "oft", "oft": {"adapter_config": {"nope": 1}}}})",
       "method.oft.adapter_config"},
      {R"({"model": "m", "training_file": "f", "tools": []})", "tools"},
      {R"({"model": "m", "training_file": "f", "integrations": [{"type": "wandb"}]})", "integrations"},
      {R"({"model": 3, "training_file": "f"})", "model"},
      {R"({"model": "m", "training_file": "f", "seed": -1})", "seed"},
  };
  for (const Case& c : cases) {
    auto r = ParseFineTuningJobCreate(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(ParamOf(r.status()), c.param) << c.body << " -> " << r.status();
  }
  EXPECT_FALSE(ParseFineTuningJobCreate("{nope").ok());
  EXPECT_FALSE(ParseFineTuningJobCreate("[1]").ok());
}

TEST(FineTuningCreate, JobSpecErrorsAreRenamedToRequestFields) {
  EXPECT_EQ(ToFineTuningError(absl::NotFoundError("spec.training_dataset_ids[0]: no dataset 'x'")).message(),
            "training_file: no dataset 'x'");
  EXPECT_EQ(ToFineTuningError(absl::InvalidArgumentError("spec.hyperparameters.epochs must be in [1, 1000]"))
                .message(),
            "hyperparameters.n_epochs must be in [1, 1000]");
  EXPECT_EQ(ToFineTuningError(absl::InvalidArgumentError("spec.hyperparameters.max_seq_len must be")).message(),
            "method.oft.hyperparameters.max_seq_len must be");
  EXPECT_EQ(ToFineTuningError(absl::NotFoundError("spec.base_model \"x\" is not served")).message(),
            "model \"x\" is not served");
  // Not a prefix of a longer field name.
  EXPECT_EQ(ToFineTuningError(absl::InvalidArgumentError("spec.hyperparameters.epochsx bad")).message(),
            "method.oft.hyperparameters.epochsx bad");
  EXPECT_EQ(ToFineTuningError(absl::InternalError("disk")).message(), "disk");
}

TEST(FineTuningObjects, JobEventAndCheckpoint) {
  oft::v1::Job job;
  job.set_id("job-abc");
  job.set_state(oft::v1::Job::SUCCEEDED);
  job.mutable_spec()->set_base_model("default");
  job.mutable_spec()->add_training_dataset_ids("ds-1");
  job.mutable_spec()->set_output_adapter_name("bot");
  job.mutable_spec()->mutable_hyperparameters()->set_learning_rate(3e-4);
  job.mutable_result()->set_name("bot");
  job.mutable_result()->set_version(2);
  job.mutable_create_time()->set_seconds(100);
  const json j = FineTuningJobObject(job);
  EXPECT_EQ(j["status"], "succeeded");
  EXPECT_EQ(j["fine_tuned_model"], "bot:2");
  EXPECT_EQ(j["created_at"], 100);
  EXPECT_NEAR(j["hyperparameters"]["learning_rate_multiplier"].get<double>(), 3.0, 1e-9);
  EXPECT_EQ(j["hyperparameters"]["n_epochs"], "auto");
  EXPECT_TRUE(j["error"].is_null());

  job.set_state(oft::v1::Job::FAILED);
  job.mutable_failure()->set_reason(oft::v1::JobFailure::DATASET_INVALID);
  job.mutable_failure()->set_message("line 3: bad");
  const json f = FineTuningJobObject(job);
  EXPECT_EQ(f["status"], "failed");
  EXPECT_TRUE(f["fine_tuned_model"].is_null());
  EXPECT_EQ(f["error"]["code"], "DATASET_INVALID");

  oft::v1::JobEvent e;
  e.set_job_id("job-abc");
  e.set_event_id(12);
  e.mutable_step()->mutable_progress()->set_step(4);
  e.mutable_step()->mutable_metrics()->set_loss(1.5);
  const json ev = FineTuningEventObject(e);
  EXPECT_EQ(ev["type"], "metrics");
  EXPECT_EQ(ev["data"]["train_loss"], 1.5);
  auto cursor = ParseEventCursor(ev["id"]);
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  EXPECT_EQ(*cursor, 12);
  EXPECT_FALSE(ParseEventCursor("ftevent-abc-x").ok());
  EXPECT_FALSE(ParseEventCursor("12").ok());

  oft::v1::JobEvent saved;
  saved.mutable_checkpoint_saved()->set_step(4);
  const json ck = CheckpointObject(job, saved, 1.5);
  EXPECT_EQ(ck["step_number"], 4);
  EXPECT_EQ(ck["metrics"]["train_loss"], 1.5);
  EXPECT_EQ(ck["fine_tuning_job_id"], "job-abc");
}

TEST(JsonFields, ParamOfMessage) {
  EXPECT_EQ(ParamOfMessage("temperature must be in [0, 2], got 3"), "temperature");
  EXPECT_EQ(ParamOfMessage("messages[2].role must be a string"), "messages[2].role");
  EXPECT_EQ(ParamOfMessage("training_file: no dataset"), "training_file");
  EXPECT_EQ(ParamOfMessage("Server is busy"), "");
  EXPECT_EQ(ParamOfMessage("\"quoted\" thing"), "");
  EXPECT_EQ(ParamOfMessage("word"), "");
}

}  // namespace
}  // namespace oft
