// One server per data dir and per port, and the startup sweep (leveldb's LOCK + recovery):
// a second oft_server on the same --data_dir exits at once naming the holder's pid, a second
// one on the same port fails to bind (no SO_REUSEPORT sharing), and an upload cut by a
// SIGKILL leaves no partial file after the restart.
#include <filesystem>
#include <memory>
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

}  // namespace
}  // namespace oft::testing
