// Reference implementations of the oft:: ops in plain ATen (any device, any float
// dtype). They are the spec the CUDA kernels are tested against, the CPU kernels,
// and the CUDA fallback for cases the kernels do not cover (exact Cayley, b > 128).
#ifndef OFT_SERVER_OFT_OPS_REFERENCE_H_
#define OFT_SERVER_OFT_OPS_REFERENCE_H_

#include <cstdint>
#include <tuple>

#include "ATen/core/Tensor.h"

namespace oft::reference {

// packed [rows, n] -> R [rows, b, b]
at::Tensor BuildRotationForward(const at::Tensor& packed, int64_t block_size, int64_t num_terms,
                                bool use_cayley_neumann);
// grad_rotation [rows, b, b], packed [rows, n], rotation = forward output -> grad_packed [rows, n]
at::Tensor BuildRotationBackward(const at::Tensor& grad_rotation, const at::Tensor& packed,
                                 const at::Tensor& rotation, int64_t block_size, int64_t num_terms,
                                 bool use_cayley_neumann);
// x [..., d], rotation [rows, b, b] -> [..., d] in x's dtype
at::Tensor BlockRotateForward(const at::Tensor& x, const at::Tensor& rotation);
// grad [..., d] -> (grad_x in x's dtype or undefined, grad_rotation in rotation's dtype or undefined)
std::tuple<at::Tensor, at::Tensor> BlockRotateBackward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& rotation, bool need_x,
                                                       bool need_rotation);

// x [N, d], rotations [A, rows, b, b], index [N] (-1 = identity) -> [N, d] in x's dtype.
// delta: rotations hold R - I; R = rotations + I is formed in the accumulation dtype first.
at::Tensor GatheredBlockRotateForward(const at::Tensor& x, const at::Tensor& rotations,
                                      const at::Tensor& index, bool delta = false);

// Accumulation dtype of the rotation: fp64 for fp64 inputs, fp32 otherwise.
inline at::ScalarType AccumulationType(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Shared argument checks (also used by the CUDA kernels). Return b and the block count.
void CheckBuildRotationArgs(const at::Tensor& packed, int64_t block_size, int64_t num_terms);
int64_t CheckBlockRotateArgs(const at::Tensor& x, const at::Tensor& rotation);
// Returns the block count r = d / b.
int64_t CheckGatheredBlockRotateArgs(const at::Tensor& x, const at::Tensor& rotations,
                                     const at::Tensor& index);

}  // namespace oft::reference

#endif  // OFT_SERVER_OFT_OPS_REFERENCE_H_
