// FoldedOftLinears (folded_linear.h) against the input-centric composition it replaces,
// at::linear(BlockRotate(x, R), W, b) through autograd in fp64: outputs and the gradients
// of x, the packed skew parameters (through BuildRotation), and the biases. R comes from the
// Cayley-Neumann series with parameters large enough that R is visibly not orthogonal, so a
// backward that took R^{-T} as R would fail.
#include "server/model/folded_linear.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/autocast_mode.h"
#include "ATen/core/grad_mode.h"
#include "server/model/cpu_linear.h"
#include "server/oft/ops.h"

namespace oft {
namespace {

double MaxRelErr(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

struct Case {
  at::ScalarType dtype;
  int64_t tokens, in, block;
  std::vector<int64_t> outs;  // one Linear per entry
  bool shared, bias, x_grad;
  double tol;
  bool fast = false;  // the CPU training GEMM library (cpu_linear.h)
};

// The input-centric reference in fp64 (values and gradients), and FoldedOftLinears in
// c.dtype: each within c.tol of the reference relative to the tensor's largest entry, or
// within twice the error of input-centric run in c.dtype.
void Check(const Case& c) {
  SCOPED_TRACE(testing::Message() << c.dtype << " T=" << c.tokens << " in=" << c.in << " b="
                                  << c.block << " m=" << c.outs.size() << " shared=" << c.shared
                                  << " bias=" << c.bias << " x_grad=" << c.x_grad
                                  << " fast=" << c.fast);
  at::manual_seed(11);
  const auto opt = at::TensorOptions().dtype(c.dtype);
  const auto rdt = c.dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t rows = c.shared ? 1 : c.in / c.block, n = c.block * (c.block - 1) / 2;
  const at::Tensor x0 = at::randn({2, c.tokens / 2, c.in}, opt);
  // Leaves: [0] in c.dtype (fp32 rotation parameters) for the folded run, [1] fp64 copies
  // for the reference, [2] in c.dtype for input-centric in c.dtype (its own rounding).
  std::vector<at::Tensor> packed[3], biases[3];
  std::vector<at::Tensor> weights, dys;
  for (int64_t out : c.outs) {
    const at::Tensor p = 0.15 * at::randn({rows, n}, at::TensorOptions().dtype(rdt));
    const at::Tensor b = at::randn({out}, opt);
    for (int k = 0; k < 3; ++k) {
      const auto dt = k == 1 ? at::kDouble : p.scalar_type();
      packed[k].push_back(p.to(dt).clone().requires_grad_(true));
      biases[k].push_back(c.bias ? b.to(k == 1 ? at::kDouble : c.dtype).clone().requires_grad_(true)
                                 : at::Tensor());
    }
    weights.push_back(at::randn({out, c.in}, opt) / 8);
    dys.push_back(at::randn({2, c.tokens / 2, out}, opt));
  }
  at::Tensor xr = x0.to(at::kDouble).clone().requires_grad_(c.x_grad);
  at::Tensor xf = x0.clone().requires_grad_(c.x_grad), xi = x0.clone().requires_grad_(c.x_grad);
  std::vector<FoldedOftInput> in;
  std::vector<at::Tensor> ref_y, ic_y;
  at::Tensor ref_loss = at::zeros({}, at::kDouble), ic_loss = at::zeros({}, at::kDouble);
  for (size_t j = 0; j < c.outs.size(); ++j) {
    const at::Tensor rot = BuildRotation(packed[1][j], c.block, 5, true);
    if (j == 0) {
      const at::Tensor r0 = rot[0].detach();
      const double off = (r0.t().mm(r0) - at::eye(c.block, r0.options())).abs().max().item<double>();
      ASSERT_GT(off, 1e-4) << "R is orthogonal to rounding: the test would not see R^-T vs R";
    }
    const at::Tensor& b = biases[1][j];
    ref_y.push_back(at::linear(BlockRotate(xr, rot), weights[j].to(at::kDouble),
                               b.defined() ? std::optional<at::Tensor>(b) : std::nullopt));
    ref_loss = ref_loss + (ref_y[j] * dys[j].to(at::kDouble)).sum();
    const at::Tensor& bi = biases[2][j];
    ic_y.push_back(at::linear(BlockRotate(xi, BuildRotation(packed[2][j], c.block, 5, true)),
                              weights[j], bi.defined() ? std::optional<at::Tensor>(bi) : std::nullopt));
    ic_loss = ic_loss + (ic_y[j] * dys[j]).sum().to(at::kDouble);
    in.push_back({weights[j], biases[0][j], BuildRotation(packed[0][j], c.block, 5, true)});
  }
  ref_loss.backward();
  ic_loss.backward();
  // Folded within c.tol of the fp64 reference, or within twice input-centric's own error.
  auto near = [&](const at::Tensor& got, const at::Tensor& ic, const at::Tensor& ref) {
    const double e = MaxRelErr(got.to(at::kDouble), ref);
    const double limit = std::max(c.tol, 2 * MaxRelErr(ic.to(at::kDouble), ref));
    return testing::AssertionResult(e <= limit) << e << " > " << limit;
  };
  const std::vector<at::Tensor> ys = FoldedOftLinears(xf, in, c.fast);
  ASSERT_EQ(ys.size(), c.outs.size());
  at::Tensor loss = at::zeros({}, at::kDouble);
  for (size_t j = 0; j < ys.size(); ++j) {
    EXPECT_EQ(ys[j].scalar_type(), c.dtype);
    EXPECT_EQ(ys[j].sizes(), ref_y[j].sizes());
    EXPECT_TRUE(near(ys[j], ic_y[j], ref_y[j])) << "y " << j;
    loss = loss + (ys[j] * dys[j]).sum().to(at::kDouble);
  }
  loss.backward();
  for (size_t j = 0; j < c.outs.size(); ++j) {
    EXPECT_TRUE(near(packed[0][j].grad(), packed[2][j].grad(), packed[1][j].grad()))
        << "oft_r grad " << j;
    if (c.bias) {
      EXPECT_TRUE(near(biases[0][j].grad(), biases[2][j].grad(), biases[1][j].grad()))
          << "bias grad " << j;
    }
  }
  if (c.x_grad) {
    EXPECT_TRUE(near(xf.grad(), xi.grad(), xr.grad())) << "x grad";
  }
  // Without grad: the same values, no graph.
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor> plain = FoldedOftLinears(x0, in, c.fast);
  for (size_t j = 0; j < plain.size(); ++j) EXPECT_TRUE(at::equal(plain[j], ys[j].detach()));
}

TEST(FoldedOftLinears, Fp64MatchesInputCentricValuesAndGradients) {
  for (const bool shared : {false, true}) {
    for (const bool bias : {false, true}) {
      Check({at::kDouble, 40, 24, 8, {16, 8, 24}, shared, bias, true, 1e-11});
      Check({at::kDouble, 40, 24, 6, {12}, shared, bias, false, 1e-11});
    }
  }
}

TEST(FoldedOftLinears, Fp32KernelsMatchInputCentric) {
  // b = 32 with 8 blocks: the CPU kernels, and the fused Gram of a sibling group.
  Check({at::kFloat, 512, 256, 32, {256, 128, 128}, false, false, true, 1e-4});
  Check({at::kFloat, 512, 256, 32, {64}, false, true, false, 1e-4});
  Check({at::kFloat, 300, 256, 32, {96, 200}, true, false, true, 1e-4});
  if (ActiveCpuGemm() == CpuGemm::kOneDnn) {
    Check({at::kFloat, 512, 256, 32, {256, 128, 128}, false, true, true, 1e-4, /*fast=*/true});
  }
}

TEST(FoldedOftLinears, AnUnusedOutputContributesNothing) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({64, 32}).requires_grad_(true);
  const at::Tensor p0 = (0.1 * at::randn({4, 28})).requires_grad_(true);
  const at::Tensor p1 = (0.1 * at::randn({4, 28})).requires_grad_(true);
  const at::Tensor w0 = at::randn({16, 32}), w1 = at::randn({16, 32});
  const auto ys = FoldedOftLinears(
      x, {{w0, {}, BuildRotation(p0, 8, 5, true)}, {w1, {}, BuildRotation(p1, 8, 5, true)}}, false);
  ys[0].sum().backward();
  ASSERT_TRUE(p0.grad().defined());
  EXPECT_FALSE(p1.grad().defined() && p1.grad().abs().max().item<double>() > 0);
  const at::Tensor xr = x.detach().clone().requires_grad_(true);
  at::linear(BlockRotate(xr, BuildRotation(p0, 8, 5, true)), w0).sum().backward();
  EXPECT_LE(MaxRelErr(x.grad(), xr.grad()), 1e-5);
}

TEST(FoldedOftLinears, PaysWhenTheTokensReachTheOutputs) {
  EXPECT_TRUE(FoldedOftPays(2048, 688));
  EXPECT_TRUE(FoldedOftPays(688, 688));
  EXPECT_FALSE(FoldedOftPays(687, 688));
  EXPECT_FALSE(FoldedOftPays(1, 256));
}

TEST(FoldedOftLinears, AppliesOnlyToMatchingDenseInputs) {
  const at::Tensor x = at::randn({8, 32}), w = at::randn({16, 32}), r = at::randn({4, 8, 8});
  EXPECT_TRUE(FoldedOftApplies(x, w, {}, r));
  EXPECT_TRUE(FoldedOftApplies(x, w, at::randn({16}), at::randn({1, 8, 8})));
  EXPECT_FALSE(FoldedOftApplies(x.to(at::kBFloat16), w, {}, r));          // dtypes differ
  // bf16 / fp16 stay input-centric (folded_linear.h: rounding W' and dx to 8 bits).
  EXPECT_FALSE(FoldedOftApplies(x.to(at::kBFloat16), w.to(at::kBFloat16), {}, r));
  EXPECT_FALSE(FoldedOftApplies(x.to(at::kHalf), w.to(at::kHalf), {}, r));
  EXPECT_FALSE(FoldedOftApplies(x, w.clone().requires_grad_(true), {}, r));  // weight trains
  EXPECT_FALSE(FoldedOftApplies(x, w, {}, at::randn({3, 8, 8})));          // 3 * 8 != 32
  EXPECT_FALSE(FoldedOftApplies(x, w, {}, r.to(at::kDouble)));             // rotation dtype
  EXPECT_FALSE(FoldedOftApplies(x, w, at::randn({15}), r));                // bias shape
  EXPECT_FALSE(FoldedOftApplies(at::randn({8, 31}), w, {}, r));            // x width
  EXPECT_THROW(FoldedOftLinears(x, {{w, {}, at::randn({3, 8, 8})}}, false), c10::Error);
  at::autocast::set_autocast_enabled(at::kCPU, true);
  EXPECT_FALSE(FoldedOftApplies(x, w, {}, r));  // autocast: the base runs in bf16
  at::autocast::set_autocast_enabled(at::kCPU, false);
}

}  // namespace
}  // namespace oft
