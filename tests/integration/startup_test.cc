// What oft_server refuses at start (issue 16): a server nobody could call (no API key and no
// --allow_unauthenticated) exits with status 1 and says how to fix it, instead of starting
// silently and rejecting every call. Keys given at an earlier start are kept in the data dir
// and count; --allow_unauthenticated lets every caller in.
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using ::testing::HasSubstr;

TEST(StartupTest, NoApiKeyAndNoAllowUnauthenticatedRefusesToStart) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{.data_dir = dir.Sub("data")});
  absl::Status st = server.Start();
  ASSERT_FALSE(st.ok()) << "a server with no API key started";
  EXPECT_THAT(std::string(st.message()), HasSubstr("oft_server exited with 1 before serving"));
  const std::string log = server.LogTail();
  EXPECT_THAT(log, HasSubstr("cannot start"));
  EXPECT_THAT(log, HasSubstr("no API keys"));
  EXPECT_THAT(log, HasSubstr("--api_key=TENANT:KEY"));
  EXPECT_THAT(log, HasSubstr("--allow_unauthenticated"));
}

TEST(StartupTest, KeysFromAnEarlierStartAreEnough) {
  TempDir dir;
  ServerProcess first(ServerProcessOptions{.data_dir = dir.Sub("data"), .api_keys = {AliceFlag()}});
  ASSERT_TRUE(first.Start().ok()) << first.LogTail();
  absl::StatusOr<int> code = first.Terminate(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  ASSERT_EQ(*code, 0);

  ServerProcess again(ServerProcessOptions{.data_dir = dir.Sub("data")});
  ASSERT_TRUE(again.Start().ok()) << again.LogTail();
  std::unique_ptr<Client> alice = again.NewClient(kAliceKey);
  ASSERT_NE(alice, nullptr);
  absl::StatusOr<v1::ListDatasetsResponse> list = alice->ListDatasets(v1::ListDatasetsRequest());
  EXPECT_TRUE(list.ok()) << list.status();
}

TEST(StartupTest, AllowUnauthenticatedStartsWithoutKeysAndLetsCallersIn) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{.data_dir = dir.Sub("data"),
                                            .extra_flags = {"--allow_unauthenticated"}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  std::unique_ptr<Client> anyone = server.NewClient("");
  ASSERT_NE(anyone, nullptr);
  absl::StatusOr<v1::ListDatasetsResponse> list = anyone->ListDatasets(v1::ListDatasetsRequest());
  EXPECT_TRUE(list.ok()) << list.status();
}

}  // namespace
}  // namespace oft::testing
