// FusedRmsNorm against the ATen composition transformers uses (pow, mean, rsqrt, products),
// forward and backward, for both weight conventions.
#include "server/model/rms_norm_cpu.h"

#include <gtest/gtest.h>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "ATen/core/grad_mode.h"
#include "server/model/decoder_ops.h"

namespace oft {
namespace {

at::Tensor Composite(const at::Tensor& x, const at::Tensor& w, double eps, NormKind kind) {
  auto normed = x * at::rsqrt(x.pow(2).mean({-1}, true) + eps);
  return kind == NormKind::kOnePlusWeight ? normed * (1.0 + w) : w * normed;
}

double MaxRelErr(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

class FusedRmsNormTest : public ::testing::TestWithParam<NormKind> {};

TEST_P(FusedRmsNormTest, MatchesCompositeForwardAndBackward) {
  at::manual_seed(1);
  const NormKind kind = GetParam();
  at::Tensor x0 = at::randn({3, 5, 37}) * 3;  // 37: not a multiple of the 8 lanes
  at::Tensor w0 = at::randn({37});
  at::Tensor dy = at::randn({3, 5, 37});
  at::Tensor x1 = x0.clone().requires_grad_(true), w1 = w0.clone().requires_grad_(true);
  at::Tensor ref = Composite(x1, w1, 1e-5, kind);
  ref.backward(dy);
  at::Tensor x2 = x0.clone().requires_grad_(true), w2 = w0.clone().requires_grad_(true);
  at::Tensor got = FusedRmsNorm(x2, w2, 1e-5, kind);
  got.backward(dy);
  EXPECT_EQ(got.sizes(), ref.sizes());
  EXPECT_LE(MaxRelErr(got, ref), 1e-6);
  EXPECT_LE(MaxRelErr(x2.grad(), x1.grad()), 1e-5);
  EXPECT_LE(MaxRelErr(w2.grad(), w1.grad()), 1e-5);
  // RmsNorm (decoder_ops.h) routes fp32 CPU tensors here: same values.
  EXPECT_TRUE(at::equal(RmsNorm(x0, w0, 1e-5, kind), FusedRmsNorm(x0, w0, 1e-5, kind)));
}

INSTANTIATE_TEST_SUITE_P(Kinds, FusedRmsNormTest,
                         ::testing::Values(NormKind::kWeight, NormKind::kOnePlusWeight));

TEST(FusedRmsNorm, FrozenWeightGetsNoGradientAndInputDoes) {
  at::Tensor x = at::randn({4, 16}).requires_grad_(true);
  at::Tensor w = at::randn({16});
  FusedRmsNorm(x, w, 1e-6, NormKind::kWeight).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  at::Tensor ref_x = x.detach().clone().requires_grad_(true);
  Composite(ref_x, w, 1e-6, NormKind::kWeight).sum().backward();
  EXPECT_LE(MaxRelErr(x.grad(), ref_x.grad()), 1e-5);
}

TEST(FusedRmsNorm, WeightGradientIsTheSameAtEveryThreadCountRun) {
  at::manual_seed(2);
  at::Tensor x0 = at::randn({301, 64});
  at::Tensor w0 = at::randn({64});
  auto dw = [&](int threads) {
    at::set_num_threads(threads);
    at::Tensor w = w0.clone().requires_grad_(true);
    FusedRmsNorm(x0, w, 1e-5, NormKind::kWeight).pow(2).sum().backward();
    return w.grad();
  };
  const at::Tensor one = dw(1), again = dw(1);
  EXPECT_TRUE(at::equal(one, again));
  EXPECT_LE(MaxRelErr(dw(2), one), 1e-5);
}

TEST(FusedRmsNorm, OnlyFp32CpuApplies) {
  EXPECT_TRUE(FusedRmsNormApplies(at::randn({2, 8}), at::randn({8})));
  EXPECT_FALSE(FusedRmsNormApplies(at::randn({2, 8}).to(at::kBFloat16), at::randn({8})));
  EXPECT_FALSE(FusedRmsNormApplies(at::randn({2, 8}), at::randn({7})));
  EXPECT_FALSE(FusedRmsNormApplies(at::randn({2, 8}).to(at::kDouble), at::randn({8}).to(at::kDouble)));
}

}  // namespace
}  // namespace oft
