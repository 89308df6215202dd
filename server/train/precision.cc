#include "server/train/precision.h"

#include "ATen/Context.h"
#include "ATen/autocast_mode.h"

namespace oft {

at::ScalarType TrainingBaseDtype(const ModelConfig& config, const c10::Device& device, bool bf16) {
  if (!device.is_cuda()) return at::kFloat;
  if (config.torch_dtype == "bfloat16" || config.torch_dtype == "float16") return at::kBFloat16;
  return bf16 ? at::kBFloat16 : at::kFloat;
}

bool UseBf16Autocast(const c10::Device& device, at::ScalarType base_dtype, bool option,
                     bool force_cpu) {
  return option && base_dtype == at::kFloat && (device.is_cuda() || force_cpu);
}

absl::Status CheckTrainableDtype(at::ScalarType base_dtype) {
  if (base_dtype == at::kHalf) {
    return absl::InvalidArgumentError(
        "the base model is float16, which would train without loss scaling (gradients "
        "underflow); load it as bfloat16 (TrainingBaseDtype) or float32");
  }
  return absl::OkStatus();
}

bool UseTf32(const c10::Device& device) { return device.is_cuda(); }

void ConfigureMatmulPrecision(const c10::Device& device) {
  if (!UseTf32(device)) return;
  at::globalContext().setAllowTF32CuBLAS(true);
  at::globalContext().setAllowTF32CuDNN(true);
}

AutocastState AutocastState::Capture() {
  AutocastState s;
  s.cpu_enabled = at::autocast::is_autocast_enabled(at::kCPU);
  s.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
  s.cuda_enabled = at::autocast::is_autocast_enabled(at::kCUDA);
  s.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  return s;
}

void AutocastState::Apply() const {
  at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype);
  at::autocast::set_autocast_enabled(at::kCPU, cpu_enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, cuda_dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, cuda_enabled);
}

AutocastScope::AutocastScope(bool on, c10::DeviceType device_type) : on_(on) {
  if (!on_) return;
  was_ = AutocastState::Capture();
  at::autocast::set_autocast_dtype(device_type, at::kBFloat16);
  at::autocast::set_autocast_enabled(device_type, true);
}

AutocastScope::~AutocastScope() {
  if (!on_) return;
  was_.Apply();
  at::autocast::clear_cache();
}

}  // namespace oft
