// The soft-capped attention (Gemma 2) of decoder_ops against a reference written here in fp64
// the plain way: K and V repeated per query head, c * tanh(q k^T s / c), the mask, softmax,
// times V. Grouped-query heads, causal with fewer queries than keys, bool and additive masks,
// inputs that are transposed views, and the gradients of q, k and v.
#include <cmath>
#include <limits>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "gtest/gtest.h"
#include "server/model/decoder_ops.h"

namespace oft {
namespace {

constexpr double kCap = 3.0;  // small, so the soft-cap bends the scores
constexpr double kScale = 0.7;

// [B, T, h, d] made, then transposed to [B, h, T, d] as the model does (not contiguous).
at::Tensor Heads(int64_t B, int64_t h, int64_t T, int64_t d, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return (at::randn({B, T, h, d}, gen, at::kDouble) * 2.0).transpose(1, 2);
}

at::Tensor Reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& mask, bool causal) {
  const int64_t g = q.size(1) / k.size(1), T = q.size(2), S = k.size(2);
  at::Tensor kk = k.repeat_interleave(g, 1), vv = v.repeat_interleave(g, 1);
  at::Tensor scores = at::tanh(at::matmul(q, kk.transpose(-2, -1)) * kScale / kCap) * kCap;
  if (mask.defined() && mask.scalar_type() == at::kBool) {
    scores = scores.masked_fill(at::logical_not(mask), -std::numeric_limits<double>::infinity());
  } else if (mask.defined()) {
    scores = scores + mask;
  } else if (causal) {
    for (int64_t i = 0; i < T; ++i) {
      for (int64_t j = S - T + i + 1; j < S; ++j) {
        scores.select(2, i).select(2, j).fill_(-std::numeric_limits<double>::infinity());
      }
    }
  }
  return at::matmul(at::softmax(scores, -1), vv);
}

struct Case {
  int64_t T, S;
  const char* mask;  // "none", "causal", "bool", "additive"
};

class SoftcapAttendTest : public ::testing::TestWithParam<Case> {};

TEST_P(SoftcapAttendTest, MatchesTheReferenceWithAndWithoutGradients) {
  const Case c = GetParam();
  const int64_t B = 2, nh = 4, nkv = 2, d = 8;
  const at::Tensor q0 = Heads(B, nh, c.T, d, 1), k0 = Heads(B, nkv, c.S, d, 2),
                   v0 = Heads(B, nkv, c.S, d, 3);
  at::Tensor mask;
  const std::string kind = c.mask;
  at::Generator gen = at::detail::createCPUGenerator(4);
  if (kind == "bool") {
    mask = at::rand({B, 1, c.T, c.S}, gen, at::kDouble) > 0.3;
    mask.select(3, 0).fill_(true);  // every query sees at least one key
  } else if (kind == "additive") {
    mask = at::where(at::rand({1, 1, c.T, c.S}, gen, at::kDouble) > 0.3, 0.0, -1e9);
    mask.select(3, 0).fill_(0.0);
  }
  const bool causal = kind == "causal";

  {  // no autograd: the in-place path
    at::NoGradGuard no_grad;
    const at::Tensor ref = Reference(q0, k0, v0, mask, causal);
    const at::Tensor out = Attend(q0, k0, v0, mask, causal, kScale, kCap);
    ASSERT_EQ(out.sizes(), ref.sizes());
    EXPECT_LT((out - ref).abs().max().item<double>(), 1e-12);
  }
  // autograd: outputs and the gradients of q, k and v
  auto leaf = [](const at::Tensor& t) { return t.detach().clone().requires_grad_(true); };
  at::Tensor q1 = leaf(q0), k1 = leaf(k0), v1 = leaf(v0), q2 = leaf(q0), k2 = leaf(k0),
             v2 = leaf(v0);
  const at::Tensor weights = at::randn({B, nh, c.T, d}, gen, at::kDouble);
  const at::Tensor out = Attend(q1, k1, v1, mask, causal, kScale, kCap);
  const at::Tensor ref = Reference(q2, k2, v2, mask, causal);
  EXPECT_LT((out - ref).abs().max().item<double>(), 1e-12);
  (out * weights).sum().backward();
  (ref * weights).sum().backward();
  EXPECT_LT((q1.grad() - q2.grad()).abs().max().item<double>(), 1e-10);
  EXPECT_LT((k1.grad() - k2.grad()).abs().max().item<double>(), 1e-10);
  EXPECT_LT((v1.grad() - v2.grad()).abs().max().item<double>(), 1e-10);
}

INSTANTIATE_TEST_SUITE_P(Masks, SoftcapAttendTest,
                         ::testing::Values(Case{5, 5, "none"}, Case{5, 5, "causal"},
                                           Case{3, 7, "causal"}, Case{1, 7, "bool"},
                                           Case{4, 6, "additive"}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.mask) + "_T" +
                                  std::to_string(info.param.T) + "_S" + std::to_string(info.param.S);
                         });

}  // namespace
}  // namespace oft
