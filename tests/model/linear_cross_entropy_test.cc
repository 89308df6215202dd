// LinearCrossEntropy against the unfused reference (linear, divisor, soft-cap, then
// at::cross_entropy_loss in fp32), and LlamaModel::CausalLmLoss against Forward + loss.
#include "server/model/linear_cross_entropy.h"

#include <gtest/gtest.h>

#include <functional>
#include <optional>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "server/model/llama.h"
#include "tests/train/tiny_model.h"

namespace oft {
namespace {

struct Case {
  at::ScalarType dtype = at::kFloat;
  double divisor = 1.0;
  std::optional<double> softcap;
  bool bias = false;
  int64_t chunk_rows = 33;  // several chunks and a partial last one for N = 70
};

at::Tensor Reference(const at::Tensor& h, const at::Tensor& w, const at::Tensor& b,
                     const at::Tensor& t, const Case& c) {
  at::Tensor z = at::linear(h, w, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
  z = z / c.divisor;
  if (c.softcap) z = at::tanh(z / *c.softcap) * *c.softcap;
  return at::cross_entropy_loss(z.to(at::kFloat), t, {}, at::Reduction::Sum, -100);
}

void Check(const Case& c, double tol) {
  at::manual_seed(3);
  const int64_t n = 70, hidden = 16, vocab = 37;
  at::Tensor h0 = (at::randn({n, hidden}) * 2).to(c.dtype);
  at::Tensor w0 = at::randn({vocab, hidden}).to(c.dtype);
  at::Tensor b0 = c.bias ? at::randn({vocab}).to(c.dtype) : at::Tensor();
  at::Tensor t = at::randint(0, vocab, {n}, at::TensorOptions().dtype(at::kLong));
  t[2] = -100;
  t[11] = -100;
  t[69] = -100;

  auto leaf = [](const at::Tensor& x) { return x.defined() ? x.clone().requires_grad_(true) : x; };
  at::Tensor h1 = leaf(h0), w1 = leaf(w0), b1 = leaf(b0);
  at::Tensor ref = Reference(h1, w1, b1, t, c);
  ref.backward();

  at::Tensor h2 = leaf(h0), w2 = leaf(w0), b2 = leaf(b0);
  LinearCrossEntropyOptions o;
  o.divisor = c.divisor;
  o.softcap = c.softcap;
  o.chunk_rows = c.chunk_rows;
  at::Tensor got = LinearCrossEntropy(h2, w2, b2, t, o);
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_EQ(got.dim(), 0);
  (got * 0.5).backward();  // the incoming gradient scales every input gradient

  EXPECT_NEAR(got.item<double>(), ref.item<double>(), tol * std::abs(ref.item<double>()));
  auto close = [&](const at::Tensor& a, const at::Tensor& r, const char* what) {
    ASSERT_TRUE(a.defined()) << what;
    const double err = (a.to(at::kDouble) - 0.5 * r.to(at::kDouble)).abs().max().item<double>();
    const double scale = r.to(at::kDouble).abs().max().item<double>();
    EXPECT_LE(err, tol * scale + 1e-7) << what;
  };
  close(h2.grad(), h1.grad(), "d h");
  close(w2.grad(), w1.grad(), "d weight");
  if (c.bias) close(b2.grad(), b1.grad(), "d bias");
  // Ignored tokens get no gradient.
  EXPECT_EQ(h2.grad()[2].abs().max().item<double>(), 0.0);

  // Without autograd: the same loss, nothing recorded.
  at::NoGradGuard no_grad;
  at::Tensor plain = LinearCrossEntropy(h0, w0, b0, t, o);
  EXPECT_FALSE(plain.requires_grad());
  EXPECT_NEAR(plain.item<double>(), got.item<double>(), 1e-6 * std::abs(got.item<double>()));
}

Case With(std::function<void(Case&)> f) {
  Case c;
  f(c);
  return c;
}

TEST(LinearCrossEntropy, MatchesLogitsThenLossFp32) { Check(Case(), 1e-5); }
TEST(LinearCrossEntropy, OneChunk) { Check(With([](Case& c) { c.chunk_rows = 0; }), 1e-5); }
TEST(LinearCrossEntropy, Bias) { Check(With([](Case& c) { c.bias = true; }), 1e-5); }
TEST(LinearCrossEntropy, DivisorAndSoftcap) {
  Check(With([](Case& c) { c.divisor = 2.5, c.softcap = 3.0; }), 1e-5);
}
TEST(LinearCrossEntropy, Softcap) { Check(With([](Case& c) { c.softcap = 1.5; }), 1e-5); }
TEST(LinearCrossEntropy, Bf16) {
  Check(With([](Case& c) { c.dtype = at::kBFloat16, c.bias = true; }), 2e-2);
}

TEST(LinearCrossEntropy, AllIgnoredIsZeroWithZeroGradient) {
  at::Tensor h = at::randn({4, 8}).requires_grad_(true);
  at::Tensor w = at::randn({5, 8});
  at::Tensor t = at::full({4}, -100, at::TensorOptions().dtype(at::kLong));
  at::Tensor loss = LinearCrossEntropy(h, w, {}, t);
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  EXPECT_EQ(h.grad().abs().max().item<double>(), 0.0);
}

TEST(LinearCrossEntropy, BadTargetIsNamed) {
  at::Tensor h = at::randn({4, 8});
  at::Tensor w = at::randn({5, 8});
  at::Tensor t = at::tensor({1, 2, 5, 0}, at::TensorOptions().dtype(at::kLong));
  try {
    LinearCrossEntropy(h, w, {}, t);
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("target 5 at token 2 is outside [0, 5)"), std::string::npos)
        << e.what();
  }
}

// The model's fused loss equals Forward's logits + cross-entropy, and so do the adapter
// gradients it produces (what the trainer steps on).
TEST(CausalLmLoss, EqualsForwardThenLossWithAdapterGradients) {
  auto model = testing::MakeTinyModelWithAdapter();
  ASSERT_NE(model, nullptr);
  auto params = model->AdapterParameters("a");
  ASSERT_TRUE(params.ok());

  at::manual_seed(5);
  const int64_t vocab = model->config().vocab_size;
  at::Tensor ids = at::randint(0, vocab, {3, 17}, at::TensorOptions().dtype(at::kLong));
  at::Tensor tgt = at::randint(0, vocab, {3, 17}, at::TensorOptions().dtype(at::kLong));
  tgt.select(1, 16).fill_(-100);
  tgt[1][3] = -100;

  auto grads = [&]() {
    std::vector<at::Tensor> g;
    for (auto& [n, p] : *params) {
      g.push_back(p.grad().clone());
      p.mutable_grad() = at::Tensor();
    }
    return g;
  };
  at::Tensor logits = model->Forward(ids);
  at::Tensor ref = at::cross_entropy_loss(logits.reshape({-1, vocab}).to(at::kFloat),
                                          tgt.reshape({-1}), {}, at::Reduction::Sum, -100);
  ref.backward();
  const auto ref_grads = grads();
  at::Tensor got = model->CausalLmLoss(ids, tgt);
  got.backward();
  const auto got_grads = grads();
  EXPECT_NEAR(got.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>());
  ASSERT_EQ(ref_grads.size(), got_grads.size());
  for (size_t i = 0; i < ref_grads.size(); ++i) {
    const double scale = ref_grads[i].abs().max().item<double>();
    EXPECT_LE((got_grads[i] - ref_grads[i]).abs().max().item<double>(), 1e-4 * scale + 1e-8) << i;
  }
}

}  // namespace
}  // namespace oft
