// UploadToDevice (server/model/host_upload.h): host-built ids, positions and row indices
// reach the device with their values, dtype and shape; on the CPU nothing is copied; a
// source that is not on the CPU is refused. The non-blocking part needs a GPU: where one is
// present, the CUDA case runs too.
#include "server/model/host_upload.h"

#include <gtest/gtest.h>

#include <vector>

#include "ATen/ATen.h"
#include "ATen/Context.h"

namespace oft {
namespace {

TEST(HostUploadTest, CpuTargetKeepsTheSameStorage) {
  const at::Tensor host = at::arange(6, at::kLong).view({2, 3});
  const at::Tensor got = UploadToDevice(host, c10::Device(c10::kCPU));
  EXPECT_TRUE(got.is_same(host));
}

TEST(HostUploadTest, VectorsKeepValuesAndDtype) {
  const at::Tensor ids = UploadToDevice(std::vector<int64_t>{3, -1, 7}, at::kLong, c10::kCPU);
  EXPECT_EQ(ids.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(ids, at::tensor(std::vector<int64_t>{3, -1, 7}, at::kLong)));
  const at::Tensor as_float = UploadToDevice(std::vector<int64_t>{5, 6}, at::kFloat, c10::kCPU);
  EXPECT_EQ(as_float.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(as_float, at::tensor(std::vector<float>{5, 6}, at::kFloat)));
  const at::Tensor pos = UploadToDevice(std::vector<float>{0.5f, 4.0f}, c10::kCPU);
  EXPECT_EQ(pos.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(pos, at::tensor(std::vector<float>{0.5f, 4.0f}, at::kFloat)));
}

TEST(HostUploadTest, SourceMustBeOnTheCpu) {
  const at::Tensor meta = at::empty({2}, at::TensorOptions().device(c10::kMeta));
  EXPECT_THROW(UploadToDevice(meta, c10::Device(c10::kCPU)), c10::Error);
}

TEST(HostUploadTest, CudaGetsTheValues) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const c10::Device cuda("cuda:0");
  std::vector<int64_t> values(1000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<int64_t>(i * 7 % 13);
  const at::Tensor got = UploadToDevice(values, at::kLong, cuda);  // host tensor dropped here
  EXPECT_TRUE(got.is_cuda());
  EXPECT_TRUE(at::equal(got.cpu(), at::tensor(values, at::kLong)));
  const at::Tensor pinned = at::ones({4}, at::TensorOptions().pinned_memory(true));
  EXPECT_TRUE(at::equal(UploadToDevice(pinned, cuda).cpu(), pinned));
}

}  // namespace
}  // namespace oft
