// Block-diagonal rotation of activations on the GPU as strided-batched cuBLAS GEMMs over
// the natural row-major layout: no permute copies. Torch-free (raw pointers, sizes, a
// cuBLAS handle already bound to the caller's stream); cuda/ops_cuda.cc wraps these as the
// CUDA kernels of oft::block_rotate and oft::block_rotate_backward.
//
// Notation: x is [T, d] row-major, d = r * b; block i is the column slice
// x_i = x[:, i*b:(i+1)*b] (a [T, b] matrix with leading dimension d, batch stride b).
// R is [rows, b, b] row-major with rows == r, or rows == 1 (one block shared by all).
//   forward:   y_i      = x_i R_i
//   backward:  grad_x_i = g_i R_i^T
//              grad_R_i = x_i^T g_i          (shared: grad_R = sum_i x_i^T g_i)
// All GEMMs accumulate in fp32 (CUBLAS_COMPUTE_32F), fp64 for fp64 data.
#ifndef OFT_SERVER_OFT_CUDA_BLOCK_ROTATE_KERNELS_CUH_
#define OFT_SERVER_OFT_CUDA_BLOCK_ROTATE_KERNELS_CUH_

#include <cublas_v2.h>

#include <cstdint>

namespace oft::cuda {

enum class ActDtype { kFloat32, kBFloat16, kFloat16, kFloat64 };

// Sizes of one block rotation. All counts must fit in int (the caller checks
// BlockRotateFitsInt and falls back otherwise).
struct BlockRotateShape {
  int64_t tokens = 0;   // T > 0
  int64_t blocks = 0;   // r = d / b
  int64_t b = 0;        // block size
  bool shared = false;  // R has one block used for all r column blocks
};

// True when every size and leading dimension handed to cuBLAS fits in int.
bool BlockRotateFitsInt(const BlockRotateShape& s);

// x:        [T, d] contiguous, `dtype`
// rotation: [rows, b, b] contiguous, `dtype` (rows = 1 if s.shared, else r)
// y:        [T, d] contiguous output, `dtype`
cublasStatus_t BlockRotateForwardGemm(cublasHandle_t handle, const void* x, const void* rotation,
                                      void* y, const BlockRotateShape& s, ActDtype dtype);

// grad:     [T, d] contiguous, `dtype` (dL/dy)
// rotation: [rows, b, b] contiguous, `dtype`
// grad_x:   [T, d] contiguous output, `dtype`
cublasStatus_t BlockRotateGradInputGemm(cublasHandle_t handle, const void* grad,
                                        const void* rotation, void* grad_x,
                                        const BlockRotateShape& s, ActDtype dtype);

// grad:          [T, d] contiguous, `dtype`
// x:             [T, d] contiguous, `dtype`
// grad_rotation: [rows, b, b] contiguous output in the accumulation type: fp32 for
//                fp32/bf16/fp16 data, fp64 for fp64 data. Overwritten (beta = 0).
cublasStatus_t BlockRotateGradRotationGemm(cublasHandle_t handle, const void* grad, const void* x,
                                           void* grad_rotation, const BlockRotateShape& s,
                                           ActDtype dtype);

}  // namespace oft::cuda

#endif  // OFT_SERVER_OFT_CUDA_BLOCK_ROTATE_KERNELS_CUH_
