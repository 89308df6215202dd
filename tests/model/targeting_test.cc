// PEFT's module-targeting rules, and several adapters on one loaded base.
#include "server/model/targeting.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/model/llama.h"
#include "tests/train/tiny_model.h"

namespace oft {
namespace {

const std::vector<std::string> kNames = {
    "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.0.mlp.down_proj",
    "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj", "model.layers.1.mlp.down_proj",
    "model.layers.12.self_attn.q_proj", "lm_head"};

std::vector<std::string> Select(const TargetSpec& s) {
  auto r = SelectTargets(s, kNames, "lm_head");
  return r.ok() ? *r : std::vector<std::string>{r.status().ToString()};
}

TEST(Targeting, SuffixMatchIsOnModuleBoundaries) {
  TargetSpec s;
  s.target_modules = {"q_proj"};
  EXPECT_EQ(Select(s).size(), 3u);
  s.target_modules = {"proj"};  // not a whole module name: PEFT matches nothing
  EXPECT_NE(Select(s)[0].find("matched no Linear module"), std::string::npos);
  s.target_modules = {"self_attn.v_proj"};
  EXPECT_EQ(Select(s), (std::vector<std::string>{"model.layers.0.self_attn.v_proj",
                                                 "model.layers.1.self_attn.v_proj"}));
}

TEST(Targeting, AllLinearSkipsTheOutputLayerAndExcludeWins) {
  TargetSpec s;
  s.target_modules = {"all-linear"};
  EXPECT_EQ(Select(s).size(), kNames.size() - 1);
  s.exclude_modules = {"down_proj"};
  EXPECT_EQ(Select(s).size(), kNames.size() - 3);
  s.exclude_modules.clear();
  s.exclude_regex = R"(.*layers\.1\..*)";
  EXPECT_EQ(Select(s).size(), kNames.size() - 4);
}

TEST(Targeting, RegexAndLayersToTransform) {
  TargetSpec s;
  s.target_regex = R"(.*\.(q|v)_proj)";
  EXPECT_EQ(Select(s).size(), 5u);
  s.layers_to_transform = {1, 12};
  EXPECT_EQ(Select(s), (std::vector<std::string>{"model.layers.1.self_attn.q_proj",
                                                 "model.layers.1.self_attn.v_proj",
                                                 "model.layers.12.self_attn.q_proj"}));
  EXPECT_EQ(LayerIndex("model.layers.12.mlp.up_proj", std::nullopt), 12);
  EXPECT_EQ(LayerIndex("transformer.h.3.attn", std::nullopt), 3);
  EXPECT_EQ(LayerIndex("lm_head", std::nullopt), std::nullopt);
  s.target_regex = "([";
  EXPECT_NE(Select(s)[0].find("target_modules: invalid regex"), std::string::npos);
}

// Client patterns run on RE2 (linear time): the pattern that pinned a server thread under
// std::regex answers at once, a backreference is refused naming its field, and the echoed
// pattern in an error is bounded.
TEST(Targeting, RegexesCannotHangOrFlood) {
  TargetSpec s;
  s.target_regex = "(.*.*)*X";
  EXPECT_TRUE(ValidateTargetSpec(s).ok());
  EXPECT_NE(Select(s)[0].find("matched no Linear module"), std::string::npos);
  EXPECT_FALSE(IsTargeted(s, "model.layers.0." + std::string(20000, 'a'), false));
  s.target_regex = "(.*.*)*proj";
  EXPECT_EQ(Select(s).size(), 7u);

  s.target_regex = R"(.*(q)_\1)";
  auto bad = ValidateTargetSpec(s);
  EXPECT_NE(bad.message().find("target_modules: invalid regex"), std::string::npos) << bad;
  s.target_regex = R"(.*q_proj)";
  s.exclude_regex = std::string(20000, 'x') + "(";
  bad = ValidateTargetSpec(s);
  EXPECT_NE(bad.message().find("exclude_modules"), std::string::npos) << bad.message().substr(0, 200);
  EXPECT_LT(bad.message().size(), 200u);
}

TEST(Targeting, SeveralAdaptersOnOneBase) {
  ModelConfig c;
  c.vocab_size = 16;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  const auto w = testing::RandomLlamaTensors(c, /*seed=*/0);
  auto model = LlamaModel::FromSource(
      c,
      [&](const std::string& n) -> absl::StatusOr<at::Tensor> {
        auto it = w.find(n);
        if (it == w.end()) return absl::NotFoundError(n);
        return it->second;
      },
      {});
  ASSERT_TRUE(model.ok()) << model.status();
  auto& m = **model;
  OftConfig cfg;
  cfg.oft_block_size = 4;
  TargetSpec qv, mlp;
  qv.target_modules = {"q_proj", "v_proj"};
  mlp.target_modules = {"down_proj"};
  ASSERT_TRUE(m.AddAdapter("a", cfg, qv).ok());
  ASSERT_TRUE(m.AddAdapter("b", cfg, mlp).ok());
  EXPECT_EQ(m.AddAdapter("a", cfg, qv).code(), absl::StatusCode::kAlreadyExists);
  OftConfig bad;
  bad.oft_block_size = 0;
  EXPECT_EQ(m.AddAdapter("c", bad, qv).code(), absl::StatusCode::kInvalidArgument);
  for (const char* n : {"a", "b"}) {
    auto params = m.AdapterParameters(n).value();
    torch::NoGradGuard ng;
    for (auto& [k, p] : params) p.normal_(0.0, 0.2);
  }
  auto ids = torch::tensor({{1, 2, 3, 4}}, torch::kLong);
  torch::NoGradGuard ng;
  auto base = m.Forward(ids);
  ASSERT_TRUE(m.SetActiveAdapters({"a"}).ok());
  auto ya = m.Forward(ids);
  ASSERT_TRUE(m.SetActiveAdapters({"b"}).ok());
  auto yb = m.Forward(ids);
  ASSERT_TRUE(m.SetActiveAdapters({"a", "b"}).ok());
  auto yab = m.Forward(ids);
  EXPECT_GT((ya - base).abs().max().item<double>(), 1e-4);
  EXPECT_GT((yb - ya).abs().max().item<double>(), 1e-4);
  EXPECT_GT((yab - ya).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(m.SetActiveAdapters({"zzz"}).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(m.RemoveAdapter("a").ok());
  EXPECT_EQ(m.active_adapters(), std::vector<std::string>{"b"});
  EXPECT_TRUE(torch::equal(m.Forward(ids), yb));
}

}  // namespace
}  // namespace oft
