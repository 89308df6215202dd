// Small host-built tensors (token ids, RoPE positions, row lengths, adapter row indices) on
// their way to the compute device.
//
// Why: a plain `.to(cuda)` of a pageable host tensor is a synchronous cudaMemcpy: the host
// waits for the device to drain its queue before every decode step's small uploads, which
// serialises host and device. Staged through pinned (page-locked) memory, the copy is
// enqueued on the current stream without blocking the host and is ordered before the kernels
// that read it; the caching host allocator keeps the staging buffer alive until the copy has
// run, so the caller may drop the host tensor at once.
//
// Contract: `host` must be a CPU tensor. On a CPU `device` it is returned as is (no copy, the
// same storage); on any other device the result is a new tensor on `device` with the same
// values, dtype and shape. Throws c10::Error like any ATen op (hot path; callers at module
// boundaries convert with TorchCall). Thread-safe as ATen copies are.
#ifndef OFT_SERVER_MODEL_HOST_UPLOAD_H_
#define OFT_SERVER_MODEL_HOST_UPLOAD_H_

#include <cstdint>
#include <vector>

#include "ATen/core/Tensor.h"
#include "c10/core/Device.h"

namespace oft {

at::Tensor UploadToDevice(const at::Tensor& host, const c10::Device& device);

// The values as a 1-D tensor of `dtype` (kLong or kFloat) on `device`, through UploadToDevice.
at::Tensor UploadToDevice(const std::vector<int64_t>& values, at::ScalarType dtype,
                          const c10::Device& device);
at::Tensor UploadToDevice(const std::vector<float>& values, const c10::Device& device);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_HOST_UPLOAD_H_
