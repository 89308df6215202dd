// CpuLinear (cpu_linear.h) against at::linear, forward and input gradient, in whichever
// library OFT_CPU_GEMM selects (ctest runs this binary once per library).
#include "server/model/cpu_linear.h"

#include <gtest/gtest.h>

#include "ATen/ATen.h"
#include "ATen/autocast_mode.h"
#include "ATen/core/grad_mode.h"

namespace oft {
namespace {

double MaxRelErr(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

TEST(CpuLinear, MatchesAtLinearForwardAndInputGradient) {
  at::manual_seed(4);
  at::Tensor x0 = at::randn({3, 40, 48});
  at::Tensor w = at::randn({24, 48});
  at::Tensor b = at::randn({24});
  at::Tensor dy = at::randn({3, 40, 24});
  for (const bool with_bias : {false, true}) {
    const at::Tensor bias = with_bias ? b : at::Tensor();
    at::Tensor x1 = x0.clone().requires_grad_(true), x2 = x0.clone().requires_grad_(true);
    ASSERT_EQ(CpuLinearApplies(x2, w, bias), ActiveCpuGemm() == CpuGemm::kOneDnn) << CpuGemmName(ActiveCpuGemm());
    at::Tensor ref = at::linear(x1, w, with_bias ? std::optional<at::Tensor>(b) : std::nullopt);
    ref.backward(dy);
    at::Tensor got = CpuLinear(x2, w, bias);
    got.backward(dy);
    EXPECT_EQ(got.sizes(), ref.sizes());
    EXPECT_LE(MaxRelErr(got, ref), 1e-5) << with_bias;
    EXPECT_LE(MaxRelErr(x2.grad(), x1.grad()), 1e-5) << with_bias;
    at::NoGradGuard no_grad;
    EXPECT_LE(MaxRelErr(CpuLinear(x0, w, bias), ref.detach()), 1e-5);
  }
  EXPECT_LE(MaxRelErr(CpuGemmNT(x0.view({-1, 48}), w), at::mm(x0.view({-1, 48}), w.t())), 1e-5);
}

TEST(CpuLinear, AppliesOnlyToFrozenFp32CpuInputsWithEnoughRows) {
  if (ActiveCpuGemm() != CpuGemm::kOneDnn) GTEST_SKIP() << "MKL selected: CpuLinear never applies";
  const at::Tensor w = at::randn({8, 16});
  auto x = [](int64_t rows, int64_t cols) { return at::randn({rows, cols}).requires_grad_(true); };
  EXPECT_TRUE(CpuLinearApplies(x(kCpuLinearMinRows, 16), w, {}));
  EXPECT_FALSE(CpuLinearApplies(x(kCpuLinearMinRows - 1, 16), w, {}));
  EXPECT_FALSE(CpuLinearApplies(x(64, 16).to(at::kBFloat16), w.to(at::kBFloat16), {}));
  EXPECT_FALSE(CpuLinearApplies(x(64, 16), w.clone().requires_grad_(true), {}));
  EXPECT_FALSE(CpuLinearApplies(x(64, 16), w, at::randn({8}).requires_grad_(true)));
  EXPECT_FALSE(CpuLinearApplies(x(64, 15), w, {}));
  {  // CPU autocast: at::linear's autocast dtype is kept.
    at::autocast::set_autocast_enabled(at::kCPU, true);
    EXPECT_FALSE(CpuLinearApplies(x(64, 16), w, {}));
    at::autocast::set_autocast_enabled(at::kCPU, false);
  }
}

}  // namespace
}  // namespace oft
