// The self-check's outcome reaches /metrics: a wrong CPU kernel injected through the test
// hook shows up as result="mismatch" and path="composite" for that kernel, the others as
// pass / kernel; and the op then serves the composite result.
#include "server/metrics/kernel_check_export.h"

#include <string>

#include "ATen/ATen.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/oft/kernel_registry.h"
#include "server/oft/ops.h"
#include "server/oft/ops_reference.h"

namespace oft {
namespace {

at::Tensor TransposedBlockRotate(const at::Tensor& x, const at::Tensor& rotation) {
  return reference::BlockRotateForward(x, rotation.transpose(1, 2).contiguous());
}

TEST(KernelCheckExportTest, FailedKernelIsExportedAndBypassed) {
  ResetKernelPaths();
  testing::ScopedOptimizedKernel wrong(KernelId::kBlockRotate, c10::kCPU,
                                       EraseKernel<BlockRotateFn>(&TransposedBlockRotate));
  KernelSelfCheckOptions options;
  options.devices = {"cpu"};
  options.log = [](const std::string&) {};
  auto report = RunKernelSelfCheck(options);
  ASSERT_TRUE(report.ok()) << report.status();

  prometheus::Registry registry;
  ServiceMetrics metrics(registry);
  ExportKernelSelfCheck(*report, metrics);
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  for (const char* line : {
           "oft_kernel_self_check{device=\"cpu\",dtype=\"bfloat16\",kernel=\"block_rotate\","
           "result=\"mismatch\"} 1",
           "oft_kernel_self_check{device=\"cpu\",dtype=\"float32\",kernel=\"block_rotate\","
           "result=\"mismatch\"} 1",
           "oft_kernel_self_check{device=\"cpu\",dtype=\"float32\",kernel=\"block_rotate_backward\","
           "result=\"pass\"} 1",
           "oft_kernel_path{device=\"cpu\",kernel=\"block_rotate\",path=\"composite\"} 1",
           "oft_kernel_path{device=\"cpu\",kernel=\"build_rotation\",path=\"kernel\"} 1",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "\n" << text;
  }
  EXPECT_EQ(text.find("kernel=\"block_rotate\",path=\"kernel\""), std::string::npos);

  const at::Tensor x = at::randn({4, 32});
  const at::Tensor rotation = reference::BuildRotationForward(0.1 * at::randn({2, 120}), 16, 5, true);
  EXPECT_TRUE(at::equal(BlockRotate(x, rotation), reference::BlockRotateForward(x, rotation)));
  ResetKernelPaths();
}

}  // namespace
}  // namespace oft
