// Our decoder's logits against transformers' on tiny random checkpoints
// (make_llama_fixtures.py): Llama 3 (llama3 RoPE scaling), Llama 2 sharded bf16 weights,
// Qwen2 (qkv bias, tied embeddings), Mistral (sliding window). fp32, max abs error <= 1e-4
// at every non-padding position. Also: KV-cache decoding equals the full forward, and a
// mis-shaped tensor or unsupported architecture gives an error naming it.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/model/llama.h"
#include "server/model/safetensors.h"

namespace oft {
namespace {

std::string FixtureDir() {
  const char* d = std::getenv("OFT_LLAMA_FIXTURES");
  return d ? d : "";
}

struct Expected {
  torch::Tensor ids, mask, logits;
};

Expected LoadExpected(const std::string& dir) {
  auto f = SafetensorsFile::Open(dir + "/expected.safetensors");
  EXPECT_TRUE(f.ok()) << f.status();
  return {(*f)->Tensor("ids").value(), (*f)->Tensor("attention_mask").value(),
          (*f)->Tensor("logits").value()};
}

class LlamaParity : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaParity, LogitsMatchTransformers) {
  if (FixtureDir().empty()) GTEST_SKIP() << "OFT_LLAMA_FIXTURES not set";
  const std::string dir = FixtureDir() + "/" + GetParam();
  torch::set_num_threads(2);
  auto model = LlamaModel::Load(dir, LoadOptions{});
  ASSERT_TRUE(model.ok()) << model.status();
  auto e = LoadExpected(dir);
  torch::NoGradGuard ng;
  ForwardOptions fo;
  fo.attention_mask = e.mask;
  auto logits = (*model)->Forward(e.ids, fo).to(torch::kFloat32);
  ASSERT_EQ(logits.sizes(), e.logits.sizes());
  auto valid = e.mask.to(torch::kBool).unsqueeze(-1).expand_as(logits);
  const double err = (logits - e.logits).abs().masked_select(valid).max().item<double>();
  EXPECT_LE(err, 1e-4) << GetParam();
  std::cout << GetParam() << ": max abs error " << err << "\n";
}

TEST_P(LlamaParity, KvCacheDecodingEqualsFullForward) {
  if (FixtureDir().empty()) GTEST_SKIP() << "OFT_LLAMA_FIXTURES not set";
  const std::string dir = FixtureDir() + "/" + GetParam();
  auto model = LlamaModel::Load(dir, LoadOptions{});
  ASSERT_TRUE(model.ok()) << model.status();
  auto e = LoadExpected(dir);
  torch::NoGradGuard ng;
  auto ids = e.ids.narrow(0, 0, 1);  // first row has no padding
  auto full = (*model)->Forward(ids);
  KvCache cache;
  ForwardOptions fo;
  fo.cache = &cache;
  auto first = (*model)->Forward(ids.narrow(1, 0, 5), fo);
  std::vector<torch::Tensor> parts{first};
  for (int64_t t = 5; t < ids.size(1); ++t) parts.push_back((*model)->Forward(ids.narrow(1, t, 1), fo));
  auto inc = torch::cat(parts, 1);
  EXPECT_LT((inc - full).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(cache.length, ids.size(1));
}

INSTANTIATE_TEST_SUITE_P(Models, LlamaParity,
                         ::testing::Values("llama3", "llama2_sharded_bf16", "qwen2_tied", "mistral"));

TEST(LlamaErrors, MisShapedAndMissingTensorsAreNamed) {
  ModelConfig c;
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  std::map<std::string, torch::Tensor> w = {
      {"model.embed_tokens.weight", torch::zeros({10, 8})},
      {"model.norm.weight", torch::ones({8})},
      {"model.layers.0.input_layernorm.weight", torch::ones({8})},
      {"model.layers.0.post_attention_layernorm.weight", torch::ones({8})},
      {"model.layers.0.self_attn.q_proj.weight", torch::zeros({8, 8})},
      {"model.layers.0.self_attn.k_proj.weight", torch::zeros({4, 8})},
      {"model.layers.0.self_attn.v_proj.weight", torch::zeros({4, 8})},
      {"model.layers.0.self_attn.o_proj.weight", torch::zeros({8, 8})},
      {"model.layers.0.mlp.gate_proj.weight", torch::zeros({16, 8})},
      {"model.layers.0.mlp.up_proj.weight", torch::zeros({16, 8})},
      {"model.layers.0.mlp.down_proj.weight", torch::zeros({8, 16})},
      {"lm_head.weight", torch::zeros({10, 8})},
  };
  auto source = [&](const std::string& n) -> absl::StatusOr<at::Tensor> {
    auto it = w.find(n);
    if (it == w.end()) return absl::NotFoundError(n);
    return it->second;
  };
  EXPECT_TRUE(LlamaModel::FromSource(c, source, {}).ok());
  w["model.layers.0.self_attn.k_proj.weight"] = torch::zeros({8, 8});
  auto s = LlamaModel::FromSource(c, source, {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("\"model.layers.0.self_attn.k_proj.weight\" has shape [8, 8], expected [4, 8]"),
            std::string::npos) << s;
  w["model.layers.0.self_attn.k_proj.weight"] = torch::zeros({4, 8});
  w.erase("lm_head.weight");
  s = LlamaModel::FromSource(c, source, {}).status();
  EXPECT_NE(s.message().find("missing tensor \"lm_head.weight\""), std::string::npos) << s;
}

TEST(LlamaErrors, UnsupportedArchitecture) {
  auto dir = std::filesystem::temp_directory_path() / "oft_gpt2_model";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})";
  auto s = LlamaModel::Load(dir.string(), {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("GPT2LMHeadModel"), std::string::npos) << s;
}

}  // namespace
}  // namespace oft
