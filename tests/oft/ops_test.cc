// The oft:: ops against PEFT's golden vectors (docs/method.md §9), the closed forms
// of §1.5, and finite differences in fp64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <vector>

#include "server/oft/ops.h"
#include "server/oft/ops_cpu.h"
#include "server/oft/ops_reference.h"

namespace oft {
namespace {

torch::Tensor F64(std::vector<double> v, std::vector<int64_t> shape) {
  return torch::tensor(v, torch::kFloat64).reshape(shape);
}

// tests/oft/golden_vectors.json: PEFT's own OFT rotation module in fp64, rounded to six
// decimals; tests/oft/golden_vectors.py regenerates it and checks it against the PEFT in .venv.
const nlohmann::json& Golden() {
  static const nlohmann::json* golden = [] {
    std::ifstream in(OFT_GOLDEN_VECTORS_JSON);
    EXPECT_TRUE(in.good()) << "cannot read " << OFT_GOLDEN_VECTORS_JSON;
    return new nlohmann::json(nlohmann::json::parse(in));
  }();
  return *golden;
}

// A nested JSON array of numbers as an fp64 tensor of its own shape.
torch::Tensor GoldenTensor(const nlohmann::json& j) {
  std::vector<int64_t> shape;
  for (const nlohmann::json* p = &j; p->is_array(); p = &(*p)[0]) shape.push_back(p->size());
  std::vector<double> flat;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& v) {
    if (v.is_array()) {
      for (const auto& e : v) walk(e);
    } else {
      flat.push_back(v.get<double>());
    }
  };
  walk(j);
  return F64(flat, shape);
}

torch::Tensor GoldenPacked() { return GoldenTensor(Golden()["packed"]); }
int64_t GoldenBlock() { return Golden()["block_size"].get<int64_t>(); }
int64_t GoldenTerms() { return Golden()["num_cayley_neumann_terms"].get<int64_t>(); }

double MaxAbs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(OftOps, GoldenCayleyNeumannK5) {
  ASSERT_EQ(GoldenTerms(), 5);
  auto r = BuildRotation(GoldenPacked(), GoldenBlock(), GoldenTerms(), true);
  const auto& cnp = Golden()["cayley_neumann"];
  // Six committed decimals: 5e-7 rounding plus fp64 noise.
  EXPECT_LT(MaxAbs(r, GoldenTensor(cnp["rotation"])), 1e-6);

  auto x = GoldenTensor(Golden()["x"]);
  auto want = GoldenTensor(cnp["x_rot"]);
  EXPECT_LT(MaxAbs(BlockRotate(x, r), want), 1e-6);
  // fp32 activations give the same answer to fp32 precision.
  EXPECT_LT(MaxAbs(BlockRotate(x.to(torch::kFloat32), r.to(torch::kFloat32)).to(torch::kFloat64), want),
            2e-6);
}

TEST(OftOps, GoldenExactCayley) {
  auto r = BuildRotation(GoldenPacked(), GoldenBlock(), GoldenTerms(), false);
  const auto& exact = Golden()["exact_cayley"];
  EXPECT_LT(MaxAbs(r, GoldenTensor(exact["rotation"])), 1e-6);
  EXPECT_LT(MaxAbs(BlockRotate(GoldenTensor(Golden()["x"]), r), GoldenTensor(exact["x_rot"])), 1e-6);
  // Exact mode is orthogonal to fp64 precision, and (method.md §4.2) close to the transpose of CNP.
  auto eye = torch::eye(4, torch::kFloat64);
  EXPECT_LT(MaxAbs(torch::matmul(r.transpose(1, 2), r), eye.expand({2, 4, 4})), 1e-14);
  auto cnp = BuildRotation(GoldenPacked(), GoldenBlock(), GoldenTerms(), true);
  EXPECT_LT(MaxAbs(r[0], cnp[0].t()), 0.02);
  EXPECT_GT(MaxAbs(r[0], cnp[0]), 0.2);
}

TEST(OftOps, SkewPackingOrder) {
  // Packed index k(i,j) = i(2b-i-1)/2 + (j-i-1): (0,1),(0,2),(0,3),(1,2),(1,3),(2,3).
  auto q = SkewFromPacked(F64({1, 2, 3, 4, 5, 6}, {1, 6}), 4)[0];
  EXPECT_EQ(q[0][1].item<double>(), 1);
  EXPECT_EQ(q[0][3].item<double>(), 3);
  EXPECT_EQ(q[1][2].item<double>(), 4);
  EXPECT_EQ(q[2][3].item<double>(), 6);
  EXPECT_EQ(q[3][2].item<double>(), -6);
  EXPECT_EQ(q[1][1].item<double>(), 0);
  EXPECT_TRUE(torch::equal(PackedFromSkew(q.unsqueeze(0)), F64({1, 2, 3, 4, 5, 6}, {1, 6})));
  // b = 32 gives 496 entries.
  EXPECT_EQ(SkewFromPacked(torch::zeros({3, 496}, torch::kFloat64), 32).sizes(),
            (std::vector<int64_t>{3, 32, 32}));
}

// ||Q||_2 = norm, random skew b x b in fp64.
torch::Tensor RandomPacked(int64_t rows, int64_t b, double spectral_norm, uint64_t seed) {
  torch::manual_seed(seed);
  auto p = torch::randn({rows, b * (b - 1) / 2}, torch::kFloat64);
  auto q = SkewFromPacked(p, b);
  auto s = torch::linalg_matrix_norm(q, 2).reshape({rows, 1});
  return p / s * spectral_norm;
}

TEST(OftOps, ClosedFormsOfPeftPolynomial) {
  const int64_t b = 8;
  auto p = RandomPacked(3, b, 0.3, 1);
  auto q = SkewFromPacked(p, b);
  auto eye = torch::eye(b, torch::kFloat64).expand({3, b, b});
  EXPECT_LT(MaxAbs(BuildRotation(p, b, 1, true), eye), 1e-15);                  // k=1: I
  EXPECT_LT(MaxAbs(BuildRotation(p, b, 2, true), eye + 2 * q), 1e-15);          // k=2: I + 2Q
  EXPECT_LT(MaxAbs(BuildRotation(p, b, 3, true), BuildRotation(p, b, 4, true)), 1e-15);  // quirk
  for (int64_t k = 4; k <= 9; ++k) {
    auto sum = eye.clone();  // I + Q + ... + Q^{k-2}
    auto pw = eye.clone();
    for (int64_t i = 1; i <= k - 2; ++i) {
      pw = torch::bmm(pw, q);
      sum = sum + pw;
    }
    EXPECT_LT(MaxAbs(BuildRotation(p, b, k, true), torch::bmm(eye + q, sum)), 1e-14) << "k=" << k;
  }
}

double OrthError(const torch::Tensor& r) {
  auto eye = torch::eye(r.size(1), r.options()).expand_as(r);
  return torch::linalg_matrix_norm(torch::bmm(r.transpose(1, 2), r) - eye, "fro").max().item<double>();
}

TEST(OftOps, OrthogonalityAlternatesWithK) {
  // §1.5: R^T R = I - Q^{2m+2} when m+1 is odd (k = 4, 6), I - 2Q^{m+1} + ... when even (k = 5).
  auto p = RandomPacked(1, 32, 0.1, 7);
  const double e4 = OrthError(BuildRotation(p, 32, 4, true));
  const double e5 = OrthError(BuildRotation(p, 32, 5, true));
  const double e6 = OrthError(BuildRotation(p, 32, 6, true));
  EXPECT_LT(e4, 1e-5);
  EXPECT_GT(e5, 1e-5);
  EXPECT_LT(e5, 1e-3);
  EXPECT_LT(e6, 1e-9);
  EXPECT_GT(e5, 50 * e4);
  // The exact Cayley map is orthogonal to rounding.
  EXPECT_LT(OrthError(BuildRotation(p, 32, 5, false)), 1e-13);
  // Distance to the exact map (transposed orientation, §1.4) shrinks with k.
  auto exact_t = BuildRotation(p, 32, 5, false).transpose(1, 2);
  double prev = 1e9;
  for (int64_t k = 4; k <= 8; ++k) {
    double dist = torch::linalg_matrix_norm(BuildRotation(p, 32, k, true) - exact_t, "fro").item<double>();
    EXPECT_LT(dist, prev) << "k=" << k;
    prev = dist;
  }
}

// Central finite differences of L = sum(f(p) * w) with respect to every entry of p.
template <typename Fn>
torch::Tensor NumericGrad(Fn f, torch::Tensor p, const torch::Tensor& w, double h = 1e-6) {
  auto g = torch::zeros_like(p);
  auto flat = p.view(-1);
  auto gflat = g.view(-1);
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double v = flat[i].template item<double>();
    flat[i] = v + h;
    const double lp = (f(p) * w).sum().template item<double>();
    flat[i] = v - h;
    const double lm = (f(p) * w).sum().template item<double>();
    flat[i] = v;
    gflat[i] = (lp - lm) / (2 * h);
  }
  return g;
}

struct GradCase {
  int64_t rows, b, k;
  bool neumann;
};

TEST(OftOps, BuildRotationGradientMatchesFiniteDifferences) {
  for (const GradCase c : {GradCase{2, 4, 5, true}, GradCase{3, 5, 6, true}, GradCase{1, 6, 3, true},
                           GradCase{2, 4, 2, true}, GradCase{2, 7, 9, true}, GradCase{2, 4, 5, false},
                           GradCase{1, 6, 5, false}}) {
    auto p = RandomPacked(c.rows, c.b, 0.4, 11 + c.b);
    auto w = torch::randn({c.rows, c.b, c.b}, torch::kFloat64);
    auto f = [&](const torch::Tensor& x) { return BuildRotation(x, c.b, c.k, c.neumann); };
    auto pg = p.clone().requires_grad_(true);
    auto analytic = torch::autograd::grad({(f(pg) * w).sum()}, {pg})[0];
    auto numeric = NumericGrad(f, p.clone(), w);
    EXPECT_LT(MaxAbs(analytic, numeric), 1e-8)
        << "rows=" << c.rows << " b=" << c.b << " k=" << c.k << " neumann=" << c.neumann;
  }
}

TEST(OftOps, BlockRotateGradientsMatchFiniteDifferences) {
  for (int64_t rows : {3, 1}) {  // separate blocks and one shared block
    torch::manual_seed(3);
    auto x = torch::randn({5, 12}, torch::kFloat64);
    auto r = torch::randn({rows, 4, 4}, torch::kFloat64);
    auto w = torch::randn({5, 12}, torch::kFloat64);
    auto xg = x.clone().requires_grad_(true);
    auto rg = r.clone().requires_grad_(true);
    auto grads = torch::autograd::grad({(BlockRotate(xg, rg) * w).sum()}, {xg, rg});
    auto nx = NumericGrad([&](const torch::Tensor& v) { return BlockRotate(v, r); }, x.clone(), w);
    auto nr = NumericGrad([&](const torch::Tensor& v) { return BlockRotate(x, v); }, r.clone(), w);
    EXPECT_LT(MaxAbs(grads[0], nx), 1e-8) << "rows=" << rows;
    EXPECT_LT(MaxAbs(grads[1], nr), 1e-8) << "rows=" << rows;
  }
}

// BlockRotateMany through autograd (the CPU fp32 fused op, and the fallback of separate
// rotations for fp64): every output, x's summed gradient and each rotation's gradient equal
// those of separate BlockRotate calls, with one output left out of the loss.
TEST(OftOps, BlockRotateManyMatchesSeparateRotationsThroughAutograd) {
  for (auto dt : {torch::kFloat32, torch::kFloat64}) {
    torch::manual_seed(11);
    const int64_t b = 32, r = std::max<int64_t>(4, at::get_num_threads()), d = r * b;
    auto x = torch::randn({2, 77, d}, dt);
    std::vector<torch::Tensor> rots, ws;
    for (int j = 0; j < 3; ++j) {
      rots.push_back(BuildRotation(RandomPacked(r, b, 0.3, 20 + j), b, 5, true).to(dt));
      ws.push_back(torch::randn({2, 77, d}, dt));
    }
    auto run = [&](bool many) {
      auto xg = x.clone().requires_grad_(true);
      std::vector<torch::Tensor> rg;
      for (const auto& rot : rots) rg.push_back(rot.clone().requires_grad_(true));
      std::vector<torch::Tensor> ys;
      if (many) {
        ys = BlockRotateMany(xg, rg);
      } else {
        for (const auto& rot : rg) ys.push_back(BlockRotate(xg, rot));
      }
      auto loss = (ys[0] * ws[0]).sum() + (ys[2] * ws[2]).sum();  // ys[1] unused
      std::vector<torch::Tensor> inputs{xg};
      inputs.insert(inputs.end(), rg.begin(), rg.end());
      auto grads = torch::autograd::grad({loss}, inputs, {}, std::nullopt, false,
                                         /*allow_unused=*/true);
      grads.insert(grads.begin(), ys.begin(), ys.end());
      return grads;  // y0 y1 y2 gx gr0 gr1 gr2
    };
    auto fused = run(true), separate = run(false);
    const double tol = dt == torch::kFloat32 ? 1e-4 : 1e-12;
    for (int e = 0; e < 3; ++e) EXPECT_TRUE(torch::equal(fused[e], separate[e])) << e;
    EXPECT_LT(MaxAbs(fused[3], separate[3]), tol) << c10::toString(dt);
    EXPECT_LT(MaxAbs(fused[4], separate[4]), tol * 10) << c10::toString(dt);
    EXPECT_LT(MaxAbs(fused[6], separate[6]), tol * 10) << c10::toString(dt);
    // The unused output's rotation: zero (fused) or no gradient at all (separate).
    if (fused[5].defined()) {
      EXPECT_EQ(fused[5].abs().max().item<double>(), 0.0);
    }
  }
}

TEST(OftOps, BlockRotateKeepsActivationDtypeAndShape) {
  auto r = BuildRotation(RandomPacked(4, 8, 0.3, 5).to(torch::kFloat32), 8, 5, true);
  for (auto dt : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
    auto x = torch::randn({2, 3, 32}).to(dt);
    auto y = BlockRotate(x, r);
    EXPECT_EQ(y.scalar_type(), dt);
    EXPECT_EQ(y.sizes(), x.sizes());
    auto ref = BlockRotate(x.to(torch::kFloat64), r.to(torch::kFloat64));
    const double tol = dt == torch::kFloat32 ? 1e-5 : 3e-2;
    EXPECT_LT(MaxAbs(y.to(torch::kFloat64), ref), tol) << c10::toString(dt);
  }
}

TEST(OftOps, BadArgumentsThrowWithAClearMessage) {
  auto r = torch::zeros({2, 4, 4});
  try {
    BlockRotate(torch::zeros({3, 10}), r);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("last dim of x (10) is not a multiple of block size 4"),
              std::string::npos);
  }
  try {
    BuildRotation(torch::zeros({2, 5}), 4, 5, true);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("packed must be [rows, 6] for block size 4"), std::string::npos);
  }
}

}  // namespace
}  // namespace oft

namespace oft {
namespace {

TEST(OftOps, CpuRotationBuildMatchesTheReference) {
  for (int64_t k = 1; k <= 9; ++k) {
    for (int64_t b : {2, 5, 32}) {
      auto p = RandomPacked(3, b, 0.4, 100 + k);
      auto g = torch::randn({3, b, b}, torch::kFloat64);
      auto r = cpu::BuildRotationForward(p, b, k, true);
      EXPECT_LT(MaxAbs(r, reference::BuildRotationForward(p, b, k, true)), 1e-13) << k << " " << b;
      EXPECT_LT(MaxAbs(cpu::BuildRotationBackward(g, p, r, b, k, true),
                       reference::BuildRotationBackward(g, p, r, b, k, true)),
                1e-12)
          << k << " " << b;
      // fp32 parameters (what training uses) against the fp64 reference.
      auto r32 = cpu::BuildRotationForward(p.to(torch::kFloat32), b, k, true);
      EXPECT_EQ(r32.scalar_type(), torch::kFloat32);
      EXPECT_LT(MaxAbs(r32.to(torch::kFloat64), r), 1e-5) << k << " " << b;
      auto g32 = cpu::BuildRotationBackward(g.to(torch::kFloat32), p.to(torch::kFloat32), r32, b, k, true);
      EXPECT_EQ(g32.scalar_type(), torch::kFloat32);
      EXPECT_LT(MaxAbs(g32.to(torch::kFloat64), reference::BuildRotationBackward(g, p, r, b, k, true)),
                1e-3)
          << k << " " << b;
    }
  }
}

TEST(OftOps, CpuKernelsMatchTheReference) {
  for (auto dt : {torch::kFloat64, torch::kFloat32, torch::kBFloat16}) {
    for (int64_t rows : {1, 6}) {
      torch::manual_seed(rows);
      auto x = torch::randn({3, 7, 48}).to(dt);
      auto r = torch::randn({rows, 8, 8}, dt == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
      auto g = torch::randn({3, 7, 48}).to(dt);
      const double tol = dt == torch::kFloat64 ? 1e-12 : dt == torch::kFloat32 ? 1e-4 : 5e-2;
      auto y = cpu::BlockRotateForward(x, r);
      auto y_ref = reference::BlockRotateForward(x, r);
      EXPECT_EQ(y.scalar_type(), dt);
      EXPECT_LT(MaxAbs(y.to(torch::kFloat64), y_ref.to(torch::kFloat64)), tol);
      auto [gx, gr] = cpu::BlockRotateBackward(g, x, r, true, true);
      auto [gx_ref, gr_ref] = reference::BlockRotateBackward(g, x, r, true, true);
      EXPECT_LT(MaxAbs(gx.to(torch::kFloat64), gx_ref.to(torch::kFloat64)), tol);
      EXPECT_LT(MaxAbs(gr.to(torch::kFloat64), gr_ref.to(torch::kFloat64)), tol * 10);
      EXPECT_EQ(gr.scalar_type(), r.scalar_type());
    }
  }
}

}  // namespace
}  // namespace oft
