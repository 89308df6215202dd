// CUDA NF4 dequantization against the CPU reference (ctest label `gpu`). Skips when
// no CUDA device is present.
#include <gtest/gtest.h>

#include <vector>

#include "ATen/ATen.h"
#include "server/quant/nf4.h"
#include "server/quant/qoft_linear.h"

namespace oft {
namespace {

class Nf4CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Nf4CudaKernelBuilt());
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  }
};

Nf4Tensor QuantizeOrDie(const at::Tensor& w, const Nf4Options& options = {}) {
  auto q = Quantize(w, options);
  EXPECT_TRUE(q.ok()) << q.status();
  return *std::move(q);
}

TEST_F(Nf4CudaTest, DequantizeIsBitIdenticalToTheCpuReference) {
  at::manual_seed(1);
  struct Case {
    std::vector<int64_t> shape;
    int64_t block_size;
    bool double_quant;
  };
  const Case cases[] = {{{1}, 64, false},         {{63}, 64, false},       {{5, 13}, 64, true},
                        {{127, 129}, 64, false},  {{300, 128}, 64, true},  {{33, 70}, 8, true},
                        {{1024, 1024}, 64, true}, {{3, 4097}, 4096, false}};
  for (const Case& c : cases) {
    const at::Tensor w = at::randn(c.shape) * 3;
    const Nf4Tensor cpu = QuantizeOrDie(w, {.block_size = c.block_size, .double_quant = c.double_quant});
    const Nf4Tensor gpu = cpu.To(at::Device(at::kCUDA, 0));
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
      SCOPED_TRACE(::testing::Message() << "numel " << w.numel() << " dq " << c.double_quant
                                        << " dtype " << c10::toString(dtype));
      const at::Tensor expected = Dequantize(cpu, dtype);
      const at::Tensor actual = Dequantize(gpu, dtype);
      ASSERT_TRUE(actual.is_cuda());
      EXPECT_EQ(actual.scalar_type(), dtype);
      EXPECT_TRUE(at::equal(actual.cpu(), expected));
    }
  }
}

TEST_F(Nf4CudaTest, QuantizeOnCudaMatchesCpu) {
  at::manual_seed(2);
  const at::Tensor w = at::randn({257, 96});
  const Nf4Tensor cpu = QuantizeOrDie(w);
  const Nf4Tensor gpu = QuantizeOrDie(w.cuda());
  EXPECT_TRUE(gpu.codes.is_cuda());
  EXPECT_TRUE(at::equal(gpu.codes.cpu(), cpu.codes));
  EXPECT_TRUE(at::equal(gpu.absmax.cpu(), cpu.absmax));
  // Double quant: the mean may be reduced in another order, so compare decoded values.
  const Nf4Tensor cpu_dq = QuantizeOrDie(w, {.double_quant = true});
  const Nf4Tensor gpu_dq = QuantizeOrDie(w.cuda(), {.double_quant = true});
  const double step = cpu_dq.absmax_scale.max().item<double>();
  EXPECT_LE((DequantizeAbsmax(gpu_dq).cpu() - DequantizeAbsmax(cpu_dq)).abs().max().item<double>(),
            step * 1.01);
}

TEST_F(Nf4CudaTest, Nf4LinearForwardAndInputGradMatchCpu) {
  at::manual_seed(3);
  const at::Tensor w = at::randn({64, 96}) * 0.1;
  const at::Tensor b = at::randn({64});
  auto cpu = Nf4Linear::Create(w, b);
  auto gpu = Nf4Linear::Create(w.cuda(), b.cuda());
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  at::Tensor xc = at::randn({4, 96}).requires_grad_(true);
  at::Tensor xg = xc.detach().cuda().requires_grad_(true);
  const at::Tensor yc = (*cpu)->Forward(xc);
  const at::Tensor yg = (*gpu)->Forward(xg);
  // Same decoded weight; only the GEMM differs (TF32 is off by default for matmul).
  EXPECT_TRUE(at::allclose(yg.cpu(), yc, 1e-4, 1e-4));
  const at::Tensor g = at::randn({4, 64});
  yc.backward(g);
  yg.backward(g.cuda());
  EXPECT_TRUE(at::allclose(xg.grad().cpu(), xc.grad(), 1e-4, 1e-4));
}

}  // namespace
}  // namespace oft
