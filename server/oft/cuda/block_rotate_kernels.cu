// Block-diagonal rotation as strided-batched cuBLAS GEMMs. See block_rotate_kernels.cuh.
//
// cuBLAS is column-major. The one fact used throughout: a row-major [rows, cols] matrix M
// with row stride (leading dimension) ld occupies exactly the memory of the column-major
// [cols, rows] matrix M^T with leading dimension ld. So, for row-major x [T, d]:
//   x_i = x[:, i*b:(i+1)*b]  is, to cuBLAS, the column-major [b, T] matrix x_i^T with
//                            pointer x + i*b, ld = d; consecutive blocks are b elements
//                            apart (batch stride b);
//   R_i (row-major [b, b])   is the column-major R_i^T, ld = b, batch stride b*b
//                            (0 for a shared block: every batch reads the same matrix);
//   x viewed as [T*r, b]     (one row per (token, block) pair, the shared-block reduction)
//                            is the column-major [b, T*r] matrix with ld = b.
// Each product is therefore computed transposed, C^T = op(B)^T op(A)^T; the per-GEMM
// derivations are next to the calls.
#include <library_types.h>

#include <climits>

#include "server/oft/cuda/block_rotate_kernels.cuh"

namespace oft::cuda {
namespace {

struct GemmTypes {
  cudaDataType_t data;  // A and B (and C for activations)
  cudaDataType_t acc;   // C for grad_rotation
  cublasComputeType_t compute;
  bool fp64;
};

GemmTypes TypesFor(ActDtype dtype) {
  switch (dtype) {
    case ActDtype::kBFloat16:
      return {CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_32F, false};
    case ActDtype::kFloat16:
      return {CUDA_R_16F, CUDA_R_32F, CUBLAS_COMPUTE_32F, false};
    case ActDtype::kFloat64:
      return {CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F, true};
    case ActDtype::kFloat32:
    default:
      // With PyTorch's handle, TF32 is used only if torch allows it for cuBLAS
      // (at::globalContext().allowTF32CuBLAS(), off by default).
      return {CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, false};
  }
}

// alpha = 1, beta = 0 in the compute type (host pointer mode, PyTorch's default).
struct Scalars {
  float one_f = 1.0f, zero_f = 0.0f;
  double one_d = 1.0, zero_d = 0.0;
  const void* one(bool fp64) const { return fp64 ? static_cast<const void*>(&one_d) : &one_f; }
  const void* zero(bool fp64) const { return fp64 ? static_cast<const void*>(&zero_d) : &zero_f; }
};

}  // namespace

bool BlockRotateFitsInt(const BlockRotateShape& s) {
  const int64_t d = s.blocks * s.b;
  return s.tokens > 0 && s.blocks > 0 && s.b > 0 && s.tokens <= INT_MAX && d <= INT_MAX &&
         s.b * s.b <= INT_MAX && (!s.shared || s.tokens * s.blocks <= INT_MAX);
}

cublasStatus_t BlockRotateForwardGemm(cublasHandle_t handle, const void* x, const void* rotation,
                                      void* y, const BlockRotateShape& s, ActDtype dtype) {
  // y_i = x_i R_i   <=>   y_i^T = R_i^T x_i^T   (column-major, all [b, *]):
  //   C = y_i^T  [b, T]: y + i*b, ldc = d, strideC = b
  //   A = R_i^T  [b, b]: R + i*b*b as stored, op N, lda = b, strideA = b*b (0 if shared)
  //   B = x_i^T  [b, T]: x + i*b as stored, op N, ldb = d, strideB = b
  //   m = b, n = T, k = b, batch = r.
  const GemmTypes t = TypesFor(dtype);
  const Scalars sc;
  const int b = static_cast<int>(s.b), n = static_cast<int>(s.tokens);
  const int d = static_cast<int>(s.blocks * s.b);
  const long long stride_r = s.shared ? 0 : s.b * s.b;
  return cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, b, n, b, sc.one(t.fp64),
                                    rotation, t.data, b, stride_r, x, t.data, d, s.b,
                                    sc.zero(t.fp64), y, t.data, d, s.b, static_cast<int>(s.blocks),
                                    t.compute, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t BlockRotateGradInputGemm(cublasHandle_t handle, const void* grad,
                                        const void* rotation, void* grad_x,
                                        const BlockRotateShape& s, ActDtype dtype) {
  // gx_i = g_i R_i^T   <=>   gx_i^T = R_i g_i^T:
  //   C = gx_i^T [b, T]: grad_x + i*b, ldc = d, strideC = b
  //   A: stored R_i^T (lda = b); op T gives R_i; strideA = b*b (0 if shared)
  //   B = g_i^T  [b, T]: grad + i*b as stored, op N, ldb = d, strideB = b
  //   m = b, n = T, k = b, batch = r.
  const GemmTypes t = TypesFor(dtype);
  const Scalars sc;
  const int b = static_cast<int>(s.b), n = static_cast<int>(s.tokens);
  const int d = static_cast<int>(s.blocks * s.b);
  const long long stride_r = s.shared ? 0 : s.b * s.b;
  return cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, b, n, b, sc.one(t.fp64),
                                    rotation, t.data, b, stride_r, grad, t.data, d, s.b,
                                    sc.zero(t.fp64), grad_x, t.data, d, s.b,
                                    static_cast<int>(s.blocks), t.compute, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t BlockRotateGradRotationGemm(cublasHandle_t handle, const void* grad, const void* x,
                                           void* grad_rotation, const BlockRotateShape& s,
                                           ActDtype dtype) {
  // gR_i = x_i^T g_i (row-major [b, b]); its memory is the column-major gR_i^T = g_i^T x_i:
  //   C = gR_i^T [b, b]: grad_rotation + i*b*b, ldc = b, strideC = b*b
  //   A = g_i^T  [b, T]: grad + i*b as stored, op N, lda = d, strideA = b
  //   B: stored x_i^T [b, T] (ldb = d, strideB = b); op T gives x_i [T, b]
  //   m = b, n = b, k = T (the reduction over tokens), batch = r.
  // Shared block: gR = sum_i x_i^T g_i = X^T G with X, G the [T*r, b] views, i.e. the same
  // product with A = G^T [b, T*r] (lda = b), B stored X^T [b, T*r] (ldb = b), k = T*r.
  // C is in the accumulation type (fp32, or fp64 for fp64 data): no rounding of gR to bf16.
  const GemmTypes t = TypesFor(dtype);
  const Scalars sc;
  const int b = static_cast<int>(s.b);
  if (s.shared) {
    const int k = static_cast<int>(s.tokens * s.blocks);
    return cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, b, b, k, sc.one(t.fp64), grad, t.data, b,
                        x, t.data, b, sc.zero(t.fp64), grad_rotation, t.acc, b, t.compute,
                        CUBLAS_GEMM_DEFAULT);
  }
  const int k = static_cast<int>(s.tokens);
  const int d = static_cast<int>(s.blocks * s.b);
  return cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, b, b, k, sc.one(t.fp64), grad,
                                    t.data, d, s.b, x, t.data, d, s.b, sc.zero(t.fp64),
                                    grad_rotation, t.acc, b, s.b * s.b, static_cast<int>(s.blocks),
                                    t.compute, CUBLAS_GEMM_DEFAULT);
}

}  // namespace oft::cuda
