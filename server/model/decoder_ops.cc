#include "server/model/decoder_ops.h"
#include "server/model/rms_norm_cpu.h"

#include <cmath>
#include <limits>

#include "ATen/ATen.h"
#include "c10/core/GradMode.h"

namespace oft {

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w, double eps, NormKind kind) {
  if (FusedRmsNormApplies(x, w)) return FusedRmsNorm(x, w, eps, kind);  // one pass each way
  auto xf = x.to(at::kFloat);
  auto normed = xf * at::rsqrt(xf.pow(2).mean({-1}, /*keepdim=*/true) + eps);
  if (kind == NormKind::kOnePlusWeight) return (normed * (1.0 + w.to(at::kFloat))).to(x.scalar_type());
  return w * normed.to(x.scalar_type());
}

namespace {

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t r = cos.size(-1), d = x.size(-1);
  TORCH_CHECK(r <= d && r % 2 == 0, "rope tables of ", r, " dims for head_dim ", d);
  if (r == d) return x * cos + RotateHalf(x) * sin;
  auto rot = x.narrow(-1, 0, r);
  return at::cat({rot * cos + RotateHalf(rot) * sin, x.narrow(-1, r, d - r)}, -1);
}

at::Tensor GatedActivation(const at::Tensor& gate, const at::Tensor& up, Activation act) {
  if (act == Activation::kGeluTanh) return at::gelu(gate, "tanh") * up;
  return at::silu(gate) * up;
}

at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& mask, bool causal, std::optional<double> scale,
                  std::optional<double> softcap) {
  const int64_t nh = q.size(1), nkv = k.size(1);
  if (!softcap.has_value()) {
    return at::scaled_dot_product_attention(
        q, k, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt,
        /*dropout_p=*/0.0, /*is_causal=*/causal, scale, /*enable_gqa=*/nkv != nh);
  }
  TORCH_CHECK(nh % nkv == 0, "key heads (", nkv, ") must divide query heads (", nh, ")");
  // Explicit scores, as SDPA has no soft-cap. Grouped-query attention without copying K and V
  // g times: the g query heads that share a key head are stacked along the query axis, so one
  // batched GEMM per key head serves all of them ([B * nkv, g * T, d] x [B * nkv, d, S]).
  const int64_t B = q.size(0), T = q.size(2), S = k.size(2), d = q.size(3), g = nh / nkv;
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(d)));
  const double c = *softcap;
  // Without autograd the elementwise steps run in place: one scores buffer instead of four.
  const bool in_place = !at::GradMode::is_enabled() ||
                        !(q.requires_grad() || k.requires_grad() || v.requires_grad());
  at::Tensor scores = at::bmm(q.reshape({B * nkv, g * T, d}),
                              k.reshape({B * nkv, S, d}).transpose(1, 2));  // [B*nkv, g*T, S]
  scores.mul_(s / c);  // bmm's backward needs its inputs, not its output
  if (in_place) {
    scores.tanh_().mul_(c);
  } else {
    scores = at::tanh(scores) * c;  // tanh's backward keeps its own output
  }
  at::Tensor grouped = scores.view({B, nkv, g, T, S});  // a fresh buffer: masking it in place is safe
  if (mask.defined()) {
    // [B or 1, 1, T, S] broadcasts over (nkv, g) once the group axis is added; other shapes are
    // expanded to every head first.
    const at::Tensor m = mask.dim() == 4 && mask.size(1) == 1
                             ? mask.unsqueeze(2)
                             : mask.expand({B, nh, T, S}).reshape({B, nkv, g, T, S});
    if (m.scalar_type() == at::kBool) {
      grouped.masked_fill_(at::logical_not(m), -std::numeric_limits<double>::infinity());
    } else {
      grouped.add_(m);
    }
  } else if (causal) {
    auto above = at::ones({T, S}, q.options().dtype(at::kBool)).triu(S - T + 1);
    grouped.masked_fill_(above, -std::numeric_limits<double>::infinity());
  }
  // The softmax accumulates in fp32 at least (fp64 stays fp64).
  const at::ScalarType acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor probs = at::softmax(scores, -1, acc).to(q.scalar_type());
  return at::bmm(probs, v.reshape({B * nkv, S, d})).view({B, nh, T, d});
}

}  // namespace oft
