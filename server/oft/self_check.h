// The startup self-check of the custom kernels: on each device, every optimized kernel
// (CPU micro-kernels, CUDA kernels) runs on small random inputs in each dtype the service
// uses and is compared with the composite path (the same math in plain ATen ops on the same
// device), within the tolerances stated in self_check.cc. What fails (a mismatch, an
// exception, a launch error surfacing at the device sync) is logged loudly and, in mode
// auto, switched to the composite path for that device from then on (kernel_registry.h).
//
// The checks exercise the kernels through the registered implementations, never through
// the switch, so they check the kernels even when a path was switched before.
//
// No LibTorch in this header (the composition root includes it).
//
// Call it before any other thread runs the kernels (server start, oft_train start): the
// switch itself is thread-safe, but a fallback that lands mid-step could mix paths within
// one step. Not reentrant: one self-check at a time per process.
#ifndef OFT_SERVER_OFT_SELF_CHECK_H_
#define OFT_SERVER_OFT_SELF_CHECK_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/oft/kernel_mode.h"

namespace oft {

enum class KernelCheckOutcome {
  kPass,      // within tolerance: the optimized kernel is used
  kMismatch,  // outside tolerance or wrong shape/dtype/non-finite values
  kError,     // the kernel threw (bad launch, CUDA error, ...)
  kNoKernel,  // no optimized kernel on this device type: the composite path runs anyway
  kDisabled,  // mode off: not checked, the composite path runs
};
// "pass", "mismatch", "error", "no_kernel", "disabled" (the metric's result label).
const char* KernelCheckOutcomeName(KernelCheckOutcome outcome);

struct KernelCheckResult {
  std::string device;             // "cpu", "cuda:0"
  KernelId kernel = KernelId::kBlockRotate;
  std::string dtype;              // "float32", "bfloat16", "float16"; "all" when not checked
  KernelCheckOutcome outcome = KernelCheckOutcome::kPass;
  double max_error = 0;           // max |optimized - composite| over the cases of this dtype
  double tolerance = 0;           // the bound it was held to (for the worst case)
  std::string detail;             // the failing case and why; empty on pass
};

struct KernelPathEntry {
  std::string device;
  KernelId kernel = KernelId::kBlockRotate;
  KernelPath path = KernelPath::kOptimized;
};

struct KernelSelfCheckReport {
  KernelMode mode = KernelMode::kAuto;
  std::vector<KernelCheckResult> results;  // one per (device, kernel, dtype)
  std::vector<KernelPathEntry> paths;      // the path each kernel takes now, per device
  // True when no result is a mismatch or an error.
  bool AllPassed() const;
  // One line per device: "cpu: build_rotation=kernel block_rotate=composite ...".
  std::vector<std::string> PathLines() const;
};

struct KernelSelfCheckOptions {
  KernelMode mode = KernelMode::kAuto;      // --cuda_kernels
  std::vector<std::string> devices;         // "cpu", "cuda", "cuda:N"; duplicates checked once
  uint64_t seed = 20261202;                 // inputs are drawn from a private generator
  // Receives the loud lines (failures, fallbacks) and the per-device path lines;
  // default: stderr with the prefix "oft kernel self-check: ".
  std::function<void(const std::string&)> log;
};

// Runs the checks and sets the kernel switch of every listed device: mode auto -> each
// kernel that failed on a device takes the composite path there; mode on -> as auto, then
// FAILED_PRECONDITION naming every failure (device, kernel, dtype, why), also when a CUDA
// device has no CUDA kernels in this binary; mode off -> every kernel on every device takes
// the composite path, nothing runs. INVALID_ARGUMENT naming a device that is not a device
// name or neither the CPU nor a CUDA device with index < kMaxCudaDevices (kernel_registry.h).
absl::StatusOr<KernelSelfCheckReport> RunKernelSelfCheck(const KernelSelfCheckOptions& options);

}  // namespace oft

#endif  // OFT_SERVER_OFT_SELF_CHECK_H_
