// CUDA kernel of NF4 dequantization (no LibTorch headers: raw pointers and a stream).
// The contract and the format are those of server/quant/nf4.h; the kernel is
// bit-identical to the CPU reference (fp32 decode with explicit fma / multiply, then a
// round-to-nearest-even cast).
#ifndef OFT_SERVER_QUANT_CUDA_NF4_KERNELS_CUH_
#define OFT_SERVER_QUANT_CUDA_NF4_KERNELS_CUH_

#include <cstdint>

#include <cuda_runtime_api.h>

namespace oft::cuda {

enum class Nf4OutputType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

struct Nf4DequantArgs {
  const uint8_t* codes = nullptr;        // [num_blocks * block_size / 2], high nibble first
  const float* absmax = nullptr;         // [num_blocks] fp32; nullptr with double quant
  const int8_t* absmax_q = nullptr;      // [num_blocks] int8 with double quant, else nullptr
  const float* absmax_scale = nullptr;   // [ceil(num_blocks / group_size)] with double quant
  float absmax_offset = 0.0f;            // double quant offset
  int64_t numel = 0;                     // decoded elements
  int64_t block_size = 64;               // even
  int64_t group_size = 256;              // absmax values per double-quant scale
};

// Enqueues the decode of args.numel values into `out` (of `type`) on `stream`. Does
// not check for launch errors: the caller does (cudaGetLastError).
void LaunchNf4Dequantize(const Nf4DequantArgs& args, void* out, Nf4OutputType type,
                         cudaStream_t stream);

}  // namespace oft::cuda

#endif  // OFT_SERVER_QUANT_CUDA_NF4_KERNELS_CUH_
