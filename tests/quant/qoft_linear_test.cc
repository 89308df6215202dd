// QOFT: OFTv2 over an NF4 base equals OftLinear over the dequantized weight (forward,
// input and parameter gradients), Nf4Linear semantics, merged export, base bytes.
#include "server/quant/qoft_linear.h"

#include <gtest/gtest.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "server/oft/kernel_registry.h"
#include "server/oft/oft_linear.h"

namespace oft {
namespace {

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

double MaxAbs(const at::Tensor& a) { return a.to(at::kDouble).abs().max().item<double>(); }

struct Pair {
  std::unique_ptr<QoftLinear> qoft;
  std::unique_ptr<OftLinear> dense;  // over Dequantize(W) in `dtype`, same oft_r values
};

// A QoftLinear over NF4(weight) and an OftLinear over its dequantized weight, with the
// same (random) oft_r.
Pair MakePair(const at::Tensor& weight, const at::Tensor& bias, const OftConfig& config,
              const Nf4Options& options = {}) {
  Pair p;
  auto qoft = QoftLinear::Create(weight, bias.defined() ? bias.clone() : bias, config, options);
  EXPECT_TRUE(qoft.ok()) << qoft.status();
  p.qoft = *std::move(qoft);
  const at::Tensor dequantized = p.qoft->base().DequantizedWeight(weight.scalar_type());
  auto dense = OftLinear::Create(dequantized, bias.defined() ? bias.clone() : bias, config);
  EXPECT_TRUE(dense.ok()) << dense.status();
  p.dense = *std::move(dense);
  at::NoGradGuard no_grad;
  p.dense->oft_r().copy_(p.qoft->oft_r());
  return p;
}

OftConfig RandomInit(OftConfig c = {}) {
  c.init_weights = false;
  return c;
}

void ExpectForwardAndGradsMatch(Pair& p, at::ScalarType dtype, double tol, int64_t in,
                                const std::string& what) {
  SCOPED_TRACE(what);
  at::manual_seed(11);
  const at::Tensor x0 = at::randn({3, 5, in}).to(dtype);
  at::Tensor xq = x0.clone().requires_grad_(true);
  at::Tensor xd = x0.clone().requires_grad_(true);
  const at::Tensor yq = p.qoft->Forward(xq);
  const at::Tensor yd = p.dense->Forward(xd);
  ASSERT_EQ(yq.scalar_type(), dtype);
  ASSERT_EQ(yq.sizes(), yd.sizes());
  const double scale = std::max(1.0, MaxAbs(yd));
  const double forward_diff = MaxAbsDiff(yq, yd);
  ::testing::Test::RecordProperty("forward_max_abs_diff_" + what, (std::ostringstream() << forward_diff).str());
  EXPECT_LE(forward_diff, tol * scale) << "forward";

  const at::Tensor g = at::randn(yq.sizes()).to(dtype);
  yq.backward(g);
  yd.backward(g);
  ASSERT_TRUE(xq.grad().defined());
  EXPECT_LE(MaxAbsDiff(xq.grad(), xd.grad()), tol * std::max(1.0, MaxAbs(xd.grad()))) << "grad x";
  const at::Tensor gq = p.qoft->oft_r().grad();
  const at::Tensor gd = p.dense->oft_r().grad();
  ASSERT_TRUE(gq.defined());
  EXPECT_LE(MaxAbsDiff(gq, gd), tol * std::max(1.0, MaxAbs(gd))) << "grad oft_r";
}

TEST(QoftLinear, Fp32ForwardAndGradientsEqualOftLinearOverDequantizedWeight) {
  at::manual_seed(1);
  const at::Tensor w = at::randn({48, 96}) * 0.05;
  const at::Tensor b = at::randn({48});
  auto p = MakePair(w, b, RandomInit());
  // Tolerance 1e-5 relative to max(1, max |y|): same math, different fusion of the bias add.
  ExpectForwardAndGradsMatch(p, at::kFloat, 1e-5, 96, "fp32");
}

TEST(QoftLinear, Bf16ForwardAndGradientsEqualOftLinearOverDequantizedWeight) {
  at::manual_seed(2);
  const at::Tensor w = (at::randn({64, 128}) * 0.05).to(at::kBFloat16);
  const at::Tensor b = at::randn({64}).to(at::kBFloat16);
  auto p = MakePair(w, b, RandomInit());
  // bf16: both paths round x R and the output to bf16; they differ only in where the bias
  // is added (fused addmm vs separate add), i.e. a few bf16 ulps (2^-8 relative).
  ExpectForwardAndGradsMatch(p, at::kBFloat16, 2e-2, 128, "bf16");
}

TEST(QoftLinear, ConfigVariantsMatchOftLinear) {
  at::manual_seed(3);
  const at::Tensor w = at::randn({40, 64}) * 0.1;
  struct Case {
    const char* name;
    OftConfig config;
  };
  OftConfig share = RandomInit();
  share.block_share = true;
  OftConfig cayley = RandomInit();
  cayley.use_cayley_neumann = false;
  OftConfig coft = RandomInit();
  coft.coft = true;
  coft.eps = 0.05;
  OftConfig by_r = RandomInit();
  by_r.r = 4;
  by_r.oft_block_size = 0;
  const Case cases[] = {{"block_share", share}, {"exact cayley", cayley}, {"coft", coft},
                        {"r=4", by_r}};
  for (const Case& c : cases) {
    auto p = MakePair(w, at::Tensor(), c.config);
    ExpectForwardAndGradsMatch(p, at::kFloat, 1e-5, 64, c.name);
  }
}

TEST(QoftLinear, DoubleQuantBaseMatchesOftLinearOverItsDequantizedWeight) {
  at::manual_seed(4);
  const at::Tensor w = at::randn({32, 64}) * 0.05;
  auto p = MakePair(w, at::Tensor(), RandomInit(), {.double_quant = true});
  EXPECT_TRUE(p.qoft->base().weight().double_quant);
  ExpectForwardAndGradsMatch(p, at::kFloat, 1e-5, 64, "double quant");
}

TEST(QoftLinear, TrainableBiasGetsItsGradient) {
  at::manual_seed(5);
  OftConfig config = RandomInit();
  config.bias = OftBias::kAll;
  auto p = MakePair(at::randn({16, 64}), at::randn({16}), config);
  ASSERT_EQ(p.qoft->TrainableParameters().size(), 2u);
  const at::Tensor x = at::randn({4, 64});
  p.qoft->Forward(x).sum().backward();
  p.dense->Forward(x).sum().backward();
  const at::Tensor gb = p.qoft->base().bias().grad();
  ASSERT_TRUE(gb.defined());
  EXPECT_LE(MaxAbsDiff(gb, p.dense->bias().grad()), 1e-5);
}

TEST(Nf4Linear, ForwardIsLinearOverTheDequantizedWeightAndGradIsForXOnly) {
  at::manual_seed(6);
  const at::Tensor w = at::randn({24, 40});
  const at::Tensor b = at::randn({24});
  auto layer = Nf4Linear::Create(w, b);
  ASSERT_TRUE(layer.ok()) << layer.status();
  const at::Tensor dq = Dequantize((*layer)->weight());
  at::Tensor x = at::randn({2, 3, 40}).requires_grad_(true);
  const at::Tensor y = (*layer)->Forward(x);
  EXPECT_LE(MaxAbsDiff(y, at::linear(x.detach(), dq, b)), 1e-5);
  const at::Tensor g = at::randn({2, 3, 24});
  y.backward(g);
  EXPECT_LE(MaxAbsDiff(x.grad(), at::matmul(g, dq)), 1e-5);
  EXPECT_FALSE((*layer)->weight().absmax.requires_grad());
  EXPECT_FALSE((*layer)->bias().requires_grad());
  // Without grad on x there is no graph.
  EXPECT_FALSE((*layer)->Forward(at::randn({1, 40})).requires_grad());
  // Wrong width is an ATen error.
  EXPECT_THROW((*layer)->Forward(at::randn({1, 41})), c10::Error);
}

// The dtypes NF4 dequantization was asked for while RecordingNf4Dequantize was injected.
std::vector<at::ScalarType>& DequantizedDtypes() {
  static std::vector<at::ScalarType> dtypes;
  return dtypes;
}

// Records the requested dtype, then decodes through the composite path.
at::Tensor RecordingNf4Dequantize(const at::Tensor& codes, const at::Tensor& absmax,
                                  const std::optional<at::Tensor>& absmax_scale,
                                  double absmax_offset, int64_t numel, int64_t block_size,
                                  at::ScalarType dtype) {
  DequantizedDtypes().push_back(dtype);
  return reinterpret_cast<Nf4DequantizeFn>(CompositeKernel(KernelId::kNf4Dequantize))(
      codes, absmax, absmax_scale, absmax_offset, numel, block_size, dtype);
}

// A bf16 model dequantizes its NF4 base straight to bf16 (the compute dtype), in forward
// and in backward: never to fp32 and then cast, which would double the transient weight.
TEST(QoftLinear, Bf16ActivationsDequantizeTheBaseToBf16) {
  at::manual_seed(8);
  testing::ScopedOptimizedKernel recording(KernelId::kNf4Dequantize, c10::kCPU,
                                           EraseKernel<Nf4DequantizeFn>(&RecordingNf4Dequantize));
  const at::Tensor w = (at::randn({32, 64}) * 0.05).to(at::kBFloat16);
  auto q = QoftLinear::Create(w, at::Tensor(), OftConfig{});
  ASSERT_TRUE(q.ok()) << q.status();
  DequantizedDtypes().clear();
  const at::Tensor x = at::randn({3, 64}).to(at::kBFloat16).requires_grad_(true);
  const at::Tensor y = (*q)->Forward(x);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  y.sum().backward();
  ASSERT_GE(DequantizedDtypes().size(), 2u);  // forward and backward
  for (at::ScalarType t : DequantizedDtypes()) EXPECT_EQ(t, at::kBFloat16) << c10::toString(t);
  // The hook really is the path the layer takes.
  DequantizedDtypes().clear();
  (*q)->Forward(at::randn({1, 64}));
  ASSERT_EQ(DequantizedDtypes().size(), 1u);
  EXPECT_EQ(DequantizedDtypes()[0], at::kFloat);
}

TEST(QoftLinear, MergeToDenseEqualsOftLinearMergeOverDequantizedWeight) {
  at::manual_seed(7);
  const at::Tensor w = at::randn({32, 96}) * 0.1;
  auto p = MakePair(w, at::Tensor(), RandomInit());
  auto merged = p.qoft->MergeToDense();
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->scalar_type(), at::kFloat);
  EXPECT_EQ(merged->sizes(), w.sizes());
  ASSERT_TRUE(p.dense->Merge().ok());
  EXPECT_LE(MaxAbsDiff(*merged, p.dense->weight()), 1e-6);
  // The merged weight reproduces the unmerged forward.
  const at::Tensor x = at::randn({7, 96});
  at::NoGradGuard no_grad;
  EXPECT_LE(MaxAbsDiff(at::linear(x, *merged), p.qoft->Forward(x)), 1e-5);
  // The layer itself is unchanged (still NF4, still rotating).
  EXPECT_GT(MaxAbsDiff(p.qoft->Forward(x), p.qoft->ForwardBase(x)), 1e-4);
}

TEST(QoftLinear, BaseWeightBytesNf4VersusBf16) {
  const at::Tensor w = at::randn({256, 512}).to(at::kBFloat16);
  auto q = QoftLinear::Create(w, at::Tensor(), OftConfig{});
  auto dq = QoftLinear::Create(w, at::Tensor(), OftConfig{}, {.double_quant = true});
  auto dense = OftLinear::Create(w.clone(), at::Tensor(), OftConfig{});
  ASSERT_TRUE(q.ok() && dq.ok() && dense.ok());
  EXPECT_EQ((*dense)->BaseWeightBytes(), 256 * 512 * 2);
  EXPECT_EQ((*q)->BaseWeightBytes(), 256 * 512 / 2 + 256 * 512 / 64 * 4);
  const double ratio = static_cast<double>((*q)->BaseWeightBytes()) / (*dense)->BaseWeightBytes();
  const double dq_ratio = static_cast<double>((*dq)->BaseWeightBytes()) / (*dense)->BaseWeightBytes();
  EXPECT_DOUBLE_EQ(ratio, 0.28125);  // (0.5 + 4/64) / 2
  EXPECT_NEAR(dq_ratio, 0.258, 1e-3);  // (0.5 + 1/64 + ~0) / 2
  RecordProperty("qoft_over_bf16", std::to_string(ratio));
  RecordProperty("qoft_dq_over_bf16", std::to_string(dq_ratio));
  // A bias counts on both sides.
  auto qb = QoftLinear::Create(w, at::zeros({256}, at::kBFloat16), OftConfig{});
  ASSERT_TRUE(qb.ok());
  EXPECT_EQ((*qb)->BaseWeightBytes(), (*q)->BaseWeightBytes() + 512);
}

TEST(QoftLinear, CreateRejectsBadArguments) {
  OftConfig bad;
  bad.oft_block_size = 0;  // and r = 0
  auto s = QoftLinear::Create(at::randn({8, 32}), at::Tensor(), bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = QoftLinear::Create(at::randn({8, 32}), at::randn({9}), OftConfig{}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("bias must be [8]"), absl::string_view::npos) << s;
  s = QoftLinear::Create(at::randn({32}), at::Tensor(), OftConfig{}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oft
