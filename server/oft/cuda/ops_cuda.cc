// CUDA kernels of the oft:: operators, registered as the CUDA optimized kernels of the
// kernel switch (server/oft/kernel_registry.h) that the dispatch functions of
// server/oft/ops.cc consult. Each kernel runs the reference's argument checks, checks devices,
// guards the device, launches on the current stream and checks every launch. Cases the
// kernels do not cover run the reference implementation (plain ATen, on the GPU):
//   build_rotation(_backward): exact Cayley (use_cayley_neumann = false), dtypes other
//       than fp32/fp64, block sizes outside [2, 128], shared memory beyond the device's
//       opt-in limit (fp32 b > ~117 backward on A100; fp64 b > 64), degree > 31.
//   block_rotate(_backward): dtypes other than fp32/bf16/fp16/fp64, sizes beyond int.
#include <cstdint>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/cuda/CUDAContext.h"
#include "ATen/cuda/Exceptions.h"
#include "c10/cuda/CUDAException.h"
#include "c10/cuda/CUDAGuard.h"
#include "server/oft/cuda/block_rotate_kernels.cuh"
#include "server/oft/cuda/gathered_rotate_kernels.cuh"
#include "server/oft/cuda/rotation_kernels.cuh"
#include "server/oft/kernel_registry.h"
#include "server/oft/ops.h"
#include "server/oft/ops_reference.h"

namespace oft {
namespace internal {

bool CudaOpsLinked() { return true; }

}  // namespace internal

namespace {

std::optional<cuda::RotationDtype> RotationKernelDtype(at::ScalarType t) {
  if (t == at::kFloat) return cuda::RotationDtype::kFloat32;
  if (t == at::kDouble) return cuda::RotationDtype::kFloat64;
  return std::nullopt;
}

std::optional<cuda::ActDtype> ActKernelDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return cuda::ActDtype::kFloat32;
    case at::kBFloat16:
      return cuda::ActDtype::kBFloat16;
    case at::kHalf:
      return cuda::ActDtype::kFloat16;
    case at::kDouble:
      return cuda::ActDtype::kFloat64;
    default:
      return std::nullopt;
  }
}

std::optional<cuda::NeumannPolynomial> Polynomial(int64_t num_terms) {
  const std::vector<double> c = internal::NeumannCoefficients(num_terms);
  const int degree = static_cast<int>(c.size()) - 1;
  if (degree > cuda::kMaxNeumannDegree) return std::nullopt;
  cuda::NeumannPolynomial poly;
  poly.degree = degree;
  for (int p = 0; p <= degree; ++p) poly.c[p] = c[p];
  return poly;
}

// Whether the fused rotation kernel covers this call (else: the reference).
std::optional<std::pair<cuda::RotationDtype, cuda::NeumannPolynomial>> RotationKernelPlan(
    const at::Tensor& packed, int64_t b, int64_t num_terms, bool use_cayley_neumann,
    bool backward) {
  if (!use_cayley_neumann || b < 2 || b > cuda::kMaxRotationBlock) return std::nullopt;
  if (packed.size(0) > INT32_MAX) return std::nullopt;  // grid.x
  const auto dtype = RotationKernelDtype(packed.scalar_type());
  const auto poly = Polynomial(num_terms);
  if (!dtype || !poly) return std::nullopt;
  if (!cuda::BuildRotationSupported(static_cast<int>(b), *dtype, backward,
                                    packed.device().index())) {
    return std::nullopt;
  }
  return std::make_pair(*dtype, *poly);
}

// PyTorch's handle for the current device. getCurrentCUDABlasHandle() binds it to the
// current stream and to PyTorch's cuBLAS workspace; cublasSetStream would reset that
// workspace, so it is only called if the binding ever differs.
cublasHandle_t BlasHandleOnCurrentStream() {
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  cudaStream_t bound = nullptr;
  TORCH_CUDABLAS_CHECK(cublasGetStream(handle, &bound));
  if (bound != stream) TORCH_CUDABLAS_CHECK(cublasSetStream(handle, stream));
  return handle;
}

at::ScalarType AccType(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// packed [rows, b(b-1)/2] -> R [rows, b, b] in packed's dtype.
at::Tensor BuildRotationCuda(const at::Tensor& packed, int64_t b, int64_t num_terms,
                             bool use_cayley_neumann) {
  reference::CheckBuildRotationArgs(packed, b, num_terms);
  TORCH_CHECK(packed.is_cuda(), "oft::build_rotation (CUDA): packed must be a CUDA tensor, is on ",
              packed.device());
  const c10::cuda::CUDAGuard guard(packed.device());
  const auto plan = RotationKernelPlan(packed, b, num_terms, use_cayley_neumann, false);
  if (!plan) return reference::BuildRotationForward(packed, b, num_terms, use_cayley_neumann);

  const at::Tensor p = packed.contiguous();  // [rows, n]
  const int64_t rows = p.size(0);
  at::Tensor rotation = at::empty({rows, b, b}, p.options());  // [rows, b, b]
  if (rows == 0) return rotation;
  C10_CUDA_CHECK(cuda::LaunchBuildRotation(p.const_data_ptr(), rotation.mutable_data_ptr(), rows,
                                           static_cast<int>(b), plan->second, plan->first,
                                           at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return rotation;
}

// grad [rows, b, b], packed [rows, n], rotation [rows, b, b] -> grad_packed [rows, n].
at::Tensor BuildRotationBackwardCuda(const at::Tensor& grad, const at::Tensor& packed,
                                     const at::Tensor& rotation, int64_t b, int64_t num_terms,
                                     bool use_cayley_neumann) {
  reference::CheckBuildRotationArgs(packed, b, num_terms);
  TORCH_CHECK(packed.is_cuda() && grad.device() == packed.device(),
              "oft::build_rotation_backward (CUDA): grad (", grad.device(), ") and packed (",
              packed.device(), ") must be on the same CUDA device");
  TORCH_CHECK(
      grad.dim() == 3 && grad.size(0) == packed.size(0) && grad.size(1) == b && grad.size(2) == b,
      "oft::build_rotation_backward: grad must be [", packed.size(0), ", ", b, ", ", b, "], got ",
      grad.sizes());
  const c10::cuda::CUDAGuard guard(packed.device());
  const auto plan = RotationKernelPlan(packed, b, num_terms, use_cayley_neumann, true);
  if (!plan) {
    return reference::BuildRotationBackward(grad, packed, rotation, b, num_terms,
                                            use_cayley_neumann);
  }

  const at::Tensor p = packed.contiguous();                    // [rows, n]
  const at::Tensor g = grad.to(p.scalar_type()).contiguous();  // [rows, b, b]
  at::Tensor grad_packed = at::empty(p.sizes(), p.options());  // [rows, n]
  const int64_t rows = p.size(0);
  if (rows == 0) return grad_packed;
  C10_CUDA_CHECK(cuda::LaunchBuildRotationBackward(
      g.const_data_ptr(), p.const_data_ptr(), grad_packed.mutable_data_ptr(), rows,
      static_cast<int>(b), plan->second, plan->first, at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_packed;
}

// x [..., d], rotation [rows, b, b] -> [..., d] in x's dtype.
at::Tensor BlockRotateCuda(const at::Tensor& x, const at::Tensor& rotation) {
  const int64_t r = reference::CheckBlockRotateArgs(x, rotation);
  TORCH_CHECK(x.is_cuda(), "oft::block_rotate (CUDA): x must be a CUDA tensor, is on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t d = x.size(-1), b = rotation.size(1);
  const at::Tensor x2 = x.reshape({-1, d}).contiguous();  // [T, d]
  const cuda::BlockRotateShape shape{x2.size(0), r, b, rotation.size(0) == 1};
  const auto dtype = ActKernelDtype(x.scalar_type());
  if (shape.tokens == 0) return at::empty(x.sizes(), x.options());
  if (!dtype || !cuda::BlockRotateFitsInt(shape)) {
    return reference::BlockRotateForward(x, rotation);
  }

  const at::Tensor rot = rotation.to(x.scalar_type()).contiguous();  // [rows, b, b]
  at::Tensor y = at::empty({shape.tokens, d}, x2.options());         // [T, d]
  TORCH_CUDABLAS_CHECK(cuda::BlockRotateForwardGemm(BlasHandleOnCurrentStream(),
                                                    x2.const_data_ptr(), rot.const_data_ptr(),
                                                    y.mutable_data_ptr(), shape, *dtype));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y.view(x.sizes());
}

// grad [..., d] -> (grad_x [..., d] in x's dtype, grad_rotation [rows, b, b] in rotation's
// dtype); each undefined unless requested.
std::tuple<at::Tensor, at::Tensor> BlockRotateBackwardCuda(const at::Tensor& grad,
                                                           const at::Tensor& x,
                                                           const at::Tensor& rotation, bool need_x,
                                                           bool need_rotation) {
  const int64_t r = reference::CheckBlockRotateArgs(x, rotation);
  TORCH_CHECK(x.is_cuda() && grad.device() == x.device(),
              "oft::block_rotate_backward (CUDA): grad (", grad.device(), ") and x (", x.device(),
              ") must be on the same CUDA device");
  TORCH_CHECK(grad.sizes() == x.sizes(), "oft::block_rotate_backward: grad ", grad.sizes(),
              " does not match x ", x.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t d = x.size(-1), b = rotation.size(1);
  const at::Tensor g2 = grad.reshape({-1, d}).to(x.scalar_type()).contiguous();  // [T, d]
  const cuda::BlockRotateShape shape{g2.size(0), r, b, rotation.size(0) == 1};
  const auto dtype = ActKernelDtype(x.scalar_type());
  at::Tensor grad_x, grad_rotation;
  if (shape.tokens == 0) {
    if (need_x) grad_x = at::zeros_like(x);
    if (need_rotation) grad_rotation = at::zeros_like(rotation);
    return {grad_x, grad_rotation};
  }
  if (!dtype || !cuda::BlockRotateFitsInt(shape)) {
    return reference::BlockRotateBackward(grad, x, rotation, need_x, need_rotation);
  }

  if (need_x) {
    const at::Tensor rot = rotation.to(x.scalar_type()).contiguous();  // [rows, b, b]
    grad_x = at::empty({shape.tokens, d}, g2.options());               // [T, d]
    TORCH_CUDABLAS_CHECK(cuda::BlockRotateGradInputGemm(BlasHandleOnCurrentStream(),
                                                        g2.const_data_ptr(), rot.const_data_ptr(),
                                                        grad_x.mutable_data_ptr(), shape, *dtype));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_x = grad_x.view(x.sizes());
  }
  if (need_rotation) {
    const at::Tensor x2 = x.reshape({-1, d}).contiguous();  // [T, d]
    grad_rotation = at::empty({rotation.size(0), b, b},
                              x2.options().dtype(AccType(x.scalar_type())));  // [rows, b, b]
    TORCH_CUDABLAS_CHECK(cuda::BlockRotateGradRotationGemm(
        BlasHandleOnCurrentStream(), g2.const_data_ptr(), x2.const_data_ptr(),
        grad_rotation.mutable_data_ptr(), shape, *dtype));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_rotation = grad_rotation.to(rotation.scalar_type());
  }
  return {grad_x, grad_rotation};
}

// x [N, d], rotations [A, rows, b, b], index [N] int64 -> [N, d] in x's dtype. The served
// form with `delta` (R - I) is a CPU format; on CUDA it takes the composite path.
at::Tensor GatheredBlockRotateCuda(const at::Tensor& x, const at::Tensor& rotations,
                                   const at::Tensor& index, bool delta) {
  const int64_t r = reference::CheckGatheredBlockRotateArgs(x, rotations, index);
  TORCH_CHECK(x.is_cuda(), "oft::gathered_block_rotate (CUDA): x must be a CUDA tensor, is on ",
              x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::GatheredRotateShape shape{x.size(0), r, rotations.size(2), rotations.size(0),
                                        rotations.size(1) == 1};
  const auto dtype = ActKernelDtype(x.scalar_type());
  if (shape.tokens == 0) return at::empty(x.sizes(), x.options());
  if (delta || !dtype || !cuda::GatheredRotateSupported(shape)) {
    return reference::GatheredBlockRotateForward(x, rotations, index, delta);
  }
  const at::Tensor xc = x.contiguous();                                         // [N, d]
  const at::Tensor rot = rotations.to(AccType(x.scalar_type())).contiguous();   // [A, rows, b, b]
  const at::Tensor idx = index.contiguous();                                    // [N]
  at::Tensor y = at::empty(xc.sizes(), xc.options());                           // [N, d]
  C10_CUDA_CHECK(cuda::LaunchGatheredBlockRotate(
      xc.const_data_ptr(), rot.const_data_ptr(), idx.const_data_ptr<int64_t>(),
      y.mutable_data_ptr(), shape, *dtype, at::cuda::getCurrentCUDAStream().stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

// The oft:: dispatch functions (ops.cc) call these through the kernel switch
// (kernel_registry.h): a kernel that fails the startup self-check is bypassed.
[[maybe_unused]] const bool kCudaKernelsRegistered = [] {
  constexpr auto kCuda = c10::DeviceType::CUDA;
  RegisterOptimizedKernel(KernelId::kBuildRotation, kCuda, EraseKernel(&BuildRotationCuda));
  RegisterOptimizedKernel(KernelId::kBuildRotationBackward, kCuda, EraseKernel(&BuildRotationBackwardCuda));
  RegisterOptimizedKernel(KernelId::kBlockRotate, kCuda, EraseKernel(&BlockRotateCuda));
  RegisterOptimizedKernel(KernelId::kBlockRotateBackward, kCuda, EraseKernel(&BlockRotateBackwardCuda));
  RegisterOptimizedKernel(KernelId::kGatheredBlockRotate, kCuda, EraseKernel(&GatheredBlockRotateCuda));
  return true;
}();

}  // namespace
}  // namespace oft
