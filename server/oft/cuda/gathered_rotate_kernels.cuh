// Per-row gathered block rotation on the GPU (oft::gathered_block_rotate), for serving many
// adapters in one batch. Torch-free (raw pointers, sizes, a stream); cuda/ops_cuda.cc wraps
// it as the CUDA kernel of the op and checks arguments first.
//
// Notation: x is [N, d] row-major, d = r * b; index[n] in [-1, A) picks the adapter of row
// n (-1: the row is copied unchanged); rotations is [A, rows, b, b] row-major in the
// accumulation type (fp32, or fp64 for fp64 data) with rows == r, or rows == 1 (one block
// for all r positions).
//   y[n, i*b + j] = sum_k x[n, i*b + k] * R[index[n], i or 0, k, j]
// One thread block per (row, block) pair; the row's block slice is staged in shared memory
// and each thread computes output columns, reading R coalesced along j.
#ifndef OFT_SERVER_OFT_CUDA_GATHERED_ROTATE_KERNELS_CUH_
#define OFT_SERVER_OFT_CUDA_GATHERED_ROTATE_KERNELS_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "server/oft/cuda/block_rotate_kernels.cuh"

namespace oft::cuda {

struct GatheredRotateShape {
  int64_t tokens = 0;    // N > 0
  int64_t blocks = 0;    // r = d / b
  int64_t b = 0;         // block size, <= kMaxGatheredBlock
  int64_t adapters = 0;  // A
  bool shared = false;   // rotations hold one block per adapter
};

inline constexpr int64_t kMaxGatheredBlock = 1024;

// True when the launch fits the grid (N * r <= INT_MAX) and b is supported.
bool GatheredRotateSupported(const GatheredRotateShape& s);

// x:         [N, d] contiguous, `dtype`
// rotations: [A, rows, b, b] contiguous, fp32 (fp64 when dtype is kFloat64)
// index:     [N] contiguous int64 on the device; values outside [0, A) copy the row
// y:         [N, d] contiguous output, `dtype`
// Returns the launch error (cudaGetLastError after the launch).
cudaError_t LaunchGatheredBlockRotate(const void* x, const void* rotations, const int64_t* index,
                                      void* y, const GatheredRotateShape& s, ActDtype dtype,
                                      cudaStream_t stream);

}  // namespace oft::cuda

#endif  // OFT_SERVER_OFT_CUDA_GATHERED_ROTATE_KERNELS_CUH_
