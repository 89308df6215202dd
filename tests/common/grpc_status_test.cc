#include "server/common/grpc_status.h"

#include <gtest/gtest.h>

#include <string>

namespace oft {
namespace {

TEST(GrpcStatus, CodeAndMessagePassThrough) {
  grpc::Status g = ToGrpcStatus(absl::InvalidArgumentError("spec.priority must be in [0, 100]"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(g.error_message(), "spec.priority must be in [0, 100]");
  absl::Status back = FromGrpcStatus(g);
  EXPECT_EQ(back, absl::InvalidArgumentError("spec.priority must be in [0, 100]"));
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

// An error quoting a huge client value keeps its code and fits gRPC's metadata limit.
TEST(GrpcStatus, HugeMessagesAreCut) {
  const std::string huge = "spec.base_model: unknown model " + std::string(20000, 'm');
  grpc::Status g = ToGrpcStatus(absl::FailedPreconditionError(huge));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_LE(g.error_message().size(), kMaxStatusMessageBytes + 32);
  EXPECT_EQ(g.error_message().rfind("spec.base_model: unknown model mmm", 0), 0u);
  EXPECT_NE(g.error_message().find("…(20031 bytes)"), std::string::npos) << g.error_message().substr(2000);
}

}  // namespace
}  // namespace oft
