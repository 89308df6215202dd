// Numeric precision of training: the dtype the frozen base is loaded in, whether autocast
// runs, and the CUDA matmul mode. The decisions are pure functions of the device, the
// checkpoint's dtype and the options, so tests check them on a machine without a GPU.
//
// Policy:
//   * CPU: the base is fp32, no autocast.
//   * CUDA: the base is bf16 (fp32 checkpoints are cast once at load, bf16 and fp16 ones
//     load as bf16) and only the adapter's oft_r stays fp32, so no forward re-casts frozen
//     weights. fp16 is never a training dtype: without loss scaling its narrow exponent
//     range underflows gradients. With bf16_autocast off, an fp32 checkpoint trains in fp32.
//   * Autocast is only for an fp32 base on CUDA handed to the Trainer directly (library use).
//   * fp32 matmuls on CUDA may use TF32 tensor cores.
//
// AutocastState / AutocastScope capture and set the thread-local autocast flags of the CPU
// and CUDA device types (enabled + lower-precision dtype). Thread-compatible: they act on
// the calling thread only.
#ifndef OFT_SERVER_TRAIN_PRECISION_H_
#define OFT_SERVER_TRAIN_PRECISION_H_

#include "absl/status/status.h"
#include "c10/core/Device.h"
#include "c10/core/ScalarType.h"
#include "server/model/hf_config.h"

namespace oft {

// The dtype LoadOptions::dtype should have for a model trained on `device` (see above).
// `bf16` is TrainOptions::bf16_autocast.
at::ScalarType TrainingBaseDtype(const ModelConfig& config, const c10::Device& device, bool bf16);

// Whether the trainer wraps forward passes in bf16 autocast: an fp32 base on CUDA with the
// option on. (`force_cpu` is a test hook that also allows it on the CPU.)
bool UseBf16Autocast(const c10::Device& device, at::ScalarType base_dtype, bool option,
                     bool force_cpu = false);

// OK when a base of this dtype can be trained; INVALID_ARGUMENT for float16 (no loss
// scaling here: load it as bfloat16, which TrainingBaseDtype does on CUDA).
absl::Status CheckTrainableDtype(at::ScalarType base_dtype);

// Whether fp32 matmuls on `device` may use TF32: true on CUDA.
bool UseTf32(const c10::Device& device);
// Applies UseTf32 to the process-wide cuBLAS / cuDNN settings (no-op off CUDA).
void ConfigureMatmulPrecision(const c10::Device& device);

// The autocast flags of the calling thread for the CPU and CUDA device types.
struct AutocastState {
  bool cpu_enabled = false;
  at::ScalarType cpu_dtype = at::kBFloat16;
  bool cuda_enabled = false;
  at::ScalarType cuda_dtype = at::kHalf;

  static AutocastState Capture();
  void Apply() const;
};

// While alive: bf16 autocast on `device_type` (kCPU or kCUDA) when `on`; restores the
// previous state (flags and dtypes) and clears the cast cache on exit. Not copyable.
class AutocastScope {
 public:
  AutocastScope(bool on, c10::DeviceType device_type);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_;
  AutocastState was_;
};

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_PRECISION_H_
