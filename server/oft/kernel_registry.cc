#include "server/oft/kernel_registry.h"

#include <atomic>

#include "absl/strings/str_cat.h"

namespace oft {
namespace {

// Slot 0: CPU; slot 1 + i: cuda:i.
constexpr int kNumSlots = 1 + kMaxCudaDevices;
constexpr int kNumTypes = 2;  // CPU, CUDA

// Zero-initialised (constant initialisation), so registrations made during other files'
// static initialisation never see an unconstructed table.
std::atomic<bool> g_composite[kNumSlots][kNumKernels];
std::atomic<KernelFnPtr> g_optimized[kNumTypes][kNumKernels];
std::atomic<KernelFnPtr> g_composite_fn[kNumKernels];

int Slot(const c10::Device& device) {
  if (device.is_cpu()) return 0;
  if (device.is_cuda()) {
    const int index = device.has_index() ? device.index() : 0;
    return index < kMaxCudaDevices ? 1 + index : -1;
  }
  return -1;
}

int TypeSlot(c10::DeviceType type) {
  if (type == c10::DeviceType::CPU) return 0;
  if (type == c10::DeviceType::CUDA) return 1;
  return -1;
}

int K(KernelId kernel) { return static_cast<int>(kernel); }

}  // namespace

const char* KernelName(KernelId kernel) {
  switch (kernel) {
    case KernelId::kBuildRotation:
      return "build_rotation";
    case KernelId::kBuildRotationBackward:
      return "build_rotation_backward";
    case KernelId::kBlockRotate:
      return "block_rotate";
    case KernelId::kBlockRotateBackward:
      return "block_rotate_backward";
    case KernelId::kGatheredBlockRotate:
      return "gathered_block_rotate";
    case KernelId::kNf4Dequantize:
      return "nf4_dequantize";
  }
  return "unknown";
}

const char* KernelPathName(KernelPath path) {
  return path == KernelPath::kOptimized ? "kernel" : "composite";
}

absl::StatusOr<KernelMode> ParseKernelMode(std::string_view text, std::string_view flag) {
  if (text == "auto") return KernelMode::kAuto;
  if (text == "on") return KernelMode::kOn;
  if (text == "off") return KernelMode::kOff;
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(flag), " must be auto, on or off, got '", std::string(text), "'"));
}

const char* KernelModeName(KernelMode mode) {
  switch (mode) {
    case KernelMode::kAuto:
      return "auto";
    case KernelMode::kOn:
      return "on";
    case KernelMode::kOff:
      return "off";
  }
  return "unknown";
}

KernelPath KernelPathFor(KernelId kernel, const c10::Device& device) {
  const int slot = Slot(device);
  if (slot < 0) return KernelPath::kComposite;
  return g_composite[slot][K(kernel)].load(std::memory_order_relaxed) ? KernelPath::kComposite
                                                                       : KernelPath::kOptimized;
}

void SetKernelPath(KernelId kernel, const c10::Device& device, KernelPath path) {
  const int slot = Slot(device);
  if (slot < 0) return;
  g_composite[slot][K(kernel)].store(path == KernelPath::kComposite, std::memory_order_relaxed);
}

void ResetKernelPaths() {
  for (auto& slot : g_composite) {
    for (auto& k : slot) k.store(false, std::memory_order_relaxed);
  }
}

KernelFnPtr RegisterOptimizedKernel(KernelId kernel, c10::DeviceType type, KernelFnPtr fn) {
  const int t = TypeSlot(type);
  if (t < 0) return nullptr;
  return g_optimized[t][K(kernel)].exchange(fn);
}

KernelFnPtr OptimizedKernel(KernelId kernel, c10::DeviceType type) {
  const int t = TypeSlot(type);
  if (t < 0) return nullptr;
  return g_optimized[t][K(kernel)].load(std::memory_order_acquire);
}

KernelFnPtr RegisterCompositeKernel(KernelId kernel, KernelFnPtr fn) {
  return g_composite_fn[K(kernel)].exchange(fn);
}

KernelFnPtr CompositeKernel(KernelId kernel) {
  return g_composite_fn[K(kernel)].load(std::memory_order_acquire);
}

namespace testing {

ScopedOptimizedKernel::ScopedOptimizedKernel(KernelId kernel, c10::DeviceType type,
                                             KernelFnPtr fn)
    : kernel_(kernel), type_(type), previous_(RegisterOptimizedKernel(kernel, type, fn)) {}

ScopedOptimizedKernel::~ScopedOptimizedKernel() {
  RegisterOptimizedKernel(kernel_, type_, previous_);
}

}  // namespace testing
}  // namespace oft
