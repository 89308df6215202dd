// The training precision decisions (precision.h), checked on a machine without a GPU.
#include "server/train/precision.h"

#include "ATen/autocast_mode.h"
#include "gtest/gtest.h"

namespace oft {
namespace {

ModelConfig WithDtype(const std::string& torch_dtype) {
  ModelConfig c;
  c.torch_dtype = torch_dtype;
  return c;
}

TEST(TrainingBaseDtypeTest, CudaTrainsInBf16AndNeverInFp16) {
  const c10::Device cuda("cuda:0"), cpu("cpu");
  // fp16 checkpoints have no loss scaling here: bf16 on CUDA, whatever the option says.
  EXPECT_EQ(TrainingBaseDtype(WithDtype("float16"), cuda, true), at::kBFloat16);
  EXPECT_EQ(TrainingBaseDtype(WithDtype("float16"), cuda, false), at::kBFloat16);
  EXPECT_EQ(TrainingBaseDtype(WithDtype("bfloat16"), cuda, true), at::kBFloat16);
  // fp32 checkpoints: the frozen base is cast once at load (not at every forward).
  EXPECT_EQ(TrainingBaseDtype(WithDtype("float32"), cuda, true), at::kBFloat16);
  EXPECT_EQ(TrainingBaseDtype(WithDtype(""), cuda, true), at::kBFloat16);
  EXPECT_EQ(TrainingBaseDtype(WithDtype("float32"), cuda, false), at::kFloat);
  // The CPU trains in fp32.
  for (const char* d : {"float16", "bfloat16", "float32"}) {
    EXPECT_EQ(TrainingBaseDtype(WithDtype(d), cpu, true), at::kFloat) << d;
  }
}

TEST(TrainingBaseDtypeTest, AutocastOnlyForAnFp32BaseOnCuda) {
  const c10::Device cuda("cuda:0"), cpu("cpu");
  EXPECT_TRUE(UseBf16Autocast(cuda, at::kFloat, true));
  EXPECT_FALSE(UseBf16Autocast(cuda, at::kFloat, false));
  EXPECT_FALSE(UseBf16Autocast(cuda, at::kBFloat16, true));  // already bf16: nothing to cast
  EXPECT_FALSE(UseBf16Autocast(cpu, at::kFloat, true));
  EXPECT_TRUE(UseBf16Autocast(cpu, at::kFloat, true, /*force_cpu=*/true));
  EXPECT_TRUE(CheckTrainableDtype(at::kBFloat16).ok());
  EXPECT_TRUE(CheckTrainableDtype(at::kFloat).ok());
  EXPECT_EQ(CheckTrainableDtype(at::kHalf).code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainingBaseDtypeTest, Tf32OnlyOnCuda) {
  EXPECT_TRUE(UseTf32(c10::Device("cuda:1")));
  EXPECT_FALSE(UseTf32(c10::Device("cpu")));
  ConfigureMatmulPrecision(c10::Device("cpu"));  // no-op off CUDA
}

TEST(AutocastScopeTest, RestoresFlagAndDtype) {
  at::autocast::set_autocast_dtype(at::kCPU, at::kHalf);
  {
    AutocastScope scope(true, c10::kCPU);
    EXPECT_TRUE(at::autocast::is_autocast_enabled(at::kCPU));
    EXPECT_EQ(at::autocast::get_autocast_dtype(at::kCPU), at::kBFloat16);
  }
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  EXPECT_EQ(at::autocast::get_autocast_dtype(at::kCPU), at::kHalf);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
}

}  // namespace
}  // namespace oft
