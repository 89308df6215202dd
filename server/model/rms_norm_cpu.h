// RMSNorm fused into one pass forward and one pass backward, for fp32 tensors on the CPU.
//
// Computes what RmsNorm (decoder_ops.h) computes as six ATen ops (pow, mean, add, rsqrt and
// two products) and their eleven backward ops, each a full pass over [tokens, hidden] with
// its own allocation: per row, rstd = 1 / sqrt(mean(x^2) + eps) (fp32, as there), then
//   kWeight:        y = (x * rstd) * w
//   kOnePlusWeight: y = (x * rstd) * (1 + w)
// Backward, with g = dy * w' (w' = w or 1 + w) and x_hat = x * rstd:
//   dx = rstd * (g - x_hat * mean(g * x_hat)),   dw = sum over rows of dy * x_hat.
// Results agree with the ATen composition to fp32 rounding (the row sums are accumulated in
// a different order). Rows are split across the ATen threads; dw sums per-thread partials in
// a fixed order, so a given thread count gives the same bits every run.
#ifndef OFT_SERVER_MODEL_RMS_NORM_CPU_H_
#define OFT_SERVER_MODEL_RMS_NORM_CPU_H_

#include "ATen/core/Tensor.h"
#include "server/model/model_family.h"

namespace oft {

// Whether FusedRmsNorm takes (x, w): both fp32, on the CPU, w 1-D with x's last size.
bool FusedRmsNormApplies(const at::Tensor& x, const at::Tensor& w);

// The norm of x [..., H] with weight w [H]; differentiable in x and w (autograd records it
// when either requires grad).
at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& w, double eps, NormKind kind);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_RMS_NORM_CPU_H_
