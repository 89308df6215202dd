// Which implementation each custom kernel uses, per device: the optimized kernel (CPU
// micro-kernels, CUDA kernels) or the composite path (the same math in plain ATen ops,
// oft::reference and the NF4 composite), which is complete and correct on every device.
//
// The oft:: dispatcher ops (server/oft/ops.cc) and the NF4 dequantization
// (server/quant/nf4.cc) consult this switch on every call. It starts on "optimized" for
// every kernel and device; the startup self-check (self_check.h) moves a kernel that fails
// its check to the composite path, and --cuda_kernels=off moves all of them.
//
// The switch is process-wide by nature (the dispatcher registrations are process-wide).
// Thread-safe: paths and implementations are atomics; reading a path costs one relaxed
// atomic load. Changing a path while another thread runs the kernel is allowed: calls that
// already started finish on the path they took.
#ifndef OFT_SERVER_OFT_KERNEL_REGISTRY_H_
#define OFT_SERVER_OFT_KERNEL_REGISTRY_H_

#include <cstdint>
#include <optional>
#include <tuple>

#include "ATen/core/Tensor.h"
#include "c10/core/Device.h"
#include "server/oft/kernel_mode.h"

namespace oft {

// Devices with their own switch: the CPU and CUDA devices 0..kMaxCudaDevices-1. Other
// devices (and CUDA indices beyond) always take the composite path.
inline constexpr int kMaxCudaDevices = 64;

// The path `kernel` takes on `device` (a CUDA device without index means the current one
// is not known here: it is treated as cuda:0).
KernelPath KernelPathFor(KernelId kernel, const c10::Device& device);
void SetKernelPath(KernelId kernel, const c10::Device& device, KernelPath path);
// Every kernel on every device back to the optimized path (tests, and a fresh self-check).
void ResetKernelPaths();

// Type-erased optimized implementations, one per (kernel, device type); the typed
// signatures are the dispatcher schemas of the ops (see ops.h, nf4.h). Registered by the
// files that define the kernels, at static initialisation.
using KernelFnPtr = void (*)();

// The typed signatures (the dispatcher schemas, see ops.h and nf4.h).
using BuildRotationFn = at::Tensor (*)(const at::Tensor& packed, int64_t block_size,
                                       int64_t num_terms, bool use_cayley_neumann);
using BuildRotationBackwardFn = at::Tensor (*)(const at::Tensor& grad, const at::Tensor& packed,
                                               const at::Tensor& rotation, int64_t block_size,
                                               int64_t num_terms, bool use_cayley_neumann);
using BlockRotateFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& rotation);
using BlockRotateBackwardFn = std::tuple<at::Tensor, at::Tensor> (*)(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& rotation, bool need_x,
    bool need_rotation);
using GatheredBlockRotateFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& rotations,
                                             const at::Tensor& index, bool delta);
using Nf4DequantizeFn = at::Tensor (*)(const at::Tensor& codes, const at::Tensor& absmax,
                                       const std::optional<at::Tensor>& absmax_scale,
                                       double absmax_offset, int64_t numel, int64_t block_size,
                                       at::ScalarType dtype);
template <typename Fn>
KernelFnPtr EraseKernel(Fn fn) {
  return reinterpret_cast<KernelFnPtr>(fn);
}
// Returns the previously registered implementation (nullptr if none).
KernelFnPtr RegisterOptimizedKernel(KernelId kernel, c10::DeviceType type, KernelFnPtr fn);
// nullptr when no optimized kernel exists for this device type (the composite path runs).
KernelFnPtr OptimizedKernel(KernelId kernel, c10::DeviceType type);
// The composite implementation (device-generic plain ATen); nullptr if not linked.
KernelFnPtr RegisterCompositeKernel(KernelId kernel, KernelFnPtr fn);
KernelFnPtr CompositeKernel(KernelId kernel);

// The implementation a call of `kernel` on `device` runs: the optimized one when the
// switch says so and one is registered, else the composite one.
template <typename Fn>
Fn SelectKernel(KernelId kernel, const c10::Device& device) {
  if (KernelPathFor(kernel, device) == KernelPath::kOptimized) {
    if (KernelFnPtr fn = OptimizedKernel(kernel, device.type())) return reinterpret_cast<Fn>(fn);
  }
  return reinterpret_cast<Fn>(CompositeKernel(kernel));
}

namespace testing {
// Replaces the optimized implementation of `kernel` on `type` for this object's lifetime
// (a test hook: inject a wrong kernel and watch the self-check catch it).
class ScopedOptimizedKernel {
 public:
  ScopedOptimizedKernel(KernelId kernel, c10::DeviceType type, KernelFnPtr fn);
  ~ScopedOptimizedKernel();
  ScopedOptimizedKernel(const ScopedOptimizedKernel&) = delete;
  ScopedOptimizedKernel& operator=(const ScopedOptimizedKernel&) = delete;

 private:
  KernelId kernel_;
  c10::DeviceType type_;
  KernelFnPtr previous_;
};
}  // namespace testing

}  // namespace oft

#endif  // OFT_SERVER_OFT_KERNEL_REGISTRY_H_
