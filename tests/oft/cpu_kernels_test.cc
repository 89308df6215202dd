// The fp32 CPU kernels on every instruction-set path (server/oft/cpu_isa.h), each forced in
// turn, against the fp64 reference (the spec): block rotation, input gradient, rotation
// gradient, the gathered per-row rotation and the fused Cayley-Neumann build. A path this
// CPU cannot run is skipped with a message naming it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "server/oft/cpu_isa.h"
#include "server/oft/ops.h"
#include "server/oft/ops_cpu.h"
#include "server/oft/ops_cpu_kernels.h"
#include "server/oft/ops_reference.h"

namespace oft {
namespace {

using cpu::Isa;

double MaxAbs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

class CpuKernelsTest : public testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!cpu::CpuSupports(GetParam())) {
      GTEST_SKIP() << "this CPU (" << cpu::CpuModelName() << ") cannot run the "
                   << cpu::IsaName(GetParam()) << " path";
    }
    previous_ = cpu::ActiveIsa();
    ASSERT_TRUE(cpu::SetIsaForTesting(GetParam()).ok());
    ASSERT_EQ(cpu::internal::ActiveKernels().isa, GetParam());
  }
  void TearDown() override {
    if (cpu::CpuSupports(GetParam())) {
      ASSERT_TRUE(cpu::SetIsaForTesting(previous_).ok());
    }
  }
  Isa previous_ = Isa::kGeneric;
};

// Block sizes that are and are not multiples of every path's vector (43: overlapping column
// and row tails everywhere), token counts around every path's tile heights, shared and
// per-block rotations, fp32 and bf16 activations, and enough tokens that threads split them.
TEST_P(CpuKernelsTest, RotationAndGradientsMatchTheFp64Reference) {
  for (int64_t b : {16, 32, 43, 64}) {
    for (int64_t tokens : {1, 5, 7, 130, 1031}) {
      for (int64_t rows : {1, 3}) {
        for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
          torch::manual_seed(b * 1000 + tokens + rows);
          const int64_t d = 3 * b;
          auto x = torch::randn({tokens, d}).to(dt);
          auto r = torch::randn({rows, b, b}) / std::sqrt(static_cast<double>(b));
          auto g = torch::randn({tokens, d}).to(dt);
          const double tol = dt == torch::kFloat32 ? 1e-4 : 4e-2;
          const std::string where = std::string(cpu::IsaName(GetParam())) + " b=" +
                                    std::to_string(b) + " tokens=" + std::to_string(tokens) +
                                    " rows=" + std::to_string(rows);
          auto y = cpu::BlockRotateForward(x, r);
          EXPECT_EQ(y.scalar_type(), dt);
          EXPECT_LT(MaxAbs(y, reference::BlockRotateForward(x.to(torch::kFloat64),
                                                            r.to(torch::kFloat64))),
                    tol * (dt == torch::kFloat32 ? 1 : 4))
              << where;
          auto [gx, gr] = cpu::BlockRotateBackward(g, x, r, true, true);
          auto [gx_ref, gr_ref] = reference::BlockRotateBackward(
              g.to(torch::kFloat64), x.to(torch::kFloat64), r.to(torch::kFloat64), true, true);
          EXPECT_LT(MaxAbs(gx, gx_ref), tol * (dt == torch::kFloat32 ? 1 : 4)) << where;
          // dR sums over tokens (and blocks when shared): scale the tolerance with the count.
          EXPECT_LT(MaxAbs(gr, gr_ref) / std::sqrt(static_cast<double>(tokens * (4 - rows))), 1e-4)
              << where;
          EXPECT_EQ(gr.sizes(), r.sizes());
        }
      }
    }
  }
}

// Large legal blocks (PEFT allows up to a few hundred) and the narrowest block each path's
// kernel takes: still the reference's values.
TEST_P(CpuKernelsTest, LargeAndNarrowBlocksMatchTheReference) {
  const int64_t narrow = cpu::internal::ActiveKernels().min_block;
  for (int64_t b : {narrow, narrow + 1, int64_t{128}, int64_t{200}}) {
    torch::manual_seed(b);
    const int64_t d = 2 * b, tokens = 37;
    auto x = torch::randn({tokens, d});
    auto r = torch::randn({2, b, b}) / std::sqrt(static_cast<double>(b));
    auto g = torch::randn({tokens, d});
    auto y = cpu::BlockRotateForward(x, r);
    EXPECT_LT(MaxAbs(y, reference::BlockRotateForward(x.to(torch::kFloat64), r.to(torch::kFloat64))),
              2e-4)
        << b;
    auto [gx, gr] = cpu::BlockRotateBackward(g, x, r, true, true);
    auto [gx_ref, gr_ref] = reference::BlockRotateBackward(
        g.to(torch::kFloat64), x.to(torch::kFloat64), r.to(torch::kFloat64), true, true);
    EXPECT_LT(MaxAbs(gx, gx_ref), 2e-4) << b;
    EXPECT_LT(MaxAbs(gr, gr_ref), 1e-3) << b;
  }
}

// A strided input gives the same rotation as its contiguous copy, and a token's result does
// not depend on how many tokens surround it (bitwise), on every path.
TEST_P(CpuKernelsTest, PerTokenDeterministic) {
  torch::manual_seed(7);
  for (int64_t b : {32, 43}) {
    const int64_t d = 4 * b;
    auto r = torch::randn({4, b, b});
    auto wide = torch::randn({37, 2 * d});
    auto x = wide.narrow(1, 5, d);  // row stride 2d
    ASSERT_FALSE(x.is_contiguous());
    auto y = cpu::BlockRotateForward(x, r);
    EXPECT_TRUE(torch::equal(y, cpu::BlockRotateForward(x.contiguous(), r)));
    for (int64_t t : {0, 3, 13, 36}) {
      EXPECT_TRUE(torch::equal(y[t], cpu::BlockRotateForward(x.narrow(0, t, 1), r)[0])) << b << " " << t;
    }
  }
}

// One input rotated by several rotations (q/k/v): the forward equals separate rotations bit
// for bit; the backward's summed input gradient and every dR_j match the fp64 reference,
// with one output unused (no gradient) and without the input gradient.
TEST_P(CpuKernelsTest, ManyRotationsOfOneInputMatchTheReference) {
  const int64_t r = std::max<int64_t>(4, at::get_num_threads());
  for (int64_t b : {32, 43}) {
    for (int64_t tokens : {5, 130, 1031}) {
      torch::manual_seed(b * 7 + tokens);
      const int64_t d = r * b;
      auto x = torch::randn({tokens, d});
      std::vector<torch::Tensor> rots, gs;
      for (int j = 0; j < 3; ++j) {
        rots.push_back(torch::randn({r, b, b}) / std::sqrt(static_cast<double>(b)));
        gs.push_back(torch::randn({tokens, d}));
      }
      const std::string where = std::string(cpu::IsaName(GetParam())) + " b=" +
                                std::to_string(b) + " tokens=" + std::to_string(tokens);
      ASSERT_TRUE(cpu::BlockRotateManyApplies(x, rots)) << where;
      auto ys = cpu::BlockRotateManyForward(x, rots);
      ASSERT_EQ(ys.size(), 3u);
      for (int j = 0; j < 3; ++j) {
        EXPECT_TRUE(torch::equal(ys[j], cpu::BlockRotateForward(x, rots[j]))) << where << " j=" << j;
      }
      // Output 1 unused: its gradient is undefined and contributes nothing.
      std::vector<torch::Tensor> grads{gs[0], torch::Tensor(), gs[2]};
      auto [gx, gr] = cpu::BlockRotateManyBackward(grads, x, rots, true, {true, true, false});
      auto x64 = x.to(torch::kFloat64);
      torch::Tensor gx_ref = torch::zeros_like(x64);
      for (int j : {0, 2}) {
        auto [gxj, grj] = reference::BlockRotateBackward(gs[j].to(torch::kFloat64), x64,
                                                         rots[j].to(torch::kFloat64), true, true);
        gx_ref += gxj;
        if (j == 0) {
          EXPECT_LT(MaxAbs(gr[0], grj) / std::sqrt(static_cast<double>(tokens)), 1e-4) << where;
        }
      }
      EXPECT_LT(MaxAbs(gx, gx_ref), 2e-4) << where;
      ASSERT_TRUE(gr[1].defined());
      EXPECT_EQ(gr[1].abs().max().item<float>(), 0.0f) << where;  // no gradient: zero dR
      EXPECT_FALSE(gr[2].defined()) << where;
      // Without the input gradient: the same dR, bit for bit.
      auto [no_gx, gr2] = cpu::BlockRotateManyBackward(grads, x, rots, false, {true, false, false});
      EXPECT_FALSE(no_gx.defined());
      EXPECT_TRUE(torch::equal(gr2[0], gr[0])) << where;
      // A single rotation with both gradients takes the same fused pass in BlockRotateBackward.
      auto [gx1, gr1] = cpu::BlockRotateBackward(gs[0], x, rots[0], true, true);
      EXPECT_TRUE(torch::equal(gr1, gr[0])) << where;
    }
  }
}

TEST_P(CpuKernelsTest, GatheredRotationMatchesTheReference) {
  for (int64_t b : {16, 43}) {
    for (int64_t rows : {1, 3}) {
      torch::manual_seed(b + rows);
      const int64_t d = 3 * b, n = 41;
      auto x = torch::randn({n, d});
      auto rot = torch::randn({4, rows, b, b}) / std::sqrt(static_cast<double>(b));
      auto index = torch::randint(-1, 4, {n}, torch::kLong);
      index.narrow(0, 10, 20).fill_(2);  // one long run
      auto fast = cpu::GatheredBlockRotateForward(x, rot, index);
      auto ref = reference::GatheredBlockRotateForward(x.to(torch::kFloat64),
                                                       rot.to(torch::kFloat64), index);
      EXPECT_LT(MaxAbs(fast, ref), 1e-4) << b << " " << rows;
    }
  }
}

// The served form (D = R - I in fp16, y = x + x D): the kernel against the fp64 rotation by
// R = D + I, across block sizes, token counts around every tile height, shared and
// per-block, strided rows; and through the gathered op, where it must be the path taken.
TEST_P(CpuKernelsTest, ServedDeltaFormMatchesTheReference) {
  const auto& k = cpu::internal::ActiveKernels();
  for (int64_t b : {16, 32, 43, 64}) {
    for (int64_t tokens : {1, 2, 3, 4, 5, 7, 9, 130}) {
      for (int64_t rows : {1, 3}) {
        torch::manual_seed(b * 100 + tokens * 3 + rows);
        const int64_t d = 3 * b;
        auto wide = torch::randn({tokens, d + 5});
        auto x = wide.narrow(1, 2, d);  // row stride d + 5
        auto delta = (torch::randn({rows, b, b}) * 0.2).to(torch::kHalf);
        auto y = torch::full({tokens, d}, 7.0f);
        k.rotate_delta_half(x.data_ptr<float>(), d + 5,
                            reinterpret_cast<const uint16_t*>(delta.data_ptr<at::Half>()),
                            rows == 1, tokens, d / b, b, y.data_ptr<float>(), d);
        auto r64 = delta.to(torch::kFloat64) + torch::eye(b, torch::kFloat64);
        auto ref = reference::BlockRotateForward(x.to(torch::kFloat64), r64);
        const std::string where = std::string(cpu::IsaName(GetParam())) + " b=" +
                                  std::to_string(b) + " tokens=" + std::to_string(tokens) +
                                  " rows=" + std::to_string(rows);
        EXPECT_LT(MaxAbs(y, ref), 1e-5) << where;
      }
    }
  }
  // The gathered op on fp32 x with fp16 D uses this kernel: bit-identical to calling it.
  torch::manual_seed(5);
  const int64_t b = 32, d = 4 * b;
  auto x = torch::randn({6, d});
  auto delta = (torch::randn({2, 4, b, b}) * 0.2).to(torch::kHalf);
  auto index = torch::tensor(std::vector<int64_t>{1, 1, 1, 1, 1, 1}, torch::kLong);
  auto y = torch::empty({6, d});
  k.rotate_delta_half(x.data_ptr<float>(), d,
                      reinterpret_cast<const uint16_t*>(delta.data_ptr<at::Half>()) + 4 * b * b,
                      false, 6, 4, b, y.data_ptr<float>(), d);
  EXPECT_TRUE(torch::equal(cpu::GatheredBlockRotateForward(x, delta, index, true), y));
}

// fp16 -> fp32 loads are exact for every kind of finite half (the generic path converts with
// integer bit moves): one-hot rows give y[j] = D[k, j] exactly for j != k.
TEST_P(CpuKernelsTest, HalfLoadsAreExact) {
  const int64_t b = 32;
  const std::vector<float> values = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, -65504.0f,
                                     6.103515625e-05f /* smallest normal */,
                                     5.9604644775390625e-08f /* smallest subnormal */,
                                     -3.0398368835449219e-05f /* subnormal */, 0.333251953125f,
                                     -1.9990234375f, 2.0f};
  auto delta = torch::empty({1, b, b}, torch::kFloat);
  for (int64_t e = 0; e < b * b; ++e) delta.view({-1})[e] = values[e % values.size()];
  delta = delta.to(torch::kHalf);
  auto x = torch::eye(b);  // token k is one-hot at k
  auto y = torch::empty({b, b});
  cpu::internal::ActiveKernels().rotate_delta_half(
      x.data_ptr<float>(), b, reinterpret_cast<const uint16_t*>(delta.data_ptr<at::Half>()),
      true, b, 1, b, y.data_ptr<float>(), b);
  auto off = torch::ones({b, b}) - torch::eye(b);
  EXPECT_TRUE(torch::equal(y * off, delta[0].to(torch::kFloat) * off)) << cpu::IsaName(GetParam());
}

// The fused Cayley-Neumann build runs its b x b products on the same kernels.
TEST_P(CpuKernelsTest, RotationBuildMatchesTheReference) {
  for (int64_t b : {16, 43, 128}) {
    torch::manual_seed(b);
    auto p = torch::randn({2, b * (b - 1) / 2}, torch::kFloat64) * (0.3 / b);
    auto g = torch::randn({2, b, b}, torch::kFloat64);
    auto r = reference::BuildRotationForward(p, b, 5, true);
    auto r32 = cpu::BuildRotationForward(p.to(torch::kFloat32), b, 5, true);
    EXPECT_LT(MaxAbs(r32, r), 1e-5) << b;
    auto g32 = cpu::BuildRotationBackward(g.to(torch::kFloat32), p.to(torch::kFloat32), r32, b, 5, true);
    auto g_ref = reference::BuildRotationBackward(g, p, r, b, 5, true);
    EXPECT_LT(MaxAbs(g32, g_ref) / (1 + g_ref.abs().max().item<double>()), 1e-4) << b;
  }
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, CpuKernelsTest,
                         testing::Values(Isa::kGeneric, Isa::kAvx2, Isa::kAvx512),
                         [](const testing::TestParamInfo<Isa>& info) {
                           return std::string(cpu::IsaName(info.param));
                         });

}  // namespace
}  // namespace oft
