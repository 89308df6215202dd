// CPU kernels of the oft:: block rotation, registered for the CPU dispatch key. Same
// contract and results as oft::reference (the spec); faster because each block's GEMM
// reads and writes the natural [tokens, d] layout through strided views (no permute
// copies). Other dtypes fall back to the reference.
#ifndef OFT_SERVER_OFT_OPS_CPU_H_
#define OFT_SERVER_OFT_OPS_CPU_H_

#include <tuple>

#include "ATen/core/Tensor.h"

namespace oft::cpu {

at::Tensor BlockRotateForward(const at::Tensor& x, const at::Tensor& rotation);
std::tuple<at::Tensor, at::Tensor> BlockRotateBackward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& rotation, bool need_x,
                                                       bool need_rotation);

}  // namespace oft::cpu

#endif  // OFT_SERVER_OFT_OPS_CPU_H_
