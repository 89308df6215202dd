#include "server/model/decoder_ops.h"

#include <cmath>
#include <limits>

#include "ATen/ATen.h"

namespace oft {

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w, double eps, NormKind kind) {
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
  at::Tensor kk = nkv == nh ? k : k.repeat_interleave(nh / nkv, 1);
  at::Tensor vv = nkv == nh ? v : v.repeat_interleave(nh / nkv, 1);
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  auto scores = at::matmul(q, kk.transpose(-2, -1)) * s;  // [B, nh, T, S]
  scores = at::tanh(scores / *softcap) * *softcap;
  if (mask.defined() && mask.scalar_type() == at::kBool) {
    scores = scores.masked_fill(at::logical_not(mask), -std::numeric_limits<double>::infinity());
  } else if (mask.defined()) {
    scores = scores + mask;
  } else if (causal) {
    const int64_t T = q.size(2), S = kk.size(2);
    auto above = at::ones({T, S}, q.options().dtype(at::kBool)).triu(S - T + 1);
    scores = scores.masked_fill(above, -std::numeric_limits<double>::infinity());
  }
  auto probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, vv);
}

}  // namespace oft
