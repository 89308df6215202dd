// PackedLinear (MKL packed GEMM for decode-time Linears): equals at::linear for every row
// count it takes, odd shapes and bias; rejects what it cannot take; AdaptedLinear uses it.
#include "server/model/packed_linear.h"

#include <gtest/gtest.h>

#include "ATen/ATen.h"
#include "server/model/llama.h"

namespace oft {
namespace {

class PackedLinearTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PackedLinear::Available()) GTEST_SKIP() << "MKL packed GEMM is not in this LibTorch";
    at::manual_seed(7);
  }
};

TEST_F(PackedLinearTest, EqualsLinearForEveryRowCountAndShape) {
  // (out, in): the default model's projections, PEFT's adjusted block 43 sizes, a wide head.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {256, 256}, {128, 256}, {688, 256}, {256, 688}, {4096, 256}, {43, 129}, {1, 7}};
  for (const auto& [out, in] : shapes) {
    for (bool with_bias : {false, true}) {
      const at::Tensor w = at::randn({out, in});
      const at::Tensor b = with_bias ? at::randn({out}) : at::Tensor();
      auto p = PackedLinear::Create(w, b, /*max_rows=*/17);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_GE((*p)->bytes(), out * in * 4);
      for (int64_t rows : {1, 2, 3, 8, 16, 17}) {
        const at::Tensor x = at::randn({rows, 1, in});
        ASSERT_TRUE((*p)->Handles(x));
        const at::Tensor y = (*p)->Forward(x);
        const at::Tensor ref = at::linear(x, w, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
        ASSERT_EQ(y.sizes(), ref.sizes());
        EXPECT_TRUE(at::allclose(y, ref, 1e-4, 1e-4))
            << out << "x" << in << " rows " << rows << " bias " << with_bias << " max diff "
            << (y - ref).abs().max().item<float>();
      }
    }
  }
}

TEST_F(PackedLinearTest, CopiesTheWeightAndTakesNonContiguousInput) {
  at::Tensor w = at::randn({64, 32});
  const at::Tensor ref_w = w.clone();
  auto p = PackedLinear::Create(w, at::Tensor(), 8);
  ASSERT_TRUE(p.ok());
  w.zero_();  // the packed copy is independent
  const at::Tensor x = at::randn({32, 4}).t();  // [4, 32], not contiguous
  EXPECT_TRUE(at::allclose((*p)->Forward(x), at::linear(x, ref_w), 1e-4, 1e-4));
}

TEST_F(PackedLinearTest, RejectsWhatItCannotTake) {
  const at::Tensor w = at::randn({16, 8});
  auto p = PackedLinear::Create(w, at::Tensor(), 4);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE((*p)->Handles(at::randn({5, 8})));                  // more rows than packed for
  EXPECT_FALSE((*p)->Handles(at::randn({2, 9})));                  // wrong in_features
  EXPECT_FALSE((*p)->Handles(at::randn({2, 8}, at::kDouble)));     // not fp32
  EXPECT_FALSE((*p)->Handles(at::randn({2, 8}).to(at::kBFloat16)));
  EXPECT_TRUE((*p)->Handles(at::randn({2, 2, 8})));
  auto bad_dtype = PackedLinear::Create(w.to(at::kDouble), at::Tensor(), 4);
  EXPECT_EQ(bad_dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_dtype.status().message().find("float32"), std::string::npos);
  auto bad_bias = PackedLinear::Create(w, at::randn({15}), 4);
  EXPECT_EQ(bad_bias.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_bias.status().message().find("bias"), std::string::npos);
  auto bad_rows = PackedLinear::Create(w, at::Tensor(), 0);
  EXPECT_EQ(bad_rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_rows.status().message().find("max_rows"), std::string::npos);
}

TEST_F(PackedLinearTest, AdaptedLinearUsesItForSmallInputsOnly) {
  const at::Tensor w = at::randn({48, 32}), b = at::randn({48});
  AdaptedLinear lin("l", w, b);
  auto p = PackedLinear::Create(w, b, 4);
  ASSERT_TRUE(p.ok());
  // A packed copy of another weight makes the hook visible: small inputs take it.
  const at::Tensor other = at::randn({48, 32});
  auto q = PackedLinear::Create(other, b, 4);
  ASSERT_TRUE(q.ok());
  lin.set_packed(std::shared_ptr<const PackedLinear>(std::move(*q)));
  const at::Tensor small = at::randn({2, 32}), large = at::randn({9, 32});
  EXPECT_TRUE(at::allclose(lin.Forward(small, {}), at::linear(small, other, b), 1e-4, 1e-4));
  EXPECT_TRUE(at::allclose(lin.Forward(large, {}), at::linear(large, w, b), 1e-4, 1e-4));
  lin.set_packed(std::shared_ptr<const PackedLinear>(std::move(*p)));
  EXPECT_TRUE(at::allclose(lin.Forward(small, {}), at::linear(small, w, b), 1e-4, 1e-4));
}

}  // namespace
}  // namespace oft
