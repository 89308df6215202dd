// The two OFTv2 operators, registered with the PyTorch dispatcher as `oft::*` ops with
// a CPU reference (the spec, device-generic ATen code) and CUDA kernels beside it.
// Both are differentiable through a registered autograd kernel.
//
// These functions throw c10::Error on bad input (like any ATen op); callers outside
// server/oft wrap them with oft::TorchCall.
#ifndef OFT_SERVER_OFT_OPS_H_
#define OFT_SERVER_OFT_OPS_H_

#include <cstdint>
#include <tuple>
#include <vector>

#include "ATen/core/Tensor.h"

namespace oft {

// Builds every block's rotation from the packed skew parameters.
//   packed: [rows, b(b-1)/2], the row-major strict upper triangle of Q_i; Q = U - U^T.
//   returns [rows, b, b] in packed's dtype:
//     use_cayley_neumann: PEFT >= 0.18 polynomial with k = num_terms
//                         (k >= 4: (I+Q)(I+Q+...+Q^{k-2}); k = 3 equals k = 4)
//     otherwise:          exact Cayley in PEFT's orientation, (I - Q)(I + Q)^{-1}.
at::Tensor BuildRotation(const at::Tensor& packed, int64_t block_size, int64_t num_terms,
                         bool use_cayley_neumann);

// Block-diagonal rotation of activations, input-centric: for every block i,
//   y[..., i*b:(i+1)*b] = x[..., i*b:(i+1)*b] @ R[i]      (R[0] for all i when rows == 1).
//   x: [..., d] (fp32, bf16 or fp16); rotation: [rows, b, b] with rows*b == d or rows == 1.
//   returns [..., d] in x's dtype; accumulation is in fp32 (fp64 for fp64 inputs).
at::Tensor BlockRotate(const at::Tensor& x, const at::Tensor& rotation);
// BlockRotate's two gradients for dL/dy = grad (no autograd of its own):
//   dL/dx = grad R^T block-wise (undefined unless need_x),
//   dL/dR[i] = sum over tokens of x_i^T grad_i (summed over blocks too when rows == 1;
//   undefined unless need_rotation).
std::tuple<at::Tensor, at::Tensor> BlockRotateGrads(const at::Tensor& grad, const at::Tensor& x,
                                                    const at::Tensor& rotation, bool need_x,
                                                    bool need_rotation);

// One input rotated by several rotations: y_j = BlockRotate(x, rotations[j]), for the
// Linears that read the same activations (q/k/v, gate/up). Differentiable. On the CPU's fp32
// kernels (ops_cpu.h: BlockRotateManyApplies) it reads x once forward, and backward returns
// x's gradient already summed over j from one pass over the tokens. The forward values
// equal separate BlockRotate calls bit for bit; x's gradient is the same sum in a fixed
// order (g_0 R_0^T + g_1 R_1^T + ...). Elsewhere (CUDA, bf16, shared rotations, fewer
// blocks than threads, a kernel on the composite path) it is m BlockRotate calls.
std::vector<at::Tensor> BlockRotateMany(const at::Tensor& x, at::TensorList rotations);
// The rotation gradients of several BlockRotate(x, rotations[j]) at once:
//   out[j] = std::get<1>(BlockRotateGrads(grads[j], x, rotations[j], false, true)),
// undefined where grads[j] is. Where BlockRotateMany takes the CPU kernels it packs x's
// blocks once for all j in one pass over the tokens (same sums, same order as there).
std::vector<at::Tensor> BlockRotateGramMany(at::TensorList grads, const at::Tensor& x,
                                            at::TensorList rotations);
// Per-row block rotation for serving many adapters in one batch (forward only, no autograd):
//   y[n] = BlockRotate(x[n], rotations[index[n]])   when index[n] >= 0
//   y[n] = x[n]                                     when index[n] == -1
//   x:         [N, d] (fp32, bf16, fp16 or fp64)
//   rotations: [A, rows, b, b] with rows * b == d or rows == 1 (one block for all)
//   index:     [N] int64 in [-1, A), on x's device
//   returns [N, d] in x's dtype; accumulation is in fp32 (fp64 for fp64 inputs).
// Each row's result depends only on that row, its index and the rotations (not on the
// other rows), so a request's output does not depend on what else is in the batch.
// With `delta`, rotations hold D = R - I instead of R (serving's compact form, fp16 on the
// CPU: ServingAdapter), and y[n] = x[n] + BlockRotate(x[n], D[index[n]]) for index[n] >= 0.
// The CPU kernels read fp16 D directly for fp32 x (half of fp32 R's bytes per row); other
// combinations convert the rows' blocks to R in the accumulation dtype first.
at::Tensor GatheredBlockRotate(const at::Tensor& x, const at::Tensor& rotations,
                               const at::Tensor& index, bool delta = false);

// Skew-symmetric matrices from packed parameters, [rows, n] -> [rows, b, b] (no autograd
// kernel of its own; differentiable through ATen).
at::Tensor SkewFromPacked(const at::Tensor& packed, int64_t block_size);
// The inverse: strict upper triangle of [rows, b, b] -> [rows, n].
at::Tensor PackedFromSkew(const at::Tensor& skew);

// Dense block-diagonal d x d matrix of `rotation` repeated to `num_blocks` blocks.
at::Tensor DenseBlockDiagonal(const at::Tensor& rotation, int64_t num_blocks);

// True when the CUDA kernels were compiled into this binary.
bool CudaKernelsBuilt();

namespace internal {
// PEFT >= 0.18 Cayley-Neumann coefficients: R = sum_p c[p] Q^p.
std::vector<double> NeumannCoefficients(int64_t num_terms);
}  // namespace internal

}  // namespace oft

#endif  // OFT_SERVER_OFT_OPS_H_
