// CPU kernels of the oft:: ops, registered for the CPU dispatch key. Same
// contract and results as oft::reference (the spec); faster because each block's GEMM
// reads and writes the natural [tokens, d] layout through strided views (no permute
// copies). Other dtypes fall back to the reference.
#ifndef OFT_SERVER_OFT_OPS_CPU_H_
#define OFT_SERVER_OFT_OPS_CPU_H_

#include <tuple>

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

// Tokens in runs of at least kGatheredBlasRun consecutive rows with the same adapter go
// through the strided-GEMM path; shorter runs (decode steps: one token per request) use a
// direct loop per token (both agree to rounding). The engine's decode batches stay below
// the threshold, so there a token's result does not depend on its neighbours.
at::Tensor GatheredBlockRotateForward(const at::Tensor& x, const at::Tensor& rotations,
                                      const at::Tensor& index);
inline constexpr int64_t kGatheredBlasRun = 64;

}  // namespace oft::cpu

#endif  // OFT_SERVER_OFT_OPS_CPU_H_
