// The one place that converts between absl::Status and grpc::Status (both directions).
// Service handlers return ToGrpcStatus(logic_status); the client library turns what the
// server sent back into absl::Status with FromGrpcStatus. Codes map one to one (gRPC and
// Abseil share the canonical code numbering). Messages pass through unchanged up to
// kMaxStatusMessageBytes; a longer one (an error quoting a huge client value) is cut with
// Echo(), so every status fits gRPC's metadata limit and keeps its code instead of turning
// into RESOURCE_EXHAUSTED.
#ifndef OFT_SERVER_COMMON_GRPC_STATUS_H_
#define OFT_SERVER_COMMON_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"
#include "server/common/echo.h"  // kMaxStatusMessageBytes

namespace oft {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace oft

#endif  // OFT_SERVER_COMMON_GRPC_STATUS_H_
