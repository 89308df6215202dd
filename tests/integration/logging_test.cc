// oft_server's structured log (issue 16): with --log_format=json every line the server writes
// is one JSON object, and a job's life is there: created, started, checkpoint, requeued at a
// SIGTERM, resumed after the restart, finished with its state and reason; at --log_level=debug
// each RPC has a line with its method, tenant, status code and latency.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using Json = nlohmann::json;

// The server's lines of the log file (the harness's "==== start:" lines left out), each
// parsed; a line that is not a JSON object fails the test.
std::vector<Json> ServerLines(const std::string& log) {
  std::vector<Json> out;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "==== start:")) continue;
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(!j.is_discarded() && j.is_object()) << "not a JSON object: " << line;
    if (j.is_discarded() || !j.is_object()) continue;
    for (const char* key : {"time", "level", "logger", "msg"}) {
      EXPECT_TRUE(j.contains(key)) << key << " missing in " << line;
    }
    out.push_back(std::move(j));
  }
  return out;
}

std::vector<Json> Find(const std::vector<Json>& lines, const std::string& msg, const std::string& job_id) {
  std::vector<Json> out;
  for (const Json& j : lines) {
    if (j.value("msg", "") == msg && (job_id.empty() || j.value("job_id", "") == job_id)) out.push_back(j);
  }
  return out;
}

TEST(LoggingTest, JsonLogHoldsTheJobLifecycleAndEachRpc) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{
      .data_dir = dir.Sub("data"),
      .api_keys = {AliceFlag()},
      .extra_flags = {"--log_format=json", "--log_level=debug"}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  std::unique_ptr<Client> client = server.NewClient(kAliceKey);
  absl::StatusOr<v1::Dataset> ds = client->UploadDatasetBytes(SampleTrainHead(64), "train");
  ASSERT_TRUE(ds.ok()) << ds.status();
  v1::CreateJobRequest req;
  *req.mutable_spec() = SmallSpec(ds->id(), "logged", 150);
  absl::StatusOr<v1::Job> job = client->CreateJob(req);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForStep(*client, job->id(), 5, absl::Seconds(60)).ok());
  absl::StatusOr<int> code = server.Terminate(absl::Seconds(60));  // checkpoint + requeue
  ASSERT_TRUE(code.ok()) << code.status();
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  ASSERT_TRUE(WaitForState(*client, job->id(), v1::Job::SUCCEEDED, absl::Seconds(90)).ok());
  // The "job finished" line is written before the state change the client just saw.
  const std::vector<Json> lines = ServerLines(server.LogTail(size_t{1} << 24));
  ASSERT_FALSE(lines.empty());

  const std::vector<Json> created = Find(lines, "job created", job->id());
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0]["tenant"], "alice");
  EXPECT_EQ(created[0]["output_adapter"], "logged");
  EXPECT_EQ(created[0]["level"], "info");
  EXPECT_EQ(Find(lines, "job started", job->id()).size(), 2u) << "once per run";
  const std::vector<Json> checkpoints = Find(lines, "job checkpoint", job->id());
  ASSERT_GE(checkpoints.size(), 2u) << "at the shutdown and at the end";
  EXPECT_GE(checkpoints[0]["step"].get<int64_t>(), 5);
  const std::vector<Json> requeued = Find(lines, "job requeued", job->id());
  ASSERT_EQ(requeued.size(), 1u);
  EXPECT_EQ(requeued[0]["state"], "QUEUED");
  const std::vector<Json> resumed = Find(lines, "job resumed", job->id());
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0]["step"], checkpoints[0]["step"]) << "resumed at the shutdown checkpoint";
  const std::vector<Json> finished = Find(lines, "job finished", job->id());
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0]["state"], "SUCCEEDED");
  EXPECT_EQ(finished[0]["reason"], "published logged version 1");
  EXPECT_EQ(finished[0]["version"], 1);

  // RPCs at debug level: CreateJob by alice, OK, with a latency.
  bool create_rpc = false;
  for (const Json& j : Find(lines, "rpc", "")) {
    EXPECT_EQ(j["level"], "debug");
    EXPECT_TRUE(j["latency_ms"].is_number()) << j.dump();
    if (j["method"] == "/oft.v1.JobService/CreateJob") {
      create_rpc = true;
      EXPECT_EQ(j["tenant"], "alice");
      EXPECT_EQ(j["code"], "OK");
    }
  }
  EXPECT_TRUE(create_rpc) << "no rpc line for CreateJob";

  // A call without a key: an rpc line with tenant "-" and UNAUTHENTICATED.
  std::unique_ptr<Client> anonymous = server.NewClient("");
  EXPECT_FALSE(anonymous->ListDatasets(v1::ListDatasetsRequest()).ok());
  EXPECT_TRUE(WaitUntil(
      [&] {
        for (const Json& j : Find(ServerLines(server.LogTail(size_t{1} << 24)), "rpc", "")) {
          if (j["code"] == "UNAUTHENTICATED" && j["tenant"] == "-") return true;
        }
        return false;
      },
      absl::Seconds(5)));
}

TEST(LoggingTest, InfoLevelWritesNoRpcLinesAndTextFormatIsNotJson) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{.data_dir = dir.Sub("data"), .api_keys = {AliceFlag()}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  std::unique_ptr<Client> client = server.NewClient(kAliceKey);
  ASSERT_TRUE(client->ListDatasets(v1::ListDatasetsRequest()).ok());
  const std::string log = server.LogTail(size_t{1} << 20);
  EXPECT_THAT(log, ::testing::HasSubstr(" info oft_server: serving gRPC on port "));
  EXPECT_THAT(log, ::testing::Not(::testing::HasSubstr("rpc method=")));
}

}  // namespace
}  // namespace oft::testing
