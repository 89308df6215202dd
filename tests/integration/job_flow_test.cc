// The whole job flow against the real server: upload, submit, watch to SUCCEEDED with
// progress, inspect the job, list and download the adapter (sha256 checked) — once through
// the client library and once through the oftctl binary.
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

constexpr int64_t kSteps = 12;

class JobFlowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(
        ServerProcessOptions{.data_dir = dir_.Sub("data"), .api_keys = {AliceFlag()}});
    ASSERT_TRUE(server_->Start().ok()) << server_->LogTail();
  }

  // oftctl with the server and key from the environment.
  CommandResult Oftctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {OftctlBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, {{"OFT_SERVER", server_->address()}, {"OFT_API_KEY", kAliceKey}},
                      absl::Seconds(90));
  }

  // Checks every file of `adapter` in `dir` against its manifest entry.
  void ExpectDownloaded(const v1::Adapter& adapter, const std::string& dir) {
    std::vector<std::string> names;
    for (const v1::AdapterFile& f : adapter.files()) {
      names.push_back(f.name());
      const std::string bytes = ReadFileOrDie(dir + "/" + f.name());
      EXPECT_EQ(static_cast<int64_t>(bytes.size()), f.size_bytes()) << f.name();
      EXPECT_EQ(Sha256Hex(bytes), f.sha256()) << f.name();
    }
    EXPECT_THAT(names, Contains("adapter_config.json"));
    EXPECT_THAT(names, Contains("adapter_model.safetensors"));
    EXPECT_THAT(names, Contains("manifest.json"));
    EXPECT_THAT(ReadFileOrDie(dir + "/adapter_config.json"), HasSubstr("OFT"));
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(JobFlowTest, ClientLibrary) {
  std::unique_ptr<Client> client = server_->NewClient(kAliceKey);
  absl::StatusOr<v1::ListBaseModelsResponse> models = client->ListBaseModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->models_size(), 1);
  EXPECT_EQ(models->models(0).name(), "default");

  absl::StatusOr<v1::Dataset> ds = client->UploadDataset(SampleTrainPath(), "train");
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->validation().rows(), 320);
  EXPECT_EQ(ds->format(), v1::DATASET_FORMAT_PROMPT_COMPLETION);
  EXPECT_EQ(ds->sha256(), Sha256Hex(ReadFileOrDie(SampleTrainPath())));
  absl::StatusOr<v1::Dataset> got_ds = client->GetDataset(ds->id());
  ASSERT_TRUE(got_ds.ok()) << got_ds.status();
  EXPECT_EQ(got_ds->sha256(), ds->sha256());

  v1::CreateJobRequest req;
  *req.mutable_spec() = SmallSpec(ds->id(), "flow-adapter", kSteps);
  absl::StatusOr<v1::Job> job = client->CreateJob(req);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(job->state() == v1::Job::QUEUED || job->state() == v1::Job::RUNNING)
      << v1::Job::State_Name(job->state());
  EXPECT_EQ(job->spec().hyperparameters().max_steps(), kSteps);
  EXPECT_GE(job->latest_event_id(), 1);

  // Watch from the first event to the end.
  absl::StatusOr<std::vector<v1::JobEvent>> events =
      CollectEvents(*client, job->id(), 0, absl::Seconds(90));
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_FALSE(events->empty());
  EXPECT_EQ(CheckContiguous(*events), "");
  std::vector<v1::Job::State> states;
  std::vector<int64_t> steps;
  for (const v1::JobEvent& e : *events) {
    EXPECT_EQ(e.job_id(), job->id());
    if (e.has_state_changed()) states.push_back(e.state_changed().state());
    if (e.has_step()) {
      steps.push_back(e.step().progress().step());
      EXPECT_EQ(e.step().progress().total_steps(), kSteps);
      EXPECT_GT(e.step().metrics().loss(), 0);
    }
  }
  ASSERT_GE(states.size(), 3u);
  EXPECT_EQ(states.front(), v1::Job::QUEUED);
  EXPECT_THAT(states, Contains(v1::Job::RUNNING));
  EXPECT_EQ(states.back(), v1::Job::SUCCEEDED);
  EXPECT_TRUE(events->back().has_state_changed()) << "the terminal event comes last";
  ASSERT_FALSE(steps.empty()) << "no progress events";
  EXPECT_TRUE(std::is_sorted(steps.begin(), steps.end()));
  EXPECT_EQ(steps.back(), kSteps);

  // The finished job.
  absl::StatusOr<v1::Job> done = client->GetJob(job->id());
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(done->progress().step(), kSteps);
  EXPECT_EQ(done->progress().total_steps(), kSteps);
  EXPECT_GT(done->metrics().loss(), 0);
  EXPECT_GT(done->metrics().tokens_per_second(), 0);
  EXPECT_EQ(done->eta_seconds(), 0);
  EXPECT_TRUE(done->has_start_time());
  EXPECT_TRUE(done->has_end_time());
  EXPECT_EQ(done->latest_event_id(), events->back().event_id());
  EXPECT_EQ(done->result().name(), "flow-adapter");
  EXPECT_EQ(done->result().version(), 1);
  EXPECT_EQ(done->queue_position(), 0);

  // Watching a finished job from its last event ends at once with nothing to deliver.
  absl::StatusOr<std::vector<v1::JobEvent>> none =
      CollectEvents(*client, job->id(), done->latest_event_id(), absl::Seconds(10));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  absl::StatusOr<std::vector<v1::JobEvent>> last =
      CollectEvents(*client, job->id(), done->latest_event_id() - 1, absl::Seconds(10));
  ASSERT_TRUE(last.ok()) << last.status();
  ASSERT_EQ(last->size(), 1u);
  EXPECT_EQ(last->front().state_changed().state(), v1::Job::SUCCEEDED);

  absl::StatusOr<std::vector<v1::Job>> jobs = client->ListAllJobs({v1::Job::SUCCEEDED});
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].id(), job->id());

  // The adapter.
  absl::StatusOr<std::vector<v1::Adapter>> adapters = client->ListAllAdapters();
  ASSERT_TRUE(adapters.ok()) << adapters.status();
  ASSERT_EQ(adapters->size(), 1u);
  const v1::Adapter& adapter = (*adapters)[0];
  EXPECT_EQ(adapter.ref().name(), "flow-adapter");
  EXPECT_EQ(adapter.ref().version(), 1);
  EXPECT_EQ(adapter.job_id(), job->id());
  EXPECT_EQ(adapter.base_model(), "default");
  EXPECT_EQ(adapter.base_model_config_sha256(), models->models(0).config_sha256());

  const std::string out = dir_.Sub("download");
  absl::StatusOr<std::vector<v1::AdapterFile>> files = client->DownloadAdapter(adapter.ref(), out);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(static_cast<int>(files->size()), adapter.files_size());
  ExpectDownloaded(adapter, out);
}

TEST_F(JobFlowTest, Oftctl) {
  CommandResult r = Oftctl({"models"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("default"));

  r = Oftctl({"upload", SampleTrainPath(), "--name=cli-train"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("uploaded (ds-[0-9a-f]+)"))) << r.out;
  const std::string ds_id = m[1];
  EXPECT_THAT(r.out, HasSubstr("320 rows"));

  r = Oftctl({"datasets"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(ds_id));

  r = Oftctl({"submit", "--base-model=default", "--dataset=" + ds_id,
              "--output-adapter=cli-adapter", "--max-steps=8", "--batch-size=2", "--max-seq-len=64",
              "--learning-rate=0.001", "--watch"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("submitted (job-[0-9a-f]+)"))) << r.out;
  const std::string job_id = m[1];
  // Plain (not a terminal) watch output: one line per event, progress included.
  EXPECT_THAT(r.out, HasSubstr("QUEUED -> RUNNING"));
  EXPECT_THAT(r.out, HasSubstr("step 8/8"));
  EXPECT_THAT(r.out, HasSubstr("RUNNING -> SUCCEEDED"));
  EXPECT_THAT(r.out, HasSubstr(job_id + " SUCCEEDED: published cli-adapter:1"));

  r = Oftctl({"status", job_id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SUCCEEDED"));
  EXPECT_THAT(r.out, HasSubstr("8/8"));
  EXPECT_THAT(r.out, HasSubstr("cli-adapter:1"));

  r = Oftctl({"list", "--state=SUCCEEDED"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(job_id));

  // Watching a finished job replays its log and exits with the job's outcome.
  r = Oftctl({"watch", job_id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("#1 state QUEUED"));
  EXPECT_THAT(r.out, HasSubstr("RUNNING -> SUCCEEDED"));

  r = Oftctl({"adapters"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("cli-adapter"));

  const std::string out = dir_.Sub("cli-download");
  r = Oftctl({"download", "cli-adapter:1", "--out=" + out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::unique_ptr<Client> client = server_->NewClient(kAliceKey);
  v1::AdapterVersionRef ref;
  ref.set_name("cli-adapter");
  ref.set_version(1);
  absl::StatusOr<v1::Adapter> adapter = client->GetAdapter(ref);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->job_id(), job_id);
  ExpectDownloaded(*adapter, out);

  // Errors are scriptable: exit code 1 and the gRPC code on stderr.
  r = Oftctl({"status", "job-00000000000000000000000"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  r = RunCommand({OftctlBinary(), "models"},
                 {{"OFT_SERVER", server_->address()}, {"OFT_API_KEY", "wrong-key-0123456789"}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
}

}  // namespace
}  // namespace oft::testing
