// ResolveJobSpec: defaults filled, every rejected field named; JSON round trip; the Job and
// JobEvent views of stored records.
#include "server/service/job_spec.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/jobs/job_event_proto.h"

namespace oft {
namespace {

using ::testing::HasSubstr;

class JobSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto catalog = ModelCatalog::Create({{"default", std::string(OFT_SOURCE_DIR) + "/models/default"}});
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    catalog_ = std::move(*catalog);
  }
  oft::v1::JobSpec Minimal() const {
    oft::v1::JobSpec spec;
    spec.set_base_model("default");
    spec.add_training_dataset_ids("ds-1");
    spec.set_output_adapter_name("bot");
    return spec;
  }
  absl::Status Reject(const oft::v1::JobSpec& spec) const {
    return ResolveJobSpec(spec, catalog_).status();
  }
  ModelCatalog catalog_;
};

TEST_F(JobSpecTest, FillsEveryDefault) {
  absl::StatusOr<ResolvedJob> r = ResolveJobSpec(Minimal(), catalog_);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& h = r->spec.hyperparameters();
  EXPECT_DOUBLE_EQ(h.learning_rate(), 1e-4);
  EXPECT_EQ(h.schedule(), oft::v1::Hyperparameters::LINEAR);
  EXPECT_EQ(h.epochs(), 1);
  EXPECT_EQ(h.max_seq_len(), 512);  // lowered to the default model's context
  EXPECT_EQ(h.batch_size(), 8);
  EXPECT_TRUE(h.has_seed());
  EXPECT_EQ(r->spec.num_devices(), 1);
  const auto& a = r->spec.adapter_config();
  EXPECT_EQ(a.oft_block_size(), 32);
  EXPECT_EQ(a.r(), 0);
  EXPECT_TRUE(a.use_cayley_neumann());
  EXPECT_EQ(a.num_cayley_neumann_terms(), 5);
  EXPECT_THAT(std::vector<std::string>(a.target_modules().begin(), a.target_modules().end()),
              ::testing::ElementsAre("q_proj", "v_proj"));
  EXPECT_EQ(r->options.max_seq_len, 512);
  EXPECT_EQ(r->options.epochs, 1);
  EXPECT_EQ(r->options.max_steps, 0);
  EXPECT_EQ(r->adapter.oft_block_size, 32);
  // Resolving the filled spec again changes nothing (the executor relies on it).
  absl::StatusOr<ResolvedJob> again = ResolveJobSpec(r->spec, catalog_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*JobSpecToJson(again->spec), *JobSpecToJson(r->spec));
}

TEST_F(JobSpecTest, RSelectsBlockCountAndZeroesBlockSize) {
  oft::v1::JobSpec spec = Minimal();
  spec.mutable_adapter_config()->set_r(8);
  absl::StatusOr<ResolvedJob> r = ResolveJobSpec(spec, catalog_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->adapter.r, 8);
  EXPECT_EQ(r->adapter.oft_block_size, 0);
}

TEST_F(JobSpecTest, RejectsEachBadFieldByName) {
  struct Case {
    std::function<void(oft::v1::JobSpec&)> mutate;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& s) { s.clear_base_model(); }, absl::StatusCode::kInvalidArgument, "spec.base_model is required"},
      {[](auto& s) { s.set_base_model("gpt-9"); }, absl::StatusCode::kFailedPrecondition, "unknown base model 'gpt-9'"},
      {[](auto& s) { s.clear_training_dataset_ids(); }, absl::StatusCode::kInvalidArgument, "spec.training_dataset_ids"},
      {[](auto& s) { s.set_training_dataset_ids(0, "../etc"); }, absl::StatusCode::kInvalidArgument, "spec.training_dataset_ids[0]"},
      {[](auto& s) { s.set_output_adapter_name("a/b"); }, absl::StatusCode::kInvalidArgument, "spec.output_adapter_name"},
      {[](auto& s) { s.set_priority(101); }, absl::StatusCode::kInvalidArgument, "spec.priority must be in [-100, 100]"},
      {[](auto& s) { s.set_num_devices(-1); }, absl::StatusCode::kInvalidArgument,
       "spec.num_devices must be in [1, 64], got -1"},
      {[](auto& s) { s.set_num_devices(65); }, absl::StatusCode::kInvalidArgument, "spec.num_devices"},
      {[](auto& s) { s.set_validation_fraction(0.9); }, absl::StatusCode::kInvalidArgument, "spec.validation_fraction"},
      {[](auto& s) { s.mutable_hyperparameters()->set_learning_rate(-3); }, absl::StatusCode::kInvalidArgument,
       "spec.hyperparameters.learning_rate must be in (0, 1], got -3"},
      {[](auto& s) { s.mutable_hyperparameters()->set_batch_size(0); }, absl::StatusCode::kInvalidArgument,
       "spec.hyperparameters.batch_size"},
      {[](auto& s) { s.mutable_hyperparameters()->set_max_seq_len(100000); }, absl::StatusCode::kInvalidArgument,
       "spec.hyperparameters.max_seq_len must be in [2, 512]"},
      {[](auto& s) { s.mutable_hyperparameters()->set_max_steps(0); }, absl::StatusCode::kInvalidArgument,
       "spec.hyperparameters.max_steps"},
      {[](auto& s) { s.mutable_hyperparameters()->set_eval_every(10); }, absl::StatusCode::kInvalidArgument,
       "spec.hyperparameters.eval_every needs validation data"},
      {[](auto& s) {
         s.set_validation_fraction(0.1);
         s.mutable_hyperparameters()->set_select_best(true);
       },
       absl::StatusCode::kInvalidArgument, "spec.hyperparameters.select_best needs eval_every"},
      {[](auto& s) {
         s.mutable_adapter_config()->set_r(4);
         s.mutable_adapter_config()->set_oft_block_size(16);
       },
       absl::StatusCode::kInvalidArgument, "spec.adapter_config: exactly one of r and oft_block_size"},
      {[](auto& s) { s.mutable_adapter_config()->set_num_cayley_neumann_terms(0); }, absl::StatusCode::kInvalidArgument,
       "spec.adapter_config.num_cayley_neumann_terms"},
      {[](auto& s) { s.mutable_adapter_config()->set_module_dropout(1.0); }, absl::StatusCode::kInvalidArgument,
       "spec.adapter_config.module_dropout"},
      {[](auto& s) { s.mutable_adapter_config()->set_bias(oft::v1::AdapterConfig::BIAS_ALL); },
       absl::StatusCode::kInvalidArgument, "spec.adapter_config.bias"},
      {[](auto& s) { s.mutable_adapter_config()->add_layers_to_transform(6); }, absl::StatusCode::kInvalidArgument,
       "spec.adapter_config.layers_to_transform[0] must be in [0, 5]"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    oft::v1::JobSpec spec = Minimal();
    cases[i].mutate(spec);
    absl::Status st = Reject(spec);
    EXPECT_EQ(st.code(), cases[i].code) << "case " << i << ": " << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(cases[i].message)) << "case " << i;
  }
}

TEST_F(JobSpecTest, JsonRoundTripIsCanonical) {
  absl::StatusOr<ResolvedJob> r = ResolveJobSpec(Minimal(), catalog_);
  ASSERT_TRUE(r.ok());
  const std::string json = *JobSpecToJson(r->spec);
  EXPECT_THAT(json, HasSubstr("\"output_adapter_name\":\"bot\""));
  absl::StatusOr<oft::v1::JobSpec> back = JobSpecFromJson(json);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*JobSpecToJson(*back), json);
  EXPECT_EQ(JobSpecFromJson("{not json").status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(JobSpecTest, JobAndEventViews) {
  JobRecord rec;
  rec.id = "job-1";
  rec.spec_json = *JobSpecToJson(Minimal());
  rec.state = JobState::kQueued;
  rec.queue_position = 3;
  rec.created_at = absl::FromUnixSeconds(1700000000);
  oft::v1::Job job = *JobToProto(rec, 1, 1);
  EXPECT_EQ(job.state(), oft::v1::Job::QUEUED);
  EXPECT_EQ(job.queue_position(), 3);
  EXPECT_EQ(job.queue_reason(), "2 jobs ahead; 1 of 1 device busy");
  EXPECT_EQ(job.eta_seconds(), -1);
  EXPECT_EQ(job.spec().output_adapter_name(), "bot");
  EXPECT_EQ(job.create_time().seconds(), 1700000000);

  rec.state = JobState::kFailed;
  rec.failure = {"OUT_OF_MEMORY", "too big", "hyperparameters.batch_size"};
  job = *JobToProto(rec, 0, 1);
  EXPECT_EQ(job.failure().reason(), oft::v1::JobFailure::OUT_OF_MEMORY);
  EXPECT_EQ(job.failure().field(), "hyperparameters.batch_size");
  EXPECT_EQ(job.queue_position(), 0);

  EventRecord ev{"job-1", 7, "step",
                 R"({"progress":{"step":5,"totalSteps":10},"metrics":{"loss":1.5},"etaSeconds":3})",
                 absl::FromUnixSeconds(1700000001)};
  oft::v1::JobEvent e = *DecodeJobEvent(ev);
  EXPECT_EQ(e.event_id(), 7);
  ASSERT_TRUE(e.has_step());
  EXPECT_EQ(e.step().progress().step(), 5);
  EXPECT_EQ(e.step().progress().total_steps(), 10);
  EXPECT_DOUBLE_EQ(e.step().metrics().loss(), 1.5);
  EXPECT_DOUBLE_EQ(e.step().eta_seconds(), 3);

  EventRecord sc{"job-1", 1, "state_changed",
                 R"({"previousState":"STATE_UNSPECIFIED","state":"QUEUED","message":"job created"})",
                 absl::FromUnixSeconds(1700000000)};
  e = *DecodeJobEvent(sc);
  ASSERT_TRUE(e.has_state_changed());
  EXPECT_EQ(e.state_changed().state(), oft::v1::Job::QUEUED);

  // A stored spec that does not parse is an error naming the job, never a Job without a spec.
  JobRecord broken = rec;
  broken.spec_json = "{\"base_model\": 7";
  absl::StatusOr<oft::v1::Job> no_spec = JobToProto(broken, 0, 1);
  EXPECT_EQ(no_spec.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(no_spec.status().message()), HasSubstr("job job-1"));

  // An unknown payload kind is an error naming the event, never an empty event.
  absl::StatusOr<oft::v1::JobEvent> unknown =
      DecodeJobEvent(EventRecord{"job-1", 2, "from_the_future", "{\"x\":1}", absl::Now()});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(unknown.status().message()), ::testing::HasSubstr("event 2"));
}

TEST(ModelCatalogTest, ReportsTheDefaultModel) {
  auto catalog = ModelCatalog::Create({{"default", std::string(OFT_SOURCE_DIR) + "/models/default"}});
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  const CatalogModel* m = catalog->Find("default");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->info.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(m->info.chat_template(), "chatml");
  EXPECT_EQ(m->info.config_sha256().size(), 64u);
  EXPECT_GT(m->info.parameter_count(), 5'000'000);
  EXPECT_LT(m->info.parameter_count(), 6'000'000);
  EXPECT_EQ(catalog->Find("nope"), nullptr);
  EXPECT_FALSE(ModelCatalog::Create({{"x", "/nonexistent"}}).ok());
  EXPECT_FALSE(ModelCatalog::Create({{"../x", std::string(OFT_SOURCE_DIR) + "/models/default"}}).ok());
  EXPECT_FALSE(ModelCatalog::Create({}).ok());
}

}  // namespace
}  // namespace oft
