// CPU kernels of the oft:: ops, registered for the CPU dispatch key. Same
// contract and results as oft::reference (the spec); faster because the block rotation
// runs a register-tiled fp32 kernel over the natural [tokens, d] layout (blocks of 16 or
// more; fp64 and smaller blocks use per-block strided GEMMs, no permute copies either way).
#ifndef OFT_SERVER_OFT_OPS_CPU_H_
#define OFT_SERVER_OFT_OPS_CPU_H_

#include <tuple>
#include <vector>

#include "ATen/core/Tensor.h"

namespace oft::cpu {

// Cayley-Neumann via Horner's scheme (R = c0 I + Q(c1 I + Q(c2 I + ...))) with fused
// baddbmm steps, and its backward through the same recurrence; exact Cayley falls back to
// the reference.
at::Tensor BuildRotationForward(const at::Tensor& packed, int64_t block_size, int64_t num_terms,
                                bool use_cayley_neumann);
at::Tensor BuildRotationBackward(const at::Tensor& grad_rotation, const at::Tensor& packed,
                                 const at::Tensor& rotation, int64_t block_size, int64_t num_terms,
                                 bool use_cayley_neumann);

at::Tensor BlockRotateForward(const at::Tensor& x, const at::Tensor& rotation);
std::tuple<at::Tensor, at::Tensor> BlockRotateBackward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& rotation, bool need_x,
                                                       bool need_rotation);

// fp32 with b >= the path's narrowest block: every run of consecutive rows with the same
// adapter goes through the tiled kernel, which gives each token bit-identical results
// whatever its neighbours; with `delta` and fp16 rotations, the kernel reads D = R - I as
// fp16 and adds x. Otherwise (fp64, narrow blocks, other delta dtypes) each run's blocks are
// taken as R in the accumulation dtype (R = D + I with `delta`): runs of at least
// kGatheredBlasRun rows use the strided-GEMM path and shorter runs a direct loop per token.
at::Tensor GatheredBlockRotateForward(const at::Tensor& x, const at::Tensor& rotations,
                                      const at::Tensor& index, bool delta = false);
inline constexpr int64_t kGatheredBlasRun = 64;

// One input rotated by several rotations in one pass over the tokens (ops_cpu_many.cc; the
// op behind oft::BlockRotateMany, and BlockRotateBackward's fused path when both gradients
// are wanted). Applies to fp32 CPU x with per-block fp32 rotations of one block size
// (b >= the path's narrowest) and at least as many blocks as threads; the functions check
// it and throw otherwise.
bool BlockRotateManyApplies(const at::Tensor& x, at::TensorList rotations);
// y_j = BlockRotateForward(x, rotations[j]), bit for bit.
std::vector<at::Tensor> BlockRotateManyForward(const at::Tensor& x, at::TensorList rotations);
// The input gradient sum_j grads[j] R_j^T (undefined unless need_x; undefined grads[j]
// count as zero) and dR_j = X^T G_j (undefined unless need_rotation[j]).
std::tuple<at::Tensor, std::vector<at::Tensor>> BlockRotateManyBackward(
    at::TensorList grads, const at::Tensor& x, at::TensorList rotations, bool need_x,
    const std::vector<bool>& need_rotation);

}  // namespace oft::cpu

#endif  // OFT_SERVER_OFT_OPS_CPU_H_
