// The kernel self-check's outcome is visible outside the process: the gRPC health service
// answers "oft.kernel/<device>/<kernel>" SERVING while the optimized kernel is in use and
// NOT_SERVING when the composite path is, and the startup log names each kernel's path
// (issue 13, "Health and logs"). The CPU stands in for a GPU: the same names and lines.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/health_check.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using ::testing::HasSubstr;

const char* const kKernels[] = {"build_rotation", "build_rotation_backward", "block_rotate",
                                "block_rotate_backward", "gathered_block_rotate",
                                "nf4_dequantize"};

TEST(KernelHealthTest, EveryKernelIsServingAndTheLogNamesItsPath) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{.data_dir = dir.Sub("data"), .api_keys = {AliceFlag()}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  for (const char* kernel : kKernels) {
    EXPECT_EQ(HealthCheck(channel, std::string("oft.kernel/cpu/") + kernel), 1) << kernel;
  }
  EXPECT_EQ(HealthCheck(channel, "oft.kernel/cpu/no_such_kernel"), -1);
  const std::string log = server.LogTail(1 << 16);
  EXPECT_THAT(log, HasSubstr("kernel self-check: "));
  for (const char* kernel : kKernels) EXPECT_THAT(log, HasSubstr(absl::StrCat(" ", kernel, "=kernel")));
}

TEST(KernelHealthTest, ModeOffTakesTheCompositePathAndSaysSo) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{.data_dir = dir.Sub("data"),
                                            .api_keys = {AliceFlag()},
                                            .extra_flags = {"--cuda_kernels=off"}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(HealthCheck(channel, ""), 1);  // the server itself serves
  for (const char* kernel : kKernels) {
    EXPECT_EQ(HealthCheck(channel, std::string("oft.kernel/cpu/") + kernel), 2) << kernel;
  }
  const std::string log = server.LogTail(1 << 16);
  for (const char* kernel : kKernels) EXPECT_THAT(log, HasSubstr(absl::StrCat(" ", kernel, "=composite")));
}

}  // namespace
}  // namespace oft::testing
