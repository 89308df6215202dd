#include "server/model/host_upload.h"

#include "ATen/ATen.h"

namespace oft {

at::Tensor UploadToDevice(const at::Tensor& host, const c10::Device& device) {
  TORCH_CHECK(host.device().is_cpu(), "UploadToDevice: the source must be on the CPU, got ",
              host.device());
  if (device.is_cpu()) return host;
  const at::Tensor staged = host.is_pinned() ? host : host.pin_memory();
  return staged.to(device, /*non_blocking=*/true);
}

at::Tensor UploadToDevice(const std::vector<int64_t>& values, at::ScalarType dtype,
                          const c10::Device& device) {
  at::Tensor host = at::tensor(values, at::kLong);
  if (dtype != at::kLong) host = host.to(dtype);
  return UploadToDevice(host, device);
}

at::Tensor UploadToDevice(const std::vector<float>& values, const c10::Device& device) {
  return UploadToDevice(at::tensor(values, at::kFloat), device);
}

}  // namespace oft
