// OftLinear: input-centric == weight-centric, identity at init, merge/unmerge, module
// dropout, COFT, block sharing, dtypes, and end-to-end gradients in fp64.
#include "server/oft/oft_linear.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/oft/ops.h"

namespace oft {
namespace {

double MaxAbs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

std::unique_ptr<OftLinear> Make(int64_t out, int64_t in, OftConfig cfg, torch::Dtype dt,
                                bool with_bias = true, uint64_t seed = 0) {
  torch::manual_seed(seed);
  auto w = torch::randn({out, in}, torch::kFloat64).to(dt);
  auto b = with_bias ? torch::randn({out}, torch::kFloat64).to(dt) : torch::Tensor();
  auto layer = OftLinear::Create(w, b, cfg);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return std::move(layer).value();
}

void Randomize(OftLinear& l, double scale, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  l.oft_r().copy_(torch::randn(l.oft_r().sizes(), l.oft_r().options()) * scale);
}

struct Shape {
  int64_t out, in;
  int64_t block_size, r;
  bool share;
  bool neumann;
};

TEST(OftLinear, InputCentricEqualsWeightCentricFp64) {
  const Shape shapes[] = {
      {16, 32, 8, 0, false, true},  {7, 24, 4, 0, true, true},  {12, 100, 32, 0, false, true},
      {9, 96, 40, 0, false, false}, {5, 30, 0, 4, false, true}, {33, 64, 16, 0, true, false},
      {8, 21, 6, 0, false, true},   {3, 10, 64, 0, false, true},
  };
  for (const auto& s : shapes) {
    OftConfig cfg;
    cfg.oft_block_size = s.block_size;
    cfg.r = s.r;
    cfg.block_share = s.share;
    cfg.use_cayley_neumann = s.neumann;
    auto l = Make(s.out, s.in, cfg, torch::kFloat64);
    Randomize(*l, 0.2, s.in);
    auto x = torch::randn({2, 5, s.in}, torch::kFloat64);
    auto a = l->Forward(x);
    auto b = l->ForwardWeightCentric(x);
    EXPECT_LT(MaxAbs(a, b), 1e-10) << "out=" << s.out << " in=" << s.in << " b=" << s.block_size
                                   << " blocks=" << l->layout().num_blocks;
    EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 5, s.out}));
  }
}

TEST(OftLinear, DivisorAdjustmentShapes) {
  OftConfig cfg;  // b = 32 on in = 100 -> b = 25 (PEFT's rule)
  auto l = Make(4, 100, cfg, torch::kFloat32);
  EXPECT_TRUE(l->layout().adjusted);
  EXPECT_EQ(l->oft_r().sizes(), (std::vector<int64_t>{4, 300}));
  cfg.block_share = true;
  l = Make(4, 100, cfg, torch::kFloat32);
  EXPECT_EQ(l->oft_r().sizes(), (std::vector<int64_t>{1, 300}));
}

TEST(OftLinear, IdentityAtInit) {
  for (bool neumann : {true, false}) {
    OftConfig cfg;
    cfg.oft_block_size = 8;
    cfg.use_cayley_neumann = neumann;
    auto l = Make(10, 32, cfg, torch::kFloat32);
    EXPECT_EQ(l->oft_r().scalar_type(), torch::kFloat32);
    EXPECT_TRUE(l->oft_r().requires_grad());
    EXPECT_FALSE(l->weight().requires_grad());
    auto x = torch::randn({4, 32});
    EXPECT_TRUE(torch::equal(l->Forward(x), l->ForwardBase(x)));
  }
}

TEST(OftLinear, MergedLinearEqualsAdapterAndUnmergeRestores) {
  for (bool neumann : {true, false}) {
    for (bool share : {false, true}) {
      OftConfig cfg;
      cfg.oft_block_size = 8;
      cfg.use_cayley_neumann = neumann;
      cfg.block_share = share;
      auto l = Make(24, 64, cfg, torch::kFloat64);
      Randomize(*l, 0.1, 5);
      const auto w0 = l->weight().clone();
      auto x = torch::randn({6, 64}, torch::kFloat64);
      const auto y = l->Forward(x);
      ASSERT_TRUE(l->Merge().ok());
      EXPECT_TRUE(l->merged());
      // A plain Linear with the merged weight gives the adapter's output.
      auto plain = torch::nn::functional::linear(x, l->weight(), l->bias());
      EXPECT_LT(MaxAbs(plain, y), 1e-12);
      EXPECT_EQ(l->Merge().code(), absl::StatusCode::kFailedPrecondition);
      ASSERT_TRUE(l->Unmerge().ok());
      EXPECT_LT(MaxAbs(l->weight(), w0), 1e-12);
      EXPECT_EQ(l->Unmerge().code(), absl::StatusCode::kFailedPrecondition);
    }
  }
  // bf16 base: merge happens in fp32 and is stored in bf16.
  OftConfig cfg;
  cfg.oft_block_size = 16;
  auto l = Make(32, 64, cfg, torch::kBFloat16);
  Randomize(*l, 0.05, 9);
  auto x = torch::randn({8, 64}).to(torch::kBFloat16);
  auto y = l->Forward(x);
  ASSERT_TRUE(l->Merge().ok());
  EXPECT_EQ(l->weight().scalar_type(), torch::kBFloat16);
  EXPECT_LT(MaxAbs(l->Forward(x), y), 0.25);  // bf16 rounding of weight and output, |y| ~ 8
}

TEST(OftLinear, EndToEndGradientsFp64) {
  OftConfig cfg;
  cfg.oft_block_size = 4;
  auto l = Make(5, 12, cfg, torch::kFloat64);
  Randomize(*l, 0.3, 2);
  auto x = torch::randn({3, 12}, torch::kFloat64).requires_grad_(true);
  auto w = torch::randn({3, 5}, torch::kFloat64);
  auto g = torch::autograd::grad({(l->Forward(x) * w).sum()}, {l->oft_r(), x});
  auto g_ref = torch::autograd::grad({(l->ForwardWeightCentric(x) * w).sum()}, {l->oft_r(), x});
  EXPECT_LT(MaxAbs(g[0], g_ref[0]), 1e-10);
  EXPECT_LT(MaxAbs(g[1], g_ref[1]), 1e-10);
  // Finite differences on a few packed entries.
  auto p = l->oft_r();
  for (int64_t i : {0, 4, 11, 17}) {
    const double h = 1e-6;
    double v;
    {
      torch::NoGradGuard ng;
      v = p.view(-1)[i].item<double>();
      p.view(-1)[i] = v + h;
    }
    const double lp = (l->Forward(x) * w).sum().item<double>();
    {
      torch::NoGradGuard ng;
      p.view(-1)[i] = v - h;
    }
    const double lm = (l->Forward(x) * w).sum().item<double>();
    {
      torch::NoGradGuard ng;
      p.view(-1)[i] = v;
    }
    EXPECT_NEAR(g[0].view(-1)[i].item<double>(), (lp - lm) / (2 * h), 1e-7) << "entry " << i;
  }
}

TEST(OftLinear, OnlyAdapterReceivesGradients) {
  OftConfig cfg;
  cfg.oft_block_size = 8;
  auto l = Make(8, 16, cfg, torch::kFloat32);
  auto y = l->Forward(torch::randn({4, 16}));
  y.sum().backward();
  EXPECT_TRUE(l->oft_r().grad().defined());
  EXPECT_FALSE(l->weight().grad().defined());
  EXPECT_FALSE(l->bias().grad().defined());
  EXPECT_EQ(l->TrainableParameters().size(), 1u);
  cfg.bias = OftBias::kAll;
  auto lb = Make(8, 16, cfg, torch::kFloat32);
  EXPECT_EQ(lb->TrainableParameters().size(), 2u);
  EXPECT_TRUE(lb->bias().requires_grad());
}

TEST(OftLinear, ActivationsStayInBaseDtype) {
  for (auto dt : {torch::kBFloat16, torch::kFloat16}) {
    OftConfig cfg;
    cfg.oft_block_size = 8;
    auto l = Make(16, 32, cfg, dt);
    Randomize(*l, 0.1, 4);
    auto x = torch::randn({4, 32}).to(dt);
    auto y = l->Forward(x);
    EXPECT_EQ(y.scalar_type(), dt);
    EXPECT_EQ(l->oft_r().scalar_type(), torch::kFloat32);
    y.to(torch::kFloat32).sum().backward();
    EXPECT_EQ(l->oft_r().grad().scalar_type(), torch::kFloat32);
    // Matches the fp64 computation to the activation dtype's precision.
    auto w64 = l->weight().to(torch::kFloat64);
    auto r64 = l->RotationBlocks().to(torch::kFloat64);
    auto ref = torch::nn::functional::linear(BlockRotate(x.to(torch::kFloat64), r64), w64,
                                             l->bias().to(torch::kFloat64));
    EXPECT_LT(MaxAbs(y, ref), 0.15) << c10::toString(dt);
  }
}

TEST(OftLinear, ModuleDropoutReplacesAFractionOfBlocksInTraining) {
  OftConfig cfg;
  cfg.oft_block_size = 4;
  cfg.module_dropout = 0.5;
  auto l = Make(4, 32, cfg, torch::kFloat64);  // 8 blocks
  Randomize(*l, 0.3, 8);
  auto eye = torch::eye(4, torch::kFloat64);
  auto count_identity = [&](const torch::Tensor& blocks) {
    int n = 0;
    for (int64_t i = 0; i < blocks.size(0); ++i) n += torch::equal(blocks[i], eye);
    return n;
  };
  torch::manual_seed(1);
  l->SetTraining(true);
  EXPECT_EQ(count_identity(l->RotationBlocks()), 4);  // int(0.5 * 8) blocks
  l->SetTraining(false);
  EXPECT_EQ(count_identity(l->RotationBlocks()), 0);
  // Skipped with a shared block.
  cfg.block_share = true;
  auto s = Make(4, 32, cfg, torch::kFloat64);
  Randomize(*s, 0.3, 8);
  s->SetTraining(true);
  EXPECT_EQ(count_identity(s->RotationBlocks()), 0);
}

TEST(OftLinear, CoftProjectsEachBlockIntoTheBall) {
  OftConfig cfg;
  cfg.r = 2;
  cfg.oft_block_size = 0;
  cfg.coft = true;
  cfg.eps = 0.1;
  auto l = Make(4, 8, cfg, torch::kFloat64);
  Randomize(*l, 1.0, 3);
  l->RotationBlocks();
  auto q = SkewFromPacked(l->oft_r().detach(), 4);
  auto norms = torch::linalg_matrix_norm(q, "fro");
  EXPECT_NEAR(norms[0].item<double>(), 0.070711, 1e-6);  // eps / sqrt(2), docs/method.md §4.3
  EXPECT_NEAR(norms[1].item<double>(), 0.070711, 1e-6);
  // Inside the ball: untouched.
  Randomize(*l, 1e-4, 3);
  auto before = l->oft_r().clone();
  l->RotationBlocks();
  EXPECT_TRUE(torch::equal(before, l->oft_r()));
}

TEST(OftLinear, CreateRejectsBadInputs) {
  OftConfig cfg;
  auto s = OftLinear::Create(torch::zeros({4}), torch::Tensor(), cfg).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("weight must be a 2-D"), std::string::npos);
  s = OftLinear::Create(torch::zeros({4, 8}, torch::kInt32), torch::Tensor(), cfg).status();
  EXPECT_NE(s.message().find("weight dtype must be"), std::string::npos) << s;
  s = OftLinear::Create(torch::zeros({4, 8}), torch::zeros({5}), cfg).status();
  EXPECT_NE(s.message().find("bias must be [4]"), std::string::npos) << s;
  cfg.num_cayley_neumann_terms = 0;
  s = OftLinear::Create(torch::zeros({4, 8}), torch::Tensor(), cfg).status();
  EXPECT_NE(s.message().find("num_cayley_neumann_terms"), std::string::npos) << s;
}

}  // namespace
}  // namespace oft
