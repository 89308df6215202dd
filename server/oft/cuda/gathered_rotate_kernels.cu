// Per-row gathered block rotation. See gathered_rotate_kernels.cuh.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>

#include "server/oft/cuda/gathered_rotate_kernels.cuh"

namespace oft::cuda {
namespace {

template <typename T>
struct Io;
template <>
struct Io<float> {
  using acc = float;
  __device__ static float Load(float v) { return v; }
  __device__ static float Store(float v) { return v; }
};
template <>
struct Io<double> {
  using acc = double;
  __device__ static double Load(double v) { return v; }
  __device__ static double Store(double v) { return v; }
};
template <>
struct Io<__nv_bfloat16> {
  using acc = float;
  __device__ static float Load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 Store(float v) { return __float2bfloat16(v); }
};
template <>
struct Io<__half> {
  using acc = float;
  __device__ static float Load(__half v) { return __half2float(v); }
  __device__ static __half Store(float v) { return __float2half(v); }
};

// grid.x = N * r (one thread block per (row, block) pair); blockDim.x >= 32.
template <typename T>
__global__ void GatheredBlockRotateKernel(const T* __restrict__ x,
                                          const typename Io<T>::acc* __restrict__ rotations,
                                          const int64_t* __restrict__ index, T* __restrict__ y,
                                          int64_t r, int64_t b, int64_t adapters, bool shared) {
  using acc_t = typename Io<T>::acc;
  extern __shared__ unsigned char smem_raw[];
  acc_t* xs = reinterpret_cast<acc_t*>(smem_raw);  // [b]
  const int64_t pair = blockIdx.x;
  const int64_t n = pair / r, i = pair % r;
  const int64_t d = r * b;
  const T* xrow = x + n * d + i * b;
  T* yrow = y + n * d + i * b;
  const int64_t a = index[n];
  if (a < 0 || a >= adapters) {
    for (int64_t j = threadIdx.x; j < b; j += blockDim.x) yrow[j] = xrow[j];
    return;
  }
  for (int64_t k = threadIdx.x; k < b; k += blockDim.x) xs[k] = Io<T>::Load(xrow[k]);
  __syncthreads();
  const int64_t rows = shared ? 1 : r;
  const acc_t* m = rotations + (a * rows + (shared ? 0 : i)) * b * b;  // [b, b]
  for (int64_t j = threadIdx.x; j < b; j += blockDim.x) {
    acc_t sum = 0;
    for (int64_t k = 0; k < b; ++k) sum += xs[k] * m[k * b + j];
    yrow[j] = Io<T>::Store(sum);
  }
}

template <typename T>
cudaError_t Launch(const void* x, const void* rotations, const int64_t* index, void* y,
                   const GatheredRotateShape& s, cudaStream_t stream) {
  using acc_t = typename Io<T>::acc;
  int threads = static_cast<int>(((s.b + 31) / 32) * 32);
  if (threads > 1024) threads = 1024;
  const dim3 grid(static_cast<unsigned int>(s.tokens * s.blocks));
  const size_t smem = static_cast<size_t>(s.b) * sizeof(acc_t);
  GatheredBlockRotateKernel<T><<<grid, threads, smem, stream>>>(
      static_cast<const T*>(x), static_cast<const acc_t*>(rotations), index, static_cast<T*>(y),
      s.blocks, s.b, s.adapters, s.shared);
  return cudaGetLastError();
}

}  // namespace

bool GatheredRotateSupported(const GatheredRotateShape& s) {
  return s.tokens > 0 && s.blocks > 0 && s.b > 0 && s.b <= kMaxGatheredBlock &&
         s.tokens * s.blocks <= INT_MAX;
}

cudaError_t LaunchGatheredBlockRotate(const void* x, const void* rotations, const int64_t* index,
                                      void* y, const GatheredRotateShape& s, ActDtype dtype,
                                      cudaStream_t stream) {
  switch (dtype) {
    case ActDtype::kBFloat16:
      return Launch<__nv_bfloat16>(x, rotations, index, y, s, stream);
    case ActDtype::kFloat16:
      return Launch<__half>(x, rotations, index, y, s, stream);
    case ActDtype::kFloat64:
      return Launch<double>(x, rotations, index, y, s, stream);
    case ActDtype::kFloat32:
    default:
      return Launch<float>(x, rotations, index, y, s, stream);
  }
}

}  // namespace oft::cuda
