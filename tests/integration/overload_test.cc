// Overload and stuck work: health reports NOT_SERVING while blocking RPC work waits too long
// for an executor thread (and SERVING again once it keeps up), and SIGTERM ends the process
// within --shutdown_timeout_seconds even while a call would keep a graceful stop waiting.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/health_check.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using ::testing::HasSubstr;

// A valid JSONL file of about `bytes` bytes whose validation keeps an executor thread busy.
std::string BigDataset(size_t bytes, int salt) {
  std::string out;
  for (int i = 0; out.size() < bytes; ++i) {
    out += absl::StrCat("{\"text\": \"row ", salt, "-", i, " ", std::string(200, 'a' + i % 26), "\"}\n");
  }
  return out;
}

TEST(OverloadTest, SaturatedExecutorTurnsHealthNotServingThenServingAgain) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{
      .data_dir = dir.Sub("data"),
      .api_keys = {AliceFlag()},
      .extra_flags = {"--executor_threads=1", "--health_saturation_seconds=0.1"}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  ASSERT_EQ(HealthCheck(channel), 1);

  std::atomic<bool> saw_not_serving{false}, stop{false};
  std::thread prober([&] {
    while (!stop) {
      if (HealthCheck(channel) == 2) saw_not_serving = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  // A burst of uploads whose validations queue behind one executor thread.
  std::vector<std::thread> uploaders;
  std::atomic<int> uploaded{0};
  for (int i = 0; i < 16; ++i) {
    uploaders.emplace_back([&, i] {
      std::unique_ptr<Client> client = server.NewClient(kAliceKey);
      if (client->UploadDatasetBytes(BigDataset(3 << 20, i), absl::StrCat("big", i)).ok()) ++uploaded;
    });
  }
  for (auto& t : uploaders) t.join();
  EXPECT_EQ(uploaded, 16);  // saturation slows work down; it loses none
  EXPECT_TRUE(saw_not_serving) << "health never left SERVING while 16 uploads queued on 1 thread";
  // Drained: SERVING again.
  EXPECT_TRUE(WaitUntil([&] { return HealthCheck(channel) == 1; }, absl::Seconds(10)));
  stop = true;
  prober.join();
  EXPECT_THAT(server.LogTail(), HasSubstr("health: NOT_SERVING"));
}

TEST(OverloadTest, SigtermIsBoundedWhileACallHoldsTheGracefulStop) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{
      .data_dir = dir.Sub("data"),
      .api_keys = {AliceFlag()},
      .extra_flags = {"--shutdown_timeout_seconds=0.5"}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  std::unique_ptr<Client> client = server.NewClient(kAliceKey);
  absl::StatusOr<v1::Dataset> ds = client->UploadDatasetBytes(SampleTrainHead(32), "train");
  ASSERT_TRUE(ds.ok()) << ds.status();
  v1::CreateJobRequest req;
  *req.mutable_spec() = SmallSpec(ds->id(), "long", 100000);
  absl::StatusOr<v1::Job> job = client->CreateJob(req);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForStep(*client, job->id(), 1, absl::Seconds(60)).ok());
  // An open WatchJob stream: a graceful stop waits for it (up to gRPC's shutdown deadline).
  std::thread watcher([&] {
    WatchOptions options;
    options.max_reconnects = 0;
    (void)client->WatchJob(job->id(), 0, [](const v1::JobEvent&) { return true; }, options);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const absl::Time start = absl::Now();
  absl::StatusOr<int> code = server.Terminate(absl::Seconds(20));
  const absl::Duration took = absl::Now() - start;
  watcher.join();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 3) << server.LogTail();
  EXPECT_LT(took, absl::Seconds(2.5)) << "the stop was not bounded by --shutdown_timeout_seconds";
  EXPECT_THAT(server.LogTail(), HasSubstr("shutdown did not finish within 0.5s"));
  // Nothing is lost: the next start owns the data dir again and the job is still there.
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  client = server.NewClient(kAliceKey);
  EXPECT_TRUE(WaitUntil([&] { return client->GetJob(job->id()).ok(); }, absl::Seconds(10)));
}

}  // namespace
}  // namespace oft::testing
