// FoldedOftLinears: frozen Linears, each with one OFT rotation on its input, computed with the
// rotation folded into the weight for the pass instead of applied to the activations.
//
//   y = (x R) W^T + b = x W'^T + b,   W' = W R^T (block-wise: W'[:, i] = W[:, i] R_i^T)
//
// Same function and gradients as the input-centric path (AdaptedLinear::Forward), other
// costs. Input-centric rotates the T activation rows forward and their gradient backward,
// 2 * T*d*b multiply-adds per Linear; folding rotates the out weight rows instead, out*d*b.
// Both share the base-cost GEMMs and one Gram X_i^T(.) per block. So folding is cheaper
// when the pass has at least as many tokens as the Linear has outputs (FoldedOftPays),
// which is every projection of a small model's training step.
//
// Backward without the activations' rotation: dx = g W', and since dx_i = (g W)_i R_i^T,
//   dL/dR_i = x_i^T (g W)_i = (x_i^T dx_i) R_i^{-T}
// with a [b, b] solve per block in fp64 (R from the Cayley-Neumann series is only nearly
// orthogonal, so R^{-T} is not R; the solve is exact for any invertible R). Under a shared
// rotation (rows == 1) the Gram is summed over blocks first.
//
// Memory: W' is kept for backward, [out, in] in the weight's dtype per Linear. Folding only
// pays when out <= T, so W' is never larger than the [T, in] input that input-centric keeps.
//
// Several Linears that read the same x (q/k/v, gate/up) run as one group: backward sums
// their input gradients and computes their Grams in one pass over x (BlockRotateGramMany).
//
// Thread-compatibility: stateless functions; the tensors follow LibTorch's rules.
// Errors: c10::Error on bad shapes (hot path), as ATen ops.
#ifndef OFT_SERVER_MODEL_FOLDED_LINEAR_H_
#define OFT_SERVER_MODEL_FOLDED_LINEAR_H_

#include <cstdint>
#include <vector>

#include "ATen/core/Tensor.h"

namespace oft {

// Whether folding costs fewer multiply-adds than rotating the activations: tokens >= out.
bool FoldedOftPays(int64_t tokens, int64_t out_features);

// Whether FoldedOftLinears takes these tensors: x [..., in] with x's dtype equal to the
// weight's, fp32 or fp64; weight [out, in] not requiring grad; rotation [rows, b, b] in the
// same dtype with rows * b == in or rows == 1; bias [out] or undefined; all on one device;
// autocast off for that device (under autocast the base runs in the autocast dtype).
// Not bf16 / fp16: W' and dx rounded to 8 mantissa bits put about 10x the input-centric
// path's rounding into dL/dR (measured 0.055 vs < 0.005 of the largest entry on a 64-wide
// layer), so those dtypes stay input-centric.
bool FoldedOftApplies(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                      const at::Tensor& rotation);

// One Linear of a folded group: the frozen weight [out, in], its bias [out] (undefined:
// none; may require grad) and the rotation blocks [rows, b, b] (differentiable).
struct FoldedOftInput {
  at::Tensor weight, bias, rotation;
};

// y_j = (x R_j) W_j^T + b_j as above ([..., out_j], x's dtype) for every Linear j of the
// group, each FoldedOftApplies(x, ...). Differentiable in x, the rotations and the biases
// that require grad. `fast_gemm`: run the GEMMs in the CPU training GEMM library
// (cpu_linear.h; the caller checked CpuLinearApplies), else at::mm.
std::vector<at::Tensor> FoldedOftLinears(const at::Tensor& x,
                                         const std::vector<FoldedOftInput>& linears,
                                         bool fast_gemm);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_FOLDED_LINEAR_H_
