// One server per data dir and per port, and what stays in it (leveldb's LOCK + recovery):
// a second oft_server on the same --data_dir exits at once naming the holder's pid, a second
// one on the same port fails to bind (no SO_REUSEPORT sharing), an upload cut by a SIGKILL
// leaves no partial file after the restart, and a finished job's checkpoints follow
// --checkpoint_retention (when the job ends, when a queued job is cancelled, and at the next
// start).
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "oft/v1/datasets.grpc.pb.h"
#include "tests/integration/alice_server_fixture.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using DataDirTest = AliceServerTest;

// Whether the first server still answers its tenant.
void ExpectStillServing(Client* client) {
  absl::StatusOr<v1::ListDatasetsResponse> list = client->ListDatasets(v1::ListDatasetsRequest());
  EXPECT_TRUE(list.ok()) << list.status();
}

TEST_F(DataDirTest, SecondServerOnTheSameDataDirRefusesNamingTheHolder) {
  ServerProcess second(ServerProcessOptions{.data_dir = server_->data_dir(),
                                            .api_keys = {AliceFlag()},
                                            .start_timeout = absl::Seconds(30)});
  absl::Status st = second.Start();
  ASSERT_FALSE(st.ok()) << "a second server started on the same data dir";
  EXPECT_THAT(second.LogTail(), HasSubstr(absl::StrCat("is in use by another oft_server (pid ",
                                                        server_->pid(), ",")));
  EXPECT_TRUE(fs::exists(server_->data_dir() + "/LOCK"));
  ExpectStillServing(client_.get());
}

TEST_F(DataDirTest, SecondServerOnTheSamePortFailsToBind) {
  ServerProcess second(ServerProcessOptions{
      .data_dir = dir_.Sub("other"),
      .api_keys = {AliceFlag()},
      .extra_flags = {absl::StrCat("--listen=127.0.0.1:", server_->port())},
      .start_timeout = absl::Seconds(30)});
  absl::Status st = second.Start();
  ASSERT_FALSE(st.ok()) << "a second server bound the first one's port";
  EXPECT_THAT(second.LogTail(), HasSubstr("cannot listen"));
  ExpectStillServing(client_.get());
}

TEST_F(DataDirTest, UploadCutBySigkillLeavesNoPartialFileAfterRestart) {
  // Half an upload through the raw stream: the header and one chunk, then the server dies.
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::DatasetService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", absl::StrCat("Bearer ", kAliceKey));
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::Dataset response;
  auto writer = stub->UploadDataset(&ctx, &response);
  const std::string body = SampleTrainHead(64);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_name("cut");
  header.mutable_header()->set_sha256(std::string(64, 'a'));
  header.mutable_header()->set_size_bytes(static_cast<int64_t>(body.size()));
  ASSERT_TRUE(writer->Write(header));
  v1::UploadDatasetRequest chunk;
  chunk.set_chunk(body.substr(0, body.size() / 2));
  ASSERT_TRUE(writer->Write(chunk));

  const std::string datasets = server_->data_dir() + "/datasets";
  auto partial_uploads = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(datasets)) {
      n += e.path().filename().string().rfind(".upload-", 0) == 0;
    }
    return n;
  };
  ASSERT_TRUE(WaitUntil([&] { return partial_uploads() > 0; }, absl::Seconds(20)))
      << "the server never wrote the partial upload";
  server_->Kill();
  EXPECT_GT(partial_uploads(), 0);
  ctx.TryCancel();

  ASSERT_TRUE(server_->Start().ok()) << server_->LogTail();
  EXPECT_EQ(partial_uploads(), 0);
  EXPECT_THAT(server_->LogTail(), HasSubstr("partial upload(s)"));
  // A fresh channel's first call may race the listener coming up; the server must answer soon.
  client_ = server_->NewClient(kAliceKey);
  EXPECT_TRUE(WaitUntil([&] { return client_->ListDatasets(v1::ListDatasetsRequest()).ok(); },
                        absl::Seconds(10)));
}

// A 6-step job checkpointing every 2 steps and keeping all of them while it runs; returns
// its id once SUCCEEDED.
std::string RunCheckpointingJob(Client& client, const std::string& dataset_id,
                                const std::string& adapter) {
  v1::CreateJobRequest req;
  *req.mutable_spec() = SmallSpec(dataset_id, adapter, 6);
  req.mutable_spec()->mutable_hyperparameters()->set_checkpoint_every(2);
  req.mutable_spec()->mutable_hyperparameters()->set_keep_checkpoints(0);
  absl::StatusOr<v1::Job> job = client.CreateJob(req);
  EXPECT_TRUE(job.ok()) << job.status();
  if (!job.ok()) return "";
  absl::StatusOr<v1::Job> done = WaitForState(client, job->id(), v1::Job::SUCCEEDED, absl::Seconds(90));
  EXPECT_TRUE(done.ok()) << done.status();
  return job->id();
}

std::set<std::string> CheckpointsOf(const std::string& data_dir, const std::string& job_id) {
  std::set<std::string> out;
  const fs::path dir = fs::path(data_dir) / "jobs" / job_id / "checkpoints";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.insert(e.path().filename().string());
  return out;
}

TEST_F(DataDirTest, FinishedJobKeepsNoCheckpointsByDefault) {
  const std::string id = RunCheckpointingJob(*client_, dataset_id_, "retained-none");
  ASSERT_FALSE(id.empty());
  // Retention runs right after the terminal transition the client just saw.
  EXPECT_TRUE(WaitUntil([&] { return CheckpointsOf(server_->data_dir(), id).empty(); },
                        absl::Seconds(10)))
      << "left: " << CheckpointsOf(server_->data_dir(), id).size() << " checkpoint(s)";
  EXPECT_FALSE(fs::exists(fs::path(server_->data_dir()) / "jobs" / id / "checkpoints"));
  // The adapter itself is published and stays.
  absl::StatusOr<std::vector<v1::Adapter>> adapters = client_->ListAllAdapters("retained-none");
  ASSERT_TRUE(adapters.ok()) << adapters.status();
  EXPECT_EQ(adapters->size(), 1u);
}

TEST(CheckpointRetentionTest, LastKeepsTheNewestAndAStricterRestartSweepsIt) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{.data_dir = dir.Sub("data"),
                                            .api_keys = {AliceFlag()},
                                            .extra_flags = {"--checkpoint_retention=last"}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  std::unique_ptr<Client> client = server.NewClient(kAliceKey);
  absl::StatusOr<v1::Dataset> ds = client->UploadDatasetBytes(SampleTrainHead(64), "train");
  ASSERT_TRUE(ds.ok()) << ds.status();
  const std::string id = RunCheckpointingJob(*client, ds->id(), "retained-last");
  ASSERT_FALSE(id.empty());
  const std::set<std::string> last = {"step-6"};
  EXPECT_TRUE(WaitUntil([&] { return CheckpointsOf(server.data_dir(), id) == last; },
                        absl::Seconds(10)))
      << "left: " << CheckpointsOf(server.data_dir(), id).size() << " checkpoint(s)";
  EXPECT_TRUE(fs::exists(fs::path(server.data_dir()) / "jobs" / id / "checkpoints" / "step-6" /
                         "optimizer.pt"));

  // The next start with the default policy (none) sweeps the finished job's checkpoint.
  absl::StatusOr<int> code = server.Terminate(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  ServerProcess again(ServerProcessOptions{.data_dir = dir.Sub("data"), .api_keys = {AliceFlag()}});
  ASSERT_TRUE(again.Start().ok()) << again.LogTail();
  EXPECT_TRUE(CheckpointsOf(again.data_dir(), id).empty());
  EXPECT_THAT(again.LogTail(), HasSubstr("checkpoint(s) of finished jobs"));
}

// A job requeued at a shutdown keeps the checkpoint it will resume from; cancelled while it
// waits (behind a higher-priority job after the restart), the retention policy (none)
// removes that checkpoint at once, not at the next start.
TEST(CheckpointRetentionTest, JobCancelledWhileQueuedAfterARestartLosesItsCheckpoint) {
  TempDir dir;
  const ServerProcessOptions options{.data_dir = dir.Sub("data"), .api_keys = {AliceFlag()}};
  ServerProcess server(options);
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  std::unique_ptr<Client> client = server.NewClient(kAliceKey);
  absl::StatusOr<v1::Dataset> ds = client->UploadDatasetBytes(SampleTrainHead(64), "train");
  ASSERT_TRUE(ds.ok()) << ds.status();
  auto create = [&](Client& c, const std::string& adapter, int priority, int64_t every) {
    v1::CreateJobRequest req;
    *req.mutable_spec() = SmallSpec(ds->id(), adapter, 100000);
    req.mutable_spec()->mutable_hyperparameters()->set_checkpoint_every(every);
    req.mutable_spec()->set_priority(priority);
    absl::StatusOr<v1::Job> job = c.CreateJob(req);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->id() : std::string();
  };
  const std::string waiting = create(*client, "requeued", -1, 2);
  ASSERT_FALSE(waiting.empty());
  ASSERT_TRUE(WaitUntil([&] { return !CheckpointsOf(server.data_dir(), waiting).empty(); },
                        absl::Seconds(60)));
  const std::string blocker = create(*client, "blocker", 5, 0);  // queued behind it
  ASSERT_FALSE(blocker.empty());
  absl::StatusOr<int> code = server.Terminate(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();

  ServerProcess again(options);
  ASSERT_TRUE(again.Start().ok()) << again.LogTail();
  std::unique_ptr<Client> c2 = again.NewClient(kAliceKey);
  ASSERT_TRUE(WaitForState(*c2, blocker, v1::Job::RUNNING, absl::Seconds(60)).ok());
  absl::StatusOr<v1::Job> queued = c2->GetJob(waiting);
  ASSERT_TRUE(queued.ok()) << queued.status();
  ASSERT_EQ(queued->state(), v1::Job::QUEUED);
  ASSERT_FALSE(CheckpointsOf(again.data_dir(), waiting).empty());
  absl::StatusOr<v1::Job> cancelled = c2->CancelJob(waiting);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::Job::CANCELLED);
  EXPECT_TRUE(WaitUntil([&] { return CheckpointsOf(again.data_dir(), waiting).empty(); },
                        absl::Seconds(10)))
      << "left: " << CheckpointsOf(again.data_dir(), waiting).size() << " checkpoint(s)";
  ASSERT_TRUE(c2->CancelJob(blocker).ok());
}

}  // namespace
}  // namespace oft::testing
