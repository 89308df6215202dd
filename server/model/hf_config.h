// config.json of a Hugging Face decoder-only model of a supported family: Llama, Qwen2,
// Mistral, Qwen3, OLMo 2, Granite, Gemma 2, Gemma 3 (text), Phi-3. What sets a family apart
// from Llama (norms, activation, scalings, attention pattern, fused projections) is parsed
// into ModelConfig::family (model_family.h), which the decoder reads.
//
// ParseModelConfig() accepts what transformers 4.x and 5.x write: rope settings either as
// top-level "rope_theta" + "rope_scaling" (4.x) or as "rope_parameters" (5.x), the dtype
// as "torch_dtype" or "dtype". Missing optional keys get the transformers defaults of the
// architecture. Everything the decoder needs is validated; each error is INVALID_ARGUMENT
// naming the source and the field, e.g.
//   "config.json: num_key_value_heads (5) must divide num_attention_heads (32)".
// ToJson() writes a config.json that transformers loads back to the same model shape.
#ifndef OFT_SERVER_MODEL_HF_CONFIG_H_
#define OFT_SERVER_MODEL_HF_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/model_family.h"

namespace oft {

enum class ModelArch {
  kLlama, kQwen2, kMistral, kQwen3, kOlmo2, kGranite, kGemma2, kGemma3, kPhi3
};

// RoPE scaling: "llama3" (Llama 3.1's frequency-dependent rule), "linear" (positions
// divided by `factor`, as Gemma 3 uses on its global layers), "yarn" (YaRN, as Qwen3's
// long-context configs: frequencies blended between interpolation and extrapolation over a
// ramp of rotary dims, cos/sin multiplied by attention_factor) or "dynamic" (NTK-aware: past
// max_position_embeddings M, a forward reaching length L uses the base
// theta * (factor * L / M - (factor - 1))^(d / (d - 2)); transformers' rule, whose cached keys
// keep the frequencies of the forward that wrote them). "longrope" (Phi-3 128k: short/long
// factors and a KV-cache re-prefill at the switch) is refused by name.
struct RopeScaling {
  std::string rope_type = "llama3";              // "llama3", "linear", "yarn" or "dynamic"
  double factor = 8.0;                            // > 0 (dynamic: >= 1)
  double low_freq_factor = 1.0;                   // > 0 (llama3 only)
  double high_freq_factor = 4.0;                  // > low_freq_factor (llama3 only)
  int64_t original_max_position_embeddings = 8192;  // > 0 (llama3, yarn)
  double attention_factor = 1.0;  // > 0, multiplies cos and sin (yarn: given, or from factor
                                  // and mscale / mscale_all_dim as transformers infers it)
  double beta_fast = 32.0;        // > 0 (yarn: extrapolation boundary, in rotations)
  double beta_slow = 1.0;         // > 0 (yarn: interpolation boundary, in rotations)
  bool truncate = true;           // yarn: round the correction range outwards to whole dims
};

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // architectures[0]
  ModelArch arch = ModelArch::kLlama;             // follows `architecture`
  std::string model_type = "llama";               // "llama", "qwen2", "gemma3_text", ...
  int64_t vocab_size = 0;                         // > 0
  int64_t hidden_size = 0;                        // > 0
  int64_t intermediate_size = 0;                  // > 0 (MLP width)
  int64_t num_hidden_layers = 0;                  // > 0
  int64_t num_attention_heads = 0;                // > 0
  int64_t num_key_value_heads = 0;                // > 0, divides num_attention_heads (GQA)
  int64_t head_dim = 0;                           // > 0; default hidden_size / heads
  double rms_norm_eps = 1e-6;                     // in (0, 1)
  double rope_theta = 10000.0;                    // > 0 (RoPE base)
  std::optional<RopeScaling> rope_scaling;        // nullopt: plain ("default") RoPE
  int64_t max_position_embeddings = 2048;         // > 0
  // The longest sequence this model serves and trains on: max_position_embeddings, times
  // `factor` under dynamic NTK RoPE (which exists to run past it; vLLM sizes it the same way).
  int64_t ContextLength() const;
  bool tie_word_embeddings = false;               // lm_head shares embed_tokens' weight
  bool attention_bias = false;                    // q/k/v projections have a bias
  bool o_proj_bias = false;                       // o_proj has a bias (Llama: = attention_bias)
  bool mlp_bias = false;                          // gate/up/down have biases (Llama only)
  std::string torch_dtype;                        // "bfloat16", "float16", "float32",
                                                  //   "float64", or "" when absent
  std::optional<int64_t> bos_token_id;            // nullopt when absent or null
  std::vector<int64_t> eos_token_ids;             // "eos_token_id": int or list; may be empty
  std::optional<int64_t> pad_token_id;            // nullopt when absent or null
  std::optional<int64_t> sliding_window;          // attention window of the sliding layers
                                                  //   (family.sliding_layers); nullopt: none
  std::string hidden_act = "silu";                // "silu" or "gelu_pytorch_tanh"; sets
                                                  //   family.activation
  ModelFamily family;                             // what the architecture changes

  // Checks ranges and the invariants listed per field; the error names the field.
  absl::Status Validate() const;
};

// Architectures ParseModelConfig accepts, as spelled in "architectures".
const std::vector<std::string>& SupportedArchitectures();

// Parses config.json text. `source` names the file in error messages.
// Errors: INVALID_ARGUMENT (not a JSON object; unsupported architecture, naming it and
// the supported ones; missing/mistyped/out-of-range field; unsupported rope type or
// hidden_act; Qwen2/Qwen3 use_sliding_window=true; Phi-3 longrope; Gemma 3
// use_bidirectional_attention=true).
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source = "config.json");

// Reads `dir`/config.json. Errors: NOT_FOUND when absent, else as ParseModelConfig.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// config.json text (2-space indented) for `config`, loadable by transformers 4.x and 5.x.
// `config` should satisfy Validate().
std::string ToJson(const ModelConfig& config);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_HF_CONFIG_H_
