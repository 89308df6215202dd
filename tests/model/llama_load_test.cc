// LlamaModel loading refuses base weights that hold NaN or Inf, naming the tensor (issue 16):
// such a checkpoint used to load and give empty completions.
#include <limits>
#include <map>
#include <string>

#include "ATen/ATen.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/llama.h"
#include "tests/train/tiny_model.h"

namespace oft {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadFrom(const ModelConfig& c,
                                                     const std::map<std::string, at::Tensor>& t,
                                                     at::ScalarType dtype = at::kFloat) {
  LoadOptions o;
  o.dtype = dtype;
  return LlamaModel::FromSource(
      c, [&](const std::string& n) -> absl::StatusOr<at::Tensor> { return t.at(n); }, o);
}

TEST(LlamaLoadTest, CleanWeightsLoad) {
  const ModelConfig c = testing::TinyConfig();
  auto model = LoadFrom(c, testing::RandomLlamaTensors(c, 3));
  EXPECT_TRUE(model.ok()) << model.status();
}

TEST(LlamaLoadTest, NanOrInfWeightIsRejectedNamingTheTensor) {
  const ModelConfig c = testing::TinyConfig();
  for (const char* name : {"model.layers.1.mlp.down_proj.weight", "model.norm.weight",
                           "model.embed_tokens.weight"}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      auto tensors = testing::RandomLlamaTensors(c, 3);
      ASSERT_TRUE(tensors.count(name)) << name;
      at::Tensor t = tensors.at(name).clone();
      t.view(-1)[t.numel() / 2] = bad;
      tensors[name] = t;
      auto model = LoadFrom(c, tensors);
      ASSERT_FALSE(model.ok()) << name << " with " << bad << " loaded";
      EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(model.status().message()),
                  HasSubstr(std::string("tensor \"") + name + "\" holds NaN or Inf"));
    }
  }
}

TEST(LlamaLoadTest, ValueOutsideTheComputeDtypeIsRejected) {
  // 1e39 is a finite float32 but overflows bfloat16 (max about 3.4e38) to Inf.
  const ModelConfig c = testing::TinyConfig();
  auto tensors = testing::RandomLlamaTensors(c, 3);
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  at::Tensor t = tensors.at(name).to(at::kDouble).clone();
  t.view(-1)[0] = 1e39;
  tensors[name] = t;
  auto model = LoadFrom(c, tensors, at::kBFloat16);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr(name));
}

}  // namespace
}  // namespace oft
