// What sets one decoder family apart from Llama: norms, activation, scalings, attention
// pattern, fused projections. ParseModelConfig (hf_config.h) fills one ModelFamily per
// architecture from config.json; the decoder (llama.h) reads only this struct, never the
// architecture name. The defaults describe Llama exactly.
//
// Layer layout, in transformers' terms (each norm present when its name is non-empty):
//   a = attention(pre_attn_norm(h));  h = h + residual_multiplier * post_attn_norm(a)
//   m = mlp(pre_ffn_norm(h));         h = h + residual_multiplier * post_ffn_norm(m)
// Llama: pre_attn = input_layernorm, pre_ffn = post_attention_layernorm.
// Gemma 2/3: all four (post_attention_layernorm is the attention *output* norm there).
// OLMo 2: post_attn = post_attention_layernorm, post_ffn = post_feedforward_layernorm only.
#ifndef OFT_SERVER_MODEL_MODEL_FAMILY_H_
#define OFT_SERVER_MODEL_MODEL_FAMILY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace oft {

// RMSNorm's weight: y = x_hat * w (Llama, Qwen, OLMo, Granite, Phi-3) or x_hat * (1 + w)
// (Gemma, whose checkpoints store w - 1).
enum class NormKind { kWeight, kOnePlusWeight };

// RMSNorm on the query and key projections before RoPE.
enum class QkNorm {
  kNone,
  kPerHead,         // over each head's head_dim (Qwen3, Gemma 3): weight [head_dim]
  kFullProjection,  // over the whole projection (OLMo 2): weight [heads * head_dim]
};

// The gated MLP's activation: act(gate) * up.
enum class Activation {
  kSilu,      // SwiGLU
  kGeluTanh,  // GeGLU with the tanh approximation ("gelu_pytorch_tanh", Gemma)
};

struct ModelFamily {
  NormKind norm = NormKind::kWeight;            // every RMSNorm of the model
  QkNorm qk_norm = QkNorm::kNone;               // tensors self_attn.q_norm / k_norm
  Activation activation = Activation::kSilu;    // the MLP's
  // Per-layer norm tensor names under model.layers.N. (empty: that norm is absent).
  std::string pre_attn_norm = "input_layernorm";
  std::string post_attn_norm;                   // applied to the attention output
  std::string pre_ffn_norm = "post_attention_layernorm";
  std::string post_ffn_norm;                    // applied to the MLP output
  // Embeddings are multiplied by this (rounded to the compute dtype, as transformers does):
  // Gemma sqrt(hidden_size), Granite embedding_multiplier.
  double embedding_scale = 1.0;
  // Softmax scale of attention scores; nullopt: 1 / sqrt(head_dim). Gemma:
  // query_pre_attn_scalar^-0.5; Granite: attention_multiplier.
  std::optional<double> attention_scale;
  double residual_multiplier = 1.0;             // Granite's; each branch's output times this
  double logits_divisor = 1.0;                  // Granite's logits_scaling: logits / this
  std::optional<double> attn_logit_softcap;     // Gemma 2: scores = c * tanh(scores / c)
  std::optional<double> final_logit_softcap;    // Gemma 2: logits = c * tanh(logits / c)
  // Per layer, whether it attends within ModelConfig::sliding_window (layer_types
  // "sliding_attention"); empty: every layer does when sliding_window is set (Mistral, Phi-3).
  std::vector<bool> sliding_layers;
  // RoPE base of the sliding layers (Gemma 3's rope_local_base_freq; plain RoPE, no
  // scaling); nullopt: every layer uses ModelConfig's rope.
  std::optional<double> local_rope_theta;
  bool fused_qkv = false;      // one self_attn.qkv_proj [q | k | v] (Phi-3)
  bool fused_gate_up = false;  // one mlp.gate_up_proj [gate | up] (Phi-3)
  double partial_rotary_factor = 1.0;  // RoPE on the first head_dim * this dims (Phi-3/4)

  // Linear modules per decoder layer: q k v o gate up down, with fusions merged.
  int64_t linears_per_layer() const {
    return (fused_qkv ? 2 : 4) + (fused_gate_up ? 2 : 3);
  }
  // Whether layer `index` uses the sliding window, given that the model has one.
  bool LayerSlides(int64_t index) const {
    return sliding_layers.empty() || sliding_layers[static_cast<size_t>(index)];
  }
};

}  // namespace oft

#endif  // OFT_SERVER_MODEL_MODEL_FAMILY_H_
