#include "server/model/hf_config.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace oft {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Meta-Llama-3.1-8B-Instruct config.json (transformers 4.x keys).
constexpr char kLlama31[] = R"json({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})json";

// Qwen2.5-0.5B-Instruct config.json: tied embeddings, no attention_bias key.
constexpr char kQwen25[] = R"json({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 21,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})json";

// Mistral-7B-v0.1 config.json: sliding window, no head_dim.
constexpr char kMistral7B[] = R"json({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})json";

// transformers 5.x layout: rope_parameters, "dtype".
constexpr char kLlamaV5[] = R"json({
  "architectures": ["LlamaForCausalLM"],
  "dtype": "float16",
  "head_dim": 8,
  "hidden_size": 32,
  "intermediate_size": 64,
  "model_type": "llama",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 2,
  "pad_token_id": null,
  "eos_token_id": null,
  "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 128, "rope_theta": 500000.0,
                      "rope_type": "llama3"},
  "vocab_size": 96
})json";

ModelConfig MustParse(const std::string& text) {
  auto c = ParseModelConfig(text);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

TEST(HfConfig, Llama31) {
  ModelConfig c = MustParse(kLlama31);
  EXPECT_EQ(c.arch, ModelArch::kLlama);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->rope_type, "llama3");
  EXPECT_EQ(c.rope_scaling->factor, 8.0);
  EXPECT_EQ(c.rope_scaling->low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling->high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.o_proj_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_FALSE(c.pad_token_id.has_value());
  EXPECT_FALSE(c.sliding_window.has_value());
}

TEST(HfConfig, Qwen25TiedWithQkvBias) {
  ModelConfig c = MustParse(kQwen25);
  EXPECT_EQ(c.arch, ModelArch::kQwen2);
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.attention_bias);  // implied by the architecture
  EXPECT_FALSE(c.o_proj_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_FALSE(c.sliding_window.has_value());  // use_sliding_window is false
  EXPECT_THAT(c.eos_token_ids, ElementsAre(151645));
}

TEST(HfConfig, Mistral7B) {
  ModelConfig c = MustParse(kMistral7B);
  EXPECT_EQ(c.arch, ModelArch::kMistral);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.attention_bias);

  ModelConfig no_window =
      MustParse(absl::StrReplaceAll(kMistral7B, {{"\"sliding_window\": 4096", "\"sliding_window\": null"}}));
  EXPECT_FALSE(no_window.sliding_window.has_value());
}

TEST(HfConfig, TransformersV5Layout) {
  ModelConfig c = MustParse(kLlamaV5);
  EXPECT_EQ(c.torch_dtype, "float16");
  EXPECT_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 128);
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_EQ(c.max_position_embeddings, 2048);  // LlamaConfig default

  ModelConfig d = MustParse(absl::StrReplaceAll(
      kLlamaV5, {{"\"rope_type\": \"llama3\"", "\"rope_type\": \"default\""}}));
  EXPECT_FALSE(d.rope_scaling.has_value());
  // Defaults when optional keys are absent.
  ModelConfig e = MustParse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10,
      "hidden_size": 16, "intermediate_size": 8, "num_hidden_layers": 1,
      "num_attention_heads": 4})");
  EXPECT_EQ(e.num_key_value_heads, 4);
  EXPECT_EQ(e.head_dim, 4);
  EXPECT_EQ(e.rope_theta, 10000.0);
  EXPECT_EQ(e.rms_norm_eps, 1e-6);
  EXPECT_FALSE(e.tie_word_embeddings);
  EXPECT_EQ(e.hidden_act, "silu");
}

TEST(HfConfig, BadConfigsNameTheField) {
  struct Case {
    const char* what;
    std::string text;
    const char* message;
  };
  auto edit = [](const char* base, const char* from, const char* to) {
    std::string out = absl::StrReplaceAll(base, {{from, to}});
    EXPECT_NE(out, base) << "edit did not apply: " << from;
    return out;
  };
  const std::vector<Case> cases = {
      {"gpt2", edit(kLlama31, "LlamaForCausalLM", "GPT2LMHeadModel"),
       "architectures[0] 'GPT2LMHeadModel' is not supported; supported: LlamaForCausalLM, "
       "Qwen2ForCausalLM, MistralForCausalLM"},
      {"no architectures", edit(kLlama31, "\"architectures\"", "\"archs\""),
       "architectures must be a non-empty list"},
      {"missing hidden_size", edit(kLlama31, "\"hidden_size\"", "\"hidden_sz\""),
       "hidden_size is required"},
      {"kv heads", edit(kLlama31, "\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5"),
       "num_key_value_heads (5) must divide num_attention_heads (32)"},
      {"heads vs hidden", edit(kMistral7B, "\"num_attention_heads\": 32", "\"num_attention_heads\": 24"),
       "num_attention_heads (24) must divide hidden_size (4096) when head_dim is absent"},
      {"negative vocab", edit(kLlama31, "128256", "-3"), "vocab_size must be in [1, 1073741824], got -3"},
      {"string size", edit(kLlama31, "\"intermediate_size\": 14336", "\"intermediate_size\": \"big\""),
       "intermediate_size must be an integer, got \"big\""},
      {"float layers", edit(kLlama31, "\"num_hidden_layers\": 32", "\"num_hidden_layers\": 32.5"),
       "num_hidden_layers must be an integer"},
      {"rope longrope", edit(kLlama31, "\"rope_type\": \"llama3\"", "\"rope_type\": \"longrope\""),
       "rope_scaling.rope_type 'longrope' is not supported; supported: default, dynamic, linear, "
       "llama3, yarn"},
      {"dynamic factor below 1", edit(edit(kLlama31, "\"rope_type\": \"llama3\"",
                                           "\"rope_type\": \"dynamic\"").c_str(),
                                      "\"factor\": 8.0", "\"factor\": 0.5"),
       "rope_scaling.factor must be >= 1 for rope_type dynamic, got 0.5"},
      {"dynamic missing factor", edit(edit(kLlama31, "\"rope_type\": \"llama3\"",
                                           "\"rope_type\": \"dynamic\"").c_str(),
                                      "\"factor\": 8.0,", ""),
       "rope_scaling.factor is required for rope_type dynamic"},
      {"yarn missing original context", edit(edit(kLlama31, "\"rope_type\": \"llama3\"",
                                                  "\"rope_type\": \"yarn\"").c_str(),
                                             "\"original_max_position_embeddings\": 8192", "\"x\": 0"),
       "rope_scaling.original_max_position_embeddings is required for rope_type yarn"},
      {"yarn bad beta", edit(edit(kLlama31, "\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\"").c_str(),
                             "\"low_freq_factor\": 1.0", "\"beta_slow\": -1.0"),
       "rope_scaling.beta_slow must be > 0, got -1"},
      {"legacy type su", edit(kLlama31, "\"rope_type\": \"llama3\"", "\"type\": \"su\""),
       "rope_scaling.rope_type 'su' is not supported"},
      {"llama3 missing factor", edit(kLlama31, "\"factor\": 8.0,", ""),
       "rope_scaling.factor is required for rope_type llama3"},
      {"llama3 bad freq", edit(kLlama31, "\"high_freq_factor\": 4.0", "\"high_freq_factor\": 0.5"),
       "rope_scaling.high_freq_factor (0.5) must be > low_freq_factor (1)"},
      {"rope_scaling not object", edit(kLlama31, "\"rope_scaling\": {", "\"rope_scaling\": [1], \"x\": {"),
       "rope_scaling must be an object or null"},
      {"gelu", edit(kLlama31, "\"silu\"", "\"gelu\""), "hidden_act 'gelu' is not supported"},
      {"eps", edit(kLlama31, "1e-05", "0"), "rms_norm_eps must be in (0, 1), got 0"},
      {"dtype", edit(kLlama31, "\"bfloat16\"", "\"int8\""), "torch_dtype 'int8' is not supported"},
      {"bos range", edit(kLlama31, "128000", "999999"),
       "bos_token_id must be in [0, vocab_size=128256), got 999999"},
      {"eos list", edit(kLlama31, "128008", "\"x\""), "eos_token_id[1] must be an integer"},
      {"qwen sliding", edit(kQwen25, "\"use_sliding_window\": false", "\"use_sliding_window\": true"),
       "use_sliding_window = true is not supported"},
      {"bool type", edit(kLlama31, "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": 1"),
       "tie_word_embeddings must be true or false"},
      {"not json", "{\"architectures\": [", "not valid JSON"},
      {"not object", "[1]", "must be a JSON object"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto parsed = ParseModelConfig(c.text, "model/config.json");
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("model/config.json: "));
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.message));
  }
}

void ExpectSameConfig(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  ASSERT_EQ(a.rope_scaling.has_value(), b.rope_scaling.has_value());
  if (a.rope_scaling.has_value()) {
    EXPECT_EQ(a.rope_scaling->rope_type, b.rope_scaling->rope_type);
    EXPECT_EQ(a.rope_scaling->factor, b.rope_scaling->factor);
    EXPECT_EQ(a.rope_scaling->low_freq_factor, b.rope_scaling->low_freq_factor);
    EXPECT_EQ(a.rope_scaling->high_freq_factor, b.rope_scaling->high_freq_factor);
    EXPECT_EQ(a.rope_scaling->original_max_position_embeddings,
              b.rope_scaling->original_max_position_embeddings);
  }
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.o_proj_bias, b.o_proj_bias);
  EXPECT_EQ(a.mlp_bias, b.mlp_bias);
  EXPECT_EQ(a.torch_dtype, b.torch_dtype);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.hidden_act, b.hidden_act);
}

TEST(HfConfig, ToJsonRoundTrips) {
  for (const char* text : {kLlama31, kQwen25, kMistral7B, kLlamaV5}) {
    ModelConfig c = MustParse(text);
    std::string out = ToJson(c);
    SCOPED_TRACE(out);
    ExpectSameConfig(MustParse(out), c);
  }
}

// Dynamic NTK RoPE (legacy "type" spelling too): parsed, written back, and the context it
// serves is max_position_embeddings x factor.
TEST(HfConfig, DynamicRopeExtendsTheContext) {
  std::string text = kLlama31;
  const std::string from = R"("rope_type": "llama3")";
  text.replace(text.find(from), from.size(), R"("type": "dynamic")");
  ModelConfig c = MustParse(text);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->rope_type, "dynamic");
  EXPECT_EQ(c.rope_scaling->factor, 8.0);
  EXPECT_EQ(c.ContextLength(), c.max_position_embeddings * 8);
  ModelConfig back = MustParse(ToJson(c));
  ExpectSameConfig(back, c);
  EXPECT_EQ(back.rope_scaling->rope_type, "dynamic");
  EXPECT_EQ(MustParse(kLlama31).ContextLength(), MustParse(kLlama31).max_position_embeddings);
}

TEST(HfConfig, ValidateChecksHandBuiltConfigs) {
  ModelConfig c = MustParse(kQwen25);
  EXPECT_TRUE(c.Validate().ok());
  c.attention_bias = false;  // Qwen2's modeling code always has q/k/v biases
  EXPECT_THAT(std::string(c.Validate().message()), HasSubstr("attention_bias"));
  ModelConfig m = MustParse(kMistral7B);
  m.head_dim = 7;
  EXPECT_THAT(std::string(m.Validate().message()), HasSubstr("head_dim must be even"));
}

// ---- The families beyond Llama (transformers 4.x layouts; 5.x ones come from the parity
// fixtures, which transformers writes) ----

std::string Family(const std::string& arch, const std::string& extra) {
  return absl::StrCat(R"({"architectures": [")", arch, R"("], "vocab_size": 96, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2)", extra, "}");
}

void ExpectSameFamily(const ModelFamily& a, const ModelFamily& b) {
  EXPECT_EQ(a.norm, b.norm);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.activation, b.activation);
  EXPECT_EQ(a.pre_attn_norm, b.pre_attn_norm);
  EXPECT_EQ(a.post_attn_norm, b.post_attn_norm);
  EXPECT_EQ(a.pre_ffn_norm, b.pre_ffn_norm);
  EXPECT_EQ(a.post_ffn_norm, b.post_ffn_norm);
  EXPECT_DOUBLE_EQ(a.embedding_scale, b.embedding_scale);
  EXPECT_EQ(a.attention_scale.has_value(), b.attention_scale.has_value());
  if (a.attention_scale && b.attention_scale) {
    EXPECT_DOUBLE_EQ(*a.attention_scale, *b.attention_scale);
  }
  EXPECT_EQ(a.residual_multiplier, b.residual_multiplier);
  EXPECT_EQ(a.logits_divisor, b.logits_divisor);
  EXPECT_EQ(a.attn_logit_softcap, b.attn_logit_softcap);
  EXPECT_EQ(a.final_logit_softcap, b.final_logit_softcap);
  EXPECT_EQ(a.sliding_layers, b.sliding_layers);
  EXPECT_EQ(a.local_rope_theta, b.local_rope_theta);
  EXPECT_EQ(a.fused_qkv, b.fused_qkv);
  EXPECT_EQ(a.fused_gate_up, b.fused_gate_up);
  EXPECT_EQ(a.partial_rotary_factor, b.partial_rotary_factor);
}

TEST(HfConfig, FamiliesFillTheirDescription) {
  ModelConfig q3 = MustParse(Family("Qwen3ForCausalLM", R"(, "attention_bias": true)"));
  EXPECT_EQ(q3.head_dim, 128);  // Qwen3Config default, not hidden / heads
  EXPECT_EQ(q3.family.qk_norm, QkNorm::kPerHead);
  EXPECT_TRUE(q3.attention_bias && q3.o_proj_bias);

  ModelConfig o2 = MustParse(Family("Olmo2ForCausalLM", ""));
  EXPECT_EQ(o2.family.qk_norm, QkNorm::kFullProjection);
  EXPECT_EQ(o2.family.pre_attn_norm, "");
  EXPECT_EQ(o2.family.post_ffn_norm, "post_feedforward_layernorm");

  ModelConfig gr = MustParse(Family("GraniteForCausalLM", R"(, "embedding_multiplier": 12.0,
      "attention_multiplier": 0.015625, "residual_multiplier": 0.22, "logits_scaling": 8.0)"));
  EXPECT_EQ(gr.family.embedding_scale, 12.0);
  EXPECT_EQ(gr.family.attention_scale, 0.015625);
  EXPECT_EQ(gr.family.residual_multiplier, 0.22);
  EXPECT_EQ(gr.family.logits_divisor, 8.0);

  ModelConfig g2 = MustParse(Family("Gemma2ForCausalLM", R"(, "head_dim": 8,
      "query_pre_attn_scalar": 144, "final_logit_softcapping": null)"));
  EXPECT_EQ(g2.family.norm, NormKind::kOnePlusWeight);
  EXPECT_EQ(g2.family.activation, Activation::kGeluTanh);
  EXPECT_DOUBLE_EQ(*g2.family.attention_scale, 1.0 / 12);
  EXPECT_DOUBLE_EQ(g2.family.embedding_scale, std::sqrt(32.0));
  EXPECT_EQ(g2.family.attn_logit_softcap, 50.0);                 // default
  EXPECT_FALSE(g2.family.final_logit_softcap.has_value());       // null: none
  EXPECT_EQ(g2.sliding_window, 4096);
  EXPECT_EQ(g2.family.sliding_layers, (std::vector<bool>{true, false, true, false}));
  EXPECT_TRUE(g2.tie_word_embeddings);

  ModelConfig g3 = MustParse(Family("Gemma3ForCausalLM", R"(, "head_dim": 8,
      "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 512,
      "sliding_window_pattern": 2, "rope_scaling": {"rope_type": "linear", "factor": 8.0})"));
  EXPECT_EQ(g3.family.qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(g3.family.local_rope_theta, 10000.0);
  EXPECT_EQ(g3.rope_theta, 1e6);
  ASSERT_TRUE(g3.rope_scaling.has_value());
  EXPECT_EQ(g3.rope_scaling->rope_type, "linear");
  EXPECT_FALSE(g3.family.attn_logit_softcap.has_value());
  EXPECT_EQ(g3.family.sliding_layers, (std::vector<bool>{true, false, true, false}));

  ModelConfig p3 = MustParse(Family("Phi3ForCausalLM", R"(, "partial_rotary_factor": 0.75,
      "sliding_window": 2047)"));
  EXPECT_TRUE(p3.family.fused_qkv && p3.family.fused_gate_up);
  EXPECT_EQ(p3.family.linears_per_layer(), 4);
  EXPECT_EQ(p3.family.partial_rotary_factor, 0.75);
  EXPECT_EQ(p3.sliding_window, 2047);

  for (const ModelConfig* c : {&q3, &o2, &gr, &g2, &g3, &p3}) {
    SCOPED_TRACE(c->architecture);
    ModelConfig back = MustParse(ToJson(*c));
    ExpectSameConfig(back, *c);
    ExpectSameFamily(back.family, c->family);
  }
}

TEST(HfConfig, FamilyErrorsNameTheField) {
  struct Case {
    std::string text, want;
  };
  const Case cases[] = {
      {Family("Phi3ForCausalLM", R"(, "rope_scaling": {"type": "longrope", "short_factor": [1],
          "long_factor": [1]})"),
       "rope_scaling.rope_type 'longrope' is not supported; supported: default, dynamic, linear, "
       "llama3, yarn"},
      {Family("Gemma3ForCausalLM", R"(, "use_bidirectional_attention": true)"),
       "use_bidirectional_attention = true is not supported"},
      {Family("Gemma2ForCausalLM", R"(, "layer_types": ["sliding_attention", "chunked"])"),
       "layer_types[1] must be \"sliding_attention\" or \"full_attention\""},
      {Family("Gemma2ForCausalLM", R"(, "layer_types": ["sliding_attention"])"),
       "layer_types has 1 entries for num_hidden_layers=4"},
      {Family("GraniteForCausalLM", R"(, "logits_scaling": 0)"),
       "logits_scaling must be a finite number > 0, got 0"},
      {Family("Phi3ForCausalLM", R"(, "partial_rotary_factor": 0.1)"),
       "partial_rotary_factor gives 0 rotary dims of head_dim 8"},
      {Family("Qwen3ForCausalLM", R"(, "use_sliding_window": true)"),
       "use_sliding_window = true is not supported"},
      {Family("GPTNeoXForCausalLM", ""),
       "'GPTNeoXForCausalLM' is not supported; supported: LlamaForCausalLM, Qwen2ForCausalLM, "
       "MistralForCausalLM, Qwen3ForCausalLM, Olmo2ForCausalLM, GraniteForCausalLM, "
       "Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto parsed = ParseModelConfig(c.text);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.want));
  }
}

// ---- Interop: configs transformers wrote; what we write must load back (python check) ----

TEST(HfConfigInterop, ParsesTransformersConfigsAndWritesOurs) {
  const char* root_env = std::getenv("OFT_MODEL_FIXTURES");
  if (root_env == nullptr) GTEST_SKIP() << "run through ctest test hf_config_interop";
  const std::string root = root_env;
  auto llama = LoadModelConfig(root + "/py/sharded_llama");
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->head_dim, 8);
  EXPECT_EQ(llama->rope_theta, 500000.0);
  ASSERT_TRUE(llama->rope_scaling.has_value());
  EXPECT_EQ(llama->rope_scaling->original_max_position_embeddings, 128);
  EXPECT_THAT(llama->eos_token_ids, ElementsAre(2, 3));
  EXPECT_EQ(llama->torch_dtype, "bfloat16");
  auto qwen = LoadModelConfig(root + "/py/qwen2_tiny");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_TRUE(qwen->tie_word_embeddings);
  EXPECT_TRUE(qwen->attention_bias);

  auto missing = LoadModelConfig(root + "/py/nothing_here");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  for (const auto& [name, config] :
       std::vector<std::pair<std::string, ModelConfig>>{{"sharded_llama", *llama}, {"qwen2_tiny", *qwen}}) {
    const std::string dir = absl::StrCat(root, "/cpp/configs/", name);
    ::mkdir((root + "/cpp").c_str(), 0755);
    ::mkdir((root + "/cpp/configs").c_str(), 0755);
    ::mkdir(dir.c_str(), 0755);
    std::ofstream(dir + "/config.json", std::ios::trunc) << ToJson(config);
    auto back = LoadModelConfig(dir);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameConfig(*back, config);
  }
}

}  // namespace
}  // namespace oft
