#include "server/train/job_runner.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/artifacts/peft_format.h"
#include "server/common/file_util.h"
#include "server/model/llama.h"

namespace oft {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using Json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kRoot = OFT_SOURCE_DIR;
const std::string kModelDir = kRoot + "/models/default";
const std::string kTrain = kRoot + "/data/sample/train.jsonl";

class JobRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("job_runner_test_", getpid(), "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto s = AdapterStore::Open((dir_ / "data").string());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A 6-step CPU job on the default model.
  TrainingJob Job(const std::string& id, const std::string& adapter_name = "my-adapter") {
    TrainingJob j;
    j.job_id = id;
    j.tenant = "t1";
    j.base_model_name = "default";
    j.model_dir = kModelDir;
    j.train_threads = 1;
    j.train_paths = {kTrain};
    j.adapter.oft_block_size = 32;
    j.options.max_steps = 6;
    j.options.epochs = 0;
    j.options.batch_size = 4;
    j.options.max_seq_len = 96;
    j.options.learning_rate = 5e-3;
    j.options.checkpoint_every = 0;
    j.work_dir = (dir_ / "jobs" / id).string();
    j.output_adapter_name = adapter_name;
    j.hyperparameters_json = R"({"learningRate":0.005})";
    return j;
  }

  fs::path dir_;
  std::unique_ptr<AdapterStore> store_;
};

TEST_F(JobRunnerTest, SixStepJobPublishesVersionOneThatLoads) {
  TrainingJob job = Job("job-1");
  std::vector<TrainEvent> events;
  auto r = RunTrainingJob(job, store_.get(), [&](const TrainEvent& e) { events.push_back(e); },
                          nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->metrics.steps_completed, 6);
  const AdapterManifest& m = r->manifest;
  EXPECT_EQ(m.tenant, "t1");
  EXPECT_EQ(m.name, "my-adapter");
  EXPECT_EQ(m.version, 1);
  EXPECT_EQ(m.job_id, "job-1");
  EXPECT_EQ(m.base_model, "default");
  auto config_sha = Sha256File(kModelDir + "/config.json");
  ASSERT_TRUE(config_sha.ok());
  EXPECT_EQ(m.base_model_config_sha256, *config_sha);
  EXPECT_EQ(Json::parse(m.hyperparameters_json), Json::parse(job.hyperparameters_json));
  EXPECT_EQ(m.metrics.at("steps"), 6);
  EXPECT_TRUE(std::isfinite(m.metrics.at("loss")));
  EXPECT_GT(m.metrics.at("loss"), 0);
  EXPECT_GT(m.metrics.at("tokens"), 0);
  EXPECT_GE(m.metrics.at("train_seconds"), 0);
  EXPECT_EQ(m.metrics.count("eval_loss"), 0u);  // no validation data
  ASSERT_EQ(m.files.count(kAdapterWeightsFile), 1u);
  ASSERT_EQ(m.files.count(kAdapterConfigFile), 1u);
  EXPECT_THAT(m.files.at(kAdapterWeightsFile), SizeIs(64));
  EXPECT_TRUE(store_->Verify("t1", "my-adapter", 1).ok());

  int steps = 0;
  for (const TrainEvent& e : events) steps += e.kind == TrainEvent::Kind::kStep;
  EXPECT_EQ(steps, 6);
  EXPECT_EQ(events.back().kind, TrainEvent::Kind::kDone);

  // The published adapter loads onto a fresh model.
  auto dir = store_->VersionDir("t1", "my-adapter", 1);
  ASSERT_TRUE(dir.ok());
  auto model = LlamaModel::Load(kModelDir, LoadOptions{});
  ASSERT_TRUE(model.ok()) << model.status();
  auto cfg = LoadPeftAdapter(**model, *dir, "loaded");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->oft.oft_block_size, 32);
  EXPECT_EQ(cfg->base_model_name_or_path, "default");
  // Default targets: PEFT's q_proj, v_proj.
  EXPECT_EQ(cfg->targets.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_FALSE(fs::exists(fs::path(job.work_dir) / "staging"));

  // A rerun of a job that already published reports that version; no version 2.
  auto again = RunTrainingJob(job, store_.get(), nullptr, nullptr);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->manifest.version, 1);
  EXPECT_EQ(again->metrics.steps_completed, 6);
  EXPECT_TRUE(absl::IsNotFound(store_->Get("t1", "my-adapter", 2).status()));
}

TEST_F(JobRunnerTest, StopCheckpointsAndARerunResumesToTheSameAdapter) {
  // Uninterrupted reference.
  auto full = RunTrainingJob(Job("job-full", "full"), store_.get(), nullptr, nullptr);
  ASSERT_TRUE(full.ok()) << full.status();

  TrainingJob job = Job("job-resumed", "resumed");
  std::atomic<bool> stop{false};
  auto cancelled = RunTrainingJob(
      job, store_.get(),
      [&](const TrainEvent& e) {
        if (e.kind == TrainEvent::Kind::kStep && e.step == 3) stop.store(true);
      },
      &stop);
  ASSERT_TRUE(absl::IsCancelled(cancelled.status())) << cancelled.status();
  EXPECT_TRUE(fs::exists(fs::path(job.work_dir) / "checkpoints" / "step-3"));
  EXPECT_TRUE(absl::IsNotFound(store_->Get("t1", "resumed").status()));

  // Other hyperparameters than the checkpoint's: CHECKPOINT_CORRUPT, nothing published.
  TrainingJob other = job;
  other.options.learning_rate = 1e-3;
  auto mismatch = RunTrainingJob(other, store_.get(), nullptr, nullptr);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(ClassifyFailure(mismatch.status()).reason, "CHECKPOINT_CORRUPT")
      << mismatch.status();

  stop.store(false);
  bool resumed_warning = false;
  auto resumed = RunTrainingJob(
      job, store_.get(),
      [&](const TrainEvent& e) {
        if (e.kind == TrainEvent::Kind::kWarning &&
            e.message.find("resumed") != std::string::npos) {
          resumed_warning = true;
        }
      },
      &stop);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_TRUE(resumed_warning);
  EXPECT_EQ(resumed->metrics.steps_completed, 6);
  EXPECT_EQ(resumed->manifest.version, 1);
  EXPECT_EQ(resumed->manifest.files.at(kAdapterWeightsFile),
            full->manifest.files.at(kAdapterWeightsFile));

  // The comparison is sensitive: another seed trains another adapter.
  TrainingJob reseeded = Job("job-reseeded", "reseeded");
  reseeded.options.seed = 7;
  auto other_seed = RunTrainingJob(reseeded, store_.get(), nullptr, nullptr);
  ASSERT_TRUE(other_seed.ok()) << other_seed.status();
  EXPECT_NE(other_seed->manifest.files.at(kAdapterWeightsFile),
            full->manifest.files.at(kAdapterWeightsFile));
}

TEST_F(JobRunnerTest, BadDatasetIsDatasetInvalid) {
  const std::string bad = (dir_ / "bad.jsonl").string();
  std::ofstream(bad) << R"({"text": "fine"})" << "\n" << "{not json\n";
  TrainingJob job = Job("job-bad");
  job.train_paths = {kTrain, bad};
  auto r = RunTrainingJob(job, store_.get(), nullptr, nullptr);
  ASSERT_FALSE(r.ok());
  const TrainingFailure f = ClassifyFailure(r.status());
  EXPECT_EQ(f.reason, "DATASET_INVALID");
  EXPECT_EQ(f.field, "training_dataset_ids");
  EXPECT_THAT(f.message, HasSubstr("line 2"));
}

TEST_F(JobRunnerTest, MissingBaseModelIsUnavailable) {
  TrainingJob job = Job("job-nomodel");
  job.model_dir = (dir_ / "no-such-model").string();
  auto r = RunTrainingJob(job, store_.get(), nullptr, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ClassifyFailure(r.status()).reason, "BASE_MODEL_UNAVAILABLE");
  EXPECT_EQ(ClassifyFailure(r.status()).field, "base_model");
}

TEST_F(JobRunnerTest, CheckAcceptsAGoodJobAndEstimatesMemory) {
  TrainingJob job = Job("job-check");
  auto r = CheckTrainingJob(job, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->warnings, IsEmpty());
  EXPECT_GT(r->estimated_memory_bytes, 10'000'000);  // the fp32 weights alone are ~20 MB
  EXPECT_LT(r->estimated_memory_bytes, 2'000'000'000);
  job.options.batch_size = 64;
  auto bigger = CheckTrainingJob(job, 0);
  ASSERT_TRUE(bigger.ok());
  EXPECT_GT(bigger->estimated_memory_bytes, r->estimated_memory_bytes);
  job.options.activation_checkpointing = true;
  auto ckpt = CheckTrainingJob(job, 0);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_LT(ckpt->estimated_memory_bytes, bigger->estimated_memory_bytes);
  EXPECT_TRUE(CheckTrainingJob(job, int64_t{64} << 30).ok());
}

TEST_F(JobRunnerTest, CheckWarnsAboutAdjustedBlockSizes) {
  TrainingJob job = Job("job-check");
  job.adapter.oft_block_size = 48;  // 256 % 48 != 0
  job.targets.target_modules = {"all-linear"};
  auto r = CheckTrainingJob(job, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  // hidden 256 (q,k,v,o,gate,up) and intermediate 688 (down): two distinct adjustments.
  ASSERT_THAT(r->warnings, SizeIs(2));
  EXPECT_THAT(r->warnings[0], HasSubstr("adapter_config.oft_block_size 48"));
  EXPECT_THAT(r->warnings, Contains(HasSubstr("down_proj")));
}

// Each bad job names its field, both in the message and in ClassifyFailure's field.
void ExpectFieldError(const absl::StatusOr<JobCheckResult>& r, absl::StatusCode code,
                      const std::string& field) {
  ASSERT_FALSE(r.ok()) << "expected an error naming " << field;
  EXPECT_EQ(r.status().code(), code) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(field));
  EXPECT_EQ(ClassifyFailure(r.status()).field, field) << r.status();
}

TEST_F(JobRunnerTest, CheckErrorsNameTheField) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  {
    TrainingJob job = Job("j");
    job.adapter.oft_block_size = 0;
    job.adapter.r = 256;  // hidden 256 / 256 = blocks of 1 feature
    ExpectFieldError(CheckTrainingJob(job, 0), kInvalid, "adapter_config.r");
  }
  {
    TrainingJob job = Job("j");
    job.adapter.oft_block_size = -4;
    ExpectFieldError(CheckTrainingJob(job, 0), kInvalid, "adapter_config.oft_block_size");
  }
  {
    TrainingJob job = Job("j");
    job.targets.target_modules = {"no_such_proj"};
    ExpectFieldError(CheckTrainingJob(job, 0), kInvalid, "adapter_config.target_modules");
  }
  {
    TrainingJob job = Job("j");
    job.targets.target_modules = {"q_proj"};
    job.targets.layers_to_transform = {17};  // the model has 6 layers
    ExpectFieldError(CheckTrainingJob(job, 0), kInvalid, "adapter_config.target_modules");
  }
  {
    TrainingJob job = Job("j");
    job.adapter.bias = OftBias::kAll;
    ExpectFieldError(CheckTrainingJob(job, 0), kInvalid, "adapter_config.bias");
  }
  {
    TrainingJob job = Job("j");
    job.options.batch_size = 0;
    ExpectFieldError(CheckTrainingJob(job, 0), kInvalid, "hyperparameters.batch_size");
  }
  {
    TrainingJob job = Job("j");
    job.options.eval_every = 2;  // no validation data
    ExpectFieldError(CheckTrainingJob(job, 0), kInvalid, "hyperparameters.eval_every");
  }
  {
    TrainingJob job = Job("j");
    job.validation_fraction = 0.9;
    ExpectFieldError(CheckTrainingJob(job, 0), kInvalid, "validation_fraction");
  }
  {
    TrainingJob job = Job("j");
    job.train_paths.clear();
    ExpectFieldError(CheckTrainingJob(job, 0), kInvalid, "training_dataset_ids");
  }
  {
    TrainingJob job = Job("j");
    ExpectFieldError(CheckTrainingJob(job, int64_t{1} << 20), absl::StatusCode::kFailedPrecondition,
                     "hyperparameters.batch_size");
    EXPECT_EQ(ClassifyFailure(CheckTrainingJob(job, int64_t{1} << 20).status()).reason,
              "OUT_OF_MEMORY");
  }
  {
    TrainingJob job = Job("j");
    job.model_dir = (dir_ / "missing").string();
    ExpectFieldError(CheckTrainingJob(job, 0), absl::StatusCode::kFailedPrecondition, "base_model");
  }
}

TEST(ClassifyFailureTest, UntaggedStatuses) {
  struct Case {
    absl::Status status;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {absl::ResourceExhaustedError("CUDA out of memory. Tried to allocate 2 GiB"), "OUT_OF_MEMORY"},
      {absl::InternalError("non-finite loss at step 3 (nan)"), "TRAINING_DIVERGED"},
      {absl::ResourceExhaustedError("write /d/x.tmp: No space left on device"), "DISK_FULL"},
      {absl::InternalError("fsync: No space left on device"), "DISK_FULL"},
      {absl::InvalidArgumentError("batch_size must be in [1, 4096], got 0"), "INVALID_ARGUMENT"},
      {absl::InternalError("something odd"), "INTERNAL"},
      {absl::UnknownError("?"), "INTERNAL"},
  };
  for (const Case& c : cases) {
    const TrainingFailure f = ClassifyFailure(c.status);
    EXPECT_EQ(f.reason, c.reason) << c.status;
    EXPECT_EQ(f.message, c.status.message());
    EXPECT_EQ(f.field, "");
  }
}

}  // namespace
}  // namespace oft
