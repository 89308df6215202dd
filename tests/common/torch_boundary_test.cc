// The LibTorch exception boundary: device allocation failures that are not the caching
// allocator's OutOfMemoryError (cuBLAS, a CUDA launch) are RESOURCE_EXHAUSTED too, so a job
// that hits them fails as OUT_OF_MEMORY instead of INTERNAL.
#include "server/common/torch_boundary.h"

#include "c10/util/Exception.h"
#include "gtest/gtest.h"

namespace oft {
namespace {

absl::Status Throwing(const char* message) {
  return TorchCall("step", [&]() -> absl::Status { 
    TORCH_CHECK(false, message);
    return absl::OkStatus();
  });
}

TEST(TorchBoundaryTest, DeviceAllocationFailuresAreResourceExhausted) {
  for (const char* m : {"CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
                        "CUDA error: out of memory", "cudaErrorMemoryAllocation at launch"}) {
    const absl::Status s = Throwing(m);
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << m << ": " << s;
    EXPECT_NE(s.message().find("out of device memory"), std::string::npos) << s;
  }
}

TEST(TorchBoundaryTest, OtherErrorsStayInternal) {
  EXPECT_EQ(Throwing("CUDA error: an illegal memory access was encountered").code(),
            absl::StatusCode::kInternal);
  const absl::Status oom = TorchCall("step", []() -> absl::Status {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB");
    return absl::OkStatus();
  });
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace oft
