// CUDA kernel of the `oft::nf4_dequantize` operator (registered with the kernel switch): argument checks, device guard,
// current stream, launch check. Compiled by the host compiler; the kernel is in
// nf4_kernels.cu.
#include "ATen/ATen.h"
#include "c10/cuda/CUDAException.h"
#include "c10/cuda/CUDAGuard.h"
#include "c10/cuda/CUDAStream.h"
#include "server/oft/kernel_registry.h"
#include "server/quant/cuda/nf4_kernels.cuh"
#include "server/quant/nf4_codebook.h"
#include "server/quant/nf4_internal.h"

namespace oft::internal {

bool Nf4CudaLinked() { return true; }

namespace {

// codes [num_blocks * block_size / 2] uint8, absmax [num_blocks] fp32 or int8,
// absmax_scale [ceil(num_blocks / 256)] fp32 -> [numel] in dtype.
at::Tensor Nf4DequantizeCuda(const at::Tensor& codes, const at::Tensor& absmax,
                             const std::optional<at::Tensor>& absmax_scale, double absmax_offset,
                             int64_t numel, int64_t block_size, at::ScalarType dtype) {
  CheckNf4DequantizeArgs(codes, absmax, absmax_scale, numel, block_size, dtype);
  TORCH_CHECK(codes.is_cuda(), "nf4_dequantize (CUDA): codes must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(codes.device());
  // fp64 output: decode in fp32 (exact: every decoded value is an fp32 product), widen.
  const at::ScalarType kernel_dtype = dtype == at::kDouble ? at::kFloat : dtype;
  at::Tensor out = at::empty({numel}, codes.options().dtype(kernel_dtype));

  cuda::Nf4DequantArgs args;
  args.codes = codes.const_data_ptr<uint8_t>();
  if (absmax_scale.has_value()) {
    args.absmax_q = absmax.const_data_ptr<int8_t>();
    args.absmax_scale = absmax_scale->const_data_ptr<float>();
    args.absmax_offset = static_cast<float>(absmax_offset);
  } else {
    args.absmax = absmax.const_data_ptr<float>();
  }
  args.numel = numel;
  args.block_size = block_size;
  args.group_size = kNf4DoubleQuantGroupSize;
  const auto type = kernel_dtype == at::kFloat      ? cuda::Nf4OutputType::kFloat32
                    : kernel_dtype == at::kBFloat16 ? cuda::Nf4OutputType::kBFloat16
                                                    : cuda::Nf4OutputType::kFloat16;
  cuda::LaunchNf4Dequantize(args, out.mutable_data_ptr(), type,
                            c10::cuda::getCurrentCUDAStream(codes.device().index()).stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dtype == at::kDouble ? out.to(at::kDouble) : out;
}

// The dispatch function of oft::nf4_dequantize (nf4.cc) calls this through the kernel
// switch: a kernel that fails the startup self-check is bypassed.
[[maybe_unused]] const bool kNf4CudaRegistered = [] {
  RegisterOptimizedKernel(KernelId::kNf4Dequantize, c10::DeviceType::CUDA,
                          EraseKernel<Nf4DequantizeFn>(&Nf4DequantizeCuda));
  return true;
}();

}  // namespace
}  // namespace oft::internal
