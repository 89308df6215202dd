// CUDA kernels that build the OFTv2 block rotations from packed skew parameters
// (Cayley-Neumann path only) and back-propagate through them. Torch-free: raw device
// pointers, sizes and a stream, so nvcc stays fast; cuda/ops_cuda.cc wraps them as the
// CUDA kernels of oft::build_rotation and oft::build_rotation_backward.
//
// Math (docs/method.md sections 3, 4.1): for every rotation block,
//   Q = U - U^T with U's strict upper triangle = the packed row in triu order,
//       packed index k(i, j) = i(2b - i - 1)/2 + (j - i - 1) for i < j;
//   R = sum_{p=0..m} c[p] Q^p  (c = oft::internal::NeumannCoefficients(num_terms)).
// Backward (matches oft::reference::BuildRotationBackward):
//   G_Q = sum_p c[p] sum_{j<p} (Q^j)^T G (Q^{p-1-j})^T,
//   grad_packed[k(i, j)] = G_Q[i, j] - G_Q[j, i].
//
// One thread block per rotation block; the b x b working matrices live in (dynamic,
// opt-in when > 48 KB) shared memory. Accumulation is in float for fp32, double for fp64.
#ifndef OFT_SERVER_OFT_CUDA_ROTATION_KERNELS_CUH_
#define OFT_SERVER_OFT_CUDA_ROTATION_KERNELS_CUH_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace oft::cuda {

// Largest block size the kernels handle; larger blocks use the reference.
inline constexpr int kMaxRotationBlock = 128;
// Largest polynomial degree carried in a kernel argument (num_terms <= 32 gives <= 31).
inline constexpr int kMaxNeumannDegree = 31;

// The polynomial R = sum_{p=0..degree} c[p] Q^p, passed by value to the kernels.
struct NeumannPolynomial {
  int degree = 0;                        // m >= 0
  double c[kMaxNeumannDegree + 1] = {};  // c[0..degree]
};

enum class RotationDtype { kFloat32, kFloat64 };

// True when the kernels cover block size `b` for `dtype` on `device` (b in [2, 128], the
// shared-memory need fits the device's opt-in limit, the register tile fits). `backward`
// selects the backward kernel's (larger) requirement. Callers fall back otherwise.
bool BuildRotationSupported(int b, RotationDtype dtype, bool backward, int device);

// packed:   [rows, b(b-1)/2] contiguous, device memory, `dtype`
// rotation: [rows, b, b] contiguous output, same dtype
// Requires BuildRotationSupported(b, dtype, false, current device) and rows > 0.
// Returns the error of the launch configuration (cudaFuncSetAttribute); the caller
// checks the launch itself with cudaGetLastError (C10_CUDA_KERNEL_LAUNCH_CHECK).
cudaError_t LaunchBuildRotation(const void* packed, void* rotation, int64_t rows, int b,
                                const NeumannPolynomial& poly, RotationDtype dtype,
                                cudaStream_t stream);

// grad_rotation: [rows, b, b] contiguous, `dtype` (dL/dR)
// packed:        [rows, b(b-1)/2] contiguous, `dtype`
// grad_packed:   [rows, b(b-1)/2] contiguous output, `dtype`
// Requires BuildRotationSupported(b, dtype, true, current device) and rows > 0.
cudaError_t LaunchBuildRotationBackward(const void* grad_rotation, const void* packed,
                                        void* grad_packed, int64_t rows, int b,
                                        const NeumannPolynomial& poly, RotationDtype dtype,
                                        cudaStream_t stream);

}  // namespace oft::cuda

#endif  // OFT_SERVER_OFT_CUDA_ROTATION_KERNELS_CUH_
