// The tensor operations a decoder layer is built from, in the variants the supported
// families use (model_family.h): RMSNorm (x*w or x*(1+w)), RoPE (full or partial), the
// gated MLP activation (SwiGLU, tanh-GeGLU) and attention with optional logit soft-capping.
// Each follows the matching transformers modeling code, op for op, so logits agree to
// rounding. Pure functions on tensors; throw c10::Error on bad shapes (hot path).
#ifndef OFT_SERVER_MODEL_DECODER_OPS_H_
#define OFT_SERVER_MODEL_DECODER_OPS_H_

#include <optional>

#include "ATen/core/Tensor.h"
#include "server/model/model_family.h"

namespace oft {

// RMSNorm over the last dim, computed in fp32: x_hat = x / sqrt(mean(x^2) + eps), then
// kWeight: w * x_hat (cast to x's dtype first, as Llama), kOnePlusWeight: x_hat * (1 + w)
// (then cast, as Gemma). `w` has x's last size.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w, double eps, NormKind kind);

// Rotary embedding of x [B, heads, T, head_dim] with tables cos, sin [B or 1, 1, T, r]
// (r <= head_dim, even): the first r dims are rotated (rotate-half convention), the rest
// pass through (partial_rotary_factor < 1).
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// act(gate) * up with the family's activation (silu, or gelu with the tanh approximation).
at::Tensor GatedActivation(const at::Tensor& gate, const at::Tensor& up, Activation act);

// Scaled dot-product attention. q [B, nh, T, d], k and v [B, nkv, S, d] (nkv divides nh:
// grouped-query), `mask` [B or 1, 1, T, S] additive, or bool (true = attend), or undefined;
// when undefined, `causal`
// makes query i attend to keys 0..i (T == S) and false attends everywhere. `scale`: score
// multiplier (nullopt: 1/sqrt(d)). With `softcap` c the scores become c * tanh(s / c)
// before the mask (Gemma 2), which runs an explicit softmax (fp32) instead of the fused
// kernel. Returns [B, nh, T, d].
at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& mask, bool causal, std::optional<double> scale,
                  std::optional<double> softcap);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_DECODER_OPS_H_
