// The custom kernels by name, the two paths each can take, and the --cuda_kernels modes.
// No LibTorch headers: the composition root (server.cc, main.cc), which compiles gRPC and
// protobuf code, includes this.
#ifndef OFT_SERVER_OFT_KERNEL_MODE_H_
#define OFT_SERVER_OFT_KERNEL_MODE_H_

#include <array>
#include <string_view>

#include "absl/status/statusor.h"

namespace oft {

// Every custom kernel with a composite twin.
enum class KernelId : int {
  kBuildRotation = 0,      // oft::build_rotation
  kBuildRotationBackward,  // oft::build_rotation_backward
  kBlockRotate,            // oft::block_rotate
  kBlockRotateBackward,    // oft::block_rotate_backward
  kGatheredBlockRotate,    // oft::gathered_block_rotate
  kNf4Dequantize,          // oft::nf4_dequantize
};
inline constexpr int kNumKernels = 6;
inline constexpr std::array<KernelId, kNumKernels> kAllKernels = {
    KernelId::kBuildRotation,       KernelId::kBuildRotationBackward, KernelId::kBlockRotate,
    KernelId::kBlockRotateBackward, KernelId::kGatheredBlockRotate,   KernelId::kNf4Dequantize};

// "build_rotation", "block_rotate_backward", ... (the dispatcher op names).
const char* KernelName(KernelId kernel);

enum class KernelPath { kOptimized, kComposite };
const char* KernelPathName(KernelPath path);  // "kernel" or "composite"

// --cuda_kernels: auto = self-check, fall back per kernel on failure; on = self-check,
// refuse to start on any failure; off = composite path everywhere, no optimized kernel runs.
enum class KernelMode { kAuto, kOn, kOff };
// "auto" | "on" | "off"; INVALID_ARGUMENT naming `flag` otherwise.
absl::StatusOr<KernelMode> ParseKernelMode(std::string_view text,
                                           std::string_view flag = "--cuda_kernels");
const char* KernelModeName(KernelMode mode);

}  // namespace oft

#endif  // OFT_SERVER_OFT_KERNEL_MODE_H_
