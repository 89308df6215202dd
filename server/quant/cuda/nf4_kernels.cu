#include "server/quant/cuda/nf4_kernels.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "server/quant/nf4_codebook.h"

namespace oft::cuda {
namespace {

__constant__ float kLevels[16] = {
    kNf4Codebook[0],  kNf4Codebook[1],  kNf4Codebook[2],  kNf4Codebook[3],
    kNf4Codebook[4],  kNf4Codebook[5],  kNf4Codebook[6],  kNf4Codebook[7],
    kNf4Codebook[8],  kNf4Codebook[9],  kNf4Codebook[10], kNf4Codebook[11],
    kNf4Codebook[12], kNf4Codebook[13], kNf4Codebook[14], kNf4Codebook[15],
};

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }

// One thread per code byte (two outputs); grid-stride loop. The 16 levels are staged
// in shared memory because a warp indexes them divergently.
template <typename T>
__global__ void Nf4DequantizeKernel(Nf4DequantArgs a, T* __restrict__ out) {
  __shared__ float levels[16];
  if (threadIdx.x < 16) levels[threadIdx.x] = kLevels[threadIdx.x];
  __syncthreads();
  const int64_t num_pairs = (a.numel + 1) / 2;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < num_pairs;
       p += stride) {
    const int64_t i = 2 * p;
    const int64_t block = i / a.block_size;  // both elements share it: block_size is even
    float scale;
    if (a.absmax_q != nullptr) {
      scale = __fmaf_rn(static_cast<float>(a.absmax_q[block]), a.absmax_scale[block / a.group_size],
                        a.absmax_offset);
    } else {
      scale = a.absmax[block];
    }
    const uint8_t byte = a.codes[p];
    out[i] = FromFloat<T>(__fmul_rn(levels[byte >> 4], scale));
    if (i + 1 < a.numel) out[i + 1] = FromFloat<T>(__fmul_rn(levels[byte & 0x0F], scale));
  }
}

template <typename T>
void Launch(const Nf4DequantArgs& args, T* out, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t num_pairs = (args.numel + 1) / 2;
  const int64_t wanted = (num_pairs + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 65535 * 8)));
  Nf4DequantizeKernel<T><<<blocks, kThreads, 0, stream>>>(args, out);
}

}  // namespace

void LaunchNf4Dequantize(const Nf4DequantArgs& args, void* out, Nf4OutputType type,
                         cudaStream_t stream) {
  if (args.numel <= 0) return;
  switch (type) {
    case Nf4OutputType::kFloat32:
      Launch(args, static_cast<float*>(out), stream);
      break;
    case Nf4OutputType::kBFloat16:
      Launch(args, static_cast<__nv_bfloat16*>(out), stream);
      break;
    case Nf4OutputType::kFloat16:
      Launch(args, static_cast<__half*>(out), stream);
      break;
  }
}

}  // namespace oft::cuda
