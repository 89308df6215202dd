// Fused skew build + Cayley-Neumann polynomial (and its backward), one thread block per
// rotation block. See rotation_kernels.cuh for the contract and the math.
//
// Thread layout (both kernels): a block of b * rpp threads, rpp = min(b, 512 / b) "rows per
// pass". Thread t owns column j = t % b and rows i0 + k * rpp (i0 = t / b, k < kItems) of
// every b x b working matrix. A product C = A B is then computed column-wise: for each l the
// thread reads B[l, j] once from shared memory and A[i_k, l] for its rows (the same address
// across a warp when b >= 32, so a broadcast). Results go to registers first; after a
// __syncthreads() they overwrite the operand in place, so no third b x b buffer is needed.
#include <algorithm>
#include <type_traits>

#include "server/oft/cuda/rotation_kernels.cuh"

namespace oft::cuda {
namespace {

constexpr int kMaxThreads = 512;
constexpr int kMaxItemsFp64 = 8;  // register tile cap for double (b <= 64)

// Accumulate in float for fp32, in double for fp64.
template <typename T>
using AccT = std::conditional_t<std::is_same_v<T, double>, double, float>;

struct LaunchShape {
  int rows_per_pass;  // rpp
  int threads;        // b * rpp
  int items;          // ceil(b / rpp): rows per thread
};

LaunchShape ShapeFor(int b) {
  LaunchShape s;
  s.rows_per_pass = std::max(1, std::min(b, kMaxThreads / b));
  s.threads = b * s.rows_per_pass;
  s.items = (b + s.rows_per_pass - 1) / s.rows_per_pass;
  return s;
}

// Compile-time register tile: the smallest of {2, 8, 32} that covers `items`.
int TileFor(int items) { return items <= 2 ? 2 : (items <= 8 ? 8 : 32); }

size_t SharedBytes(int b, RotationDtype dtype, bool backward) {
  const size_t elem = dtype == RotationDtype::kFloat64 ? sizeof(double) : sizeof(float);
  return (backward ? 3 : 2) * static_cast<size_t>(b) * b * elem;
}

// Packed (row-major strict upper triangle) index of (i, j), i < j.
__device__ __forceinline__ int PackedIndex(int i, int j, int b) {
  return i * (2 * b - i - 1) / 2 + (j - i - 1);
}

// q[i, j] = packed[k(i, j)] above the diagonal, -packed[k(j, i)] below, 0 on it.
template <typename T>
__device__ __forceinline__ void LoadSkew(const T* __restrict__ packed_row, T* q, int b) {
  for (int e = threadIdx.x; e < b * b; e += blockDim.x) {
    const int i = e / b, j = e % b;
    T v = T(0);
    if (i < j) {
      v = packed_row[PackedIndex(i, j, b)];
    } else if (i > j) {
      v = -packed_row[PackedIndex(j, i, b)];
    }
    q[e] = v;
  }
}

// acc[k] += sum_l a[i_k, l] * m[l, j] for this thread's rows i_k = i0 + k * rpp < b.
// Rows are addressed from one base pointer with a 32-bit offset, which keeps the b = 128
// tile (32 rows) within the 128 registers a 512-thread block allows.
template <int kItems, typename Acc, typename T>
__device__ __forceinline__ void AccumulateProduct(const T* a, const T* m, int b, int i0, int rpp,
                                                  int j, Acc (&acc)[kItems]) {
  const T* a_row = a + i0 * b;  // row i0
  const int row_step = rpp * b;
  const int valid = (b - i0 + rpp - 1) / rpp;  // rows i_k < b
  for (int l = 0; l < b; ++l) {
    const Acc mv = static_cast<Acc>(m[l * b + j]);
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      if (k < valid) acc[k] += static_cast<Acc>(a_row[k * row_step + l]) * mv;
    }
  }
}

// Forward. Horner: H_m = c_m I; H_p = c_p I + Q H_{p+1}; R = H_0. The first step is
// folded, H_{m-1} = c_{m-1} I + c_m Q, so degree m costs m - 1 products.
// Shared memory: q [b, b], h [b, b].
template <typename T, int kItems>
__global__ void __launch_bounds__(kMaxThreads)
    BuildRotationKernel(const T* __restrict__ packed,  // [rows, b(b-1)/2]
                        T* __restrict__ rotation,      // [rows, b, b]
                        int b, int rpp, NeumannPolynomial poly) {
  using Acc = AccT<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q = reinterpret_cast<T*>(smem_raw);
  T* h = q + b * b;
  const int64_t row = blockIdx.x;
  const int64_t n = static_cast<int64_t>(b) * (b - 1) / 2;
  T* out = rotation + row * b * b;
  const int m = poly.degree;

  if (m == 0) {  // R = c0 I
    for (int e = threadIdx.x; e < b * b; e += blockDim.x) {
      out[e] = (e / b == e % b) ? static_cast<T>(poly.c[0]) : T(0);
    }
    return;
  }
  LoadSkew(packed + row * n, q, b);
  __syncthreads();
  {
    const Acc cm = static_cast<Acc>(poly.c[m]), cm1 = static_cast<Acc>(poly.c[m - 1]);
    T* dst = m == 1 ? out : h;  // degree 1: this already is R
    for (int e = threadIdx.x; e < b * b; e += blockDim.x) {
      dst[e] = static_cast<T>(cm * static_cast<Acc>(q[e]) + (e / b == e % b ? cm1 : Acc(0)));
    }
  }
  if (m == 1) return;
  __syncthreads();

  const int j = threadIdx.x % b, i0 = threadIdx.x / b;
  for (int p = m - 2; p >= 0; --p) {
    Acc t[kItems];
#pragma unroll
    for (int k = 0; k < kItems; ++k) t[k] = Acc(0);
    AccumulateProduct<kItems>(q, h, b, i0, rpp, j, t);  // t = Q H_{p+1}
    const Acc cp = static_cast<Acc>(poly.c[p]);
    if (p == 0) {  // last step: straight to global memory, coalesced along j
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const int i = i0 + k * rpp;
        if (i < b) out[i * b + j] = static_cast<T>(t[k] + (i == j ? cp : Acc(0)));
      }
    } else {
      __syncthreads();  // every thread is done reading h
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const int i = i0 + k * rpp;
        if (i < b) h[i * b + j] = static_cast<T>(t[k] + (i == j ? cp : Acc(0)));
      }
      __syncthreads();
    }
  }
}

// Backward. With P = Q^T = -Q the reference's gradient regroups as
//   G_Q = sum_{j=0..m-1} P^j G A_j,   A_j = sum_{s>=0} c_{j+1+s} P^s,
// and both factors follow a Horner recurrence downwards from j = m-1:
//   A_{m-1} = c_m I,      A_j = c_{j+1} I + P A_{j+1},
//   W_{m-1} = G A_{m-1},  W_j = G A_j + P W_{j+1},      G_Q = W_0.
// (By induction W_j = sum_{i>=j} P^{i-j} G A_i.) Only A and W are live, both in shared
// memory next to Q; G is read from global memory; each thread keeps one register tile.
// Shared memory: q [b, b], a [b, b], w [b, b].
template <typename T, int kItems>
__global__ void __launch_bounds__(kMaxThreads)
    BuildRotationBackwardKernel(const T* __restrict__ grad_rotation,  // [rows, b, b]
                                const T* __restrict__ packed,         // [rows, b(b-1)/2]
                                T* __restrict__ grad_packed,          // [rows, b(b-1)/2]
                                int b, int rpp, NeumannPolynomial poly) {
  using Acc = AccT<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q = reinterpret_cast<T*>(smem_raw);
  T* a = q + b * b;
  T* w = a + b * b;
  const int64_t row = blockIdx.x;
  const int64_t n = static_cast<int64_t>(b) * (b - 1) / 2;
  const T* g = grad_rotation + row * b * b;
  T* out = grad_packed + row * n;
  const int m = poly.degree;

  if (m == 0) {  // R = c0 I does not depend on Q
    for (int e = threadIdx.x; e < static_cast<int>(n); e += blockDim.x) out[e] = T(0);
    return;
  }
  LoadSkew(packed + row * n, q, b);
  {
    const Acc cm = static_cast<Acc>(poly.c[m]);
    for (int e = threadIdx.x; e < b * b; e += blockDim.x) {
      a[e] = static_cast<T>(e / b == e % b ? cm : Acc(0));  // A_{m-1}
      w[e] = static_cast<T>(cm * static_cast<Acc>(g[e]));   // W_{m-1} = c_m G
    }
  }
  __syncthreads();

  const int j = threadIdx.x % b, i0 = threadIdx.x / b;
  for (int p = m - 2; p >= 0; --p) {
    Acc t[kItems];
    // A_p = c_{p+1} I + P A_{p+1} = c_{p+1} I - Q A_{p+1}.
#pragma unroll
    for (int k = 0; k < kItems; ++k) t[k] = Acc(0);
    AccumulateProduct<kItems>(q, a, b, i0, rpp, j, t);
    __syncthreads();  // done reading a
    const Acc cp1 = static_cast<Acc>(poly.c[p + 1]);
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int i = i0 + k * rpp;
      if (i < b) a[i * b + j] = static_cast<T>((i == j ? cp1 : Acc(0)) - t[k]);
    }
    __syncthreads();
    // W_p = G A_p + P W_{p+1} = G A_p - Q W_{p+1}.
    // Two single-operand passes (not one fused loop) keep the b = 128 tile in registers.
#pragma unroll
    for (int k = 0; k < kItems; ++k) t[k] = Acc(0);
    AccumulateProduct<kItems>(q, w, b, i0, rpp, j, t);  // t = Q W_{p+1}
#pragma unroll
    for (int k = 0; k < kItems; ++k) t[k] = -t[k];
    AccumulateProduct<kItems>(g, a, b, i0, rpp, j, t);  // t += G A_p
    __syncthreads();                                    // done reading w
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int i = i0 + k * rpp;
      if (i < b) w[i * b + j] = static_cast<T>(t[k]);
    }
    __syncthreads();
  }

  // grad_packed[k(i, j)] = G_Q[i, j] - G_Q[j, i], G_Q = W_0 (complete after the last sync).
  for (int e = threadIdx.x; e < b * b; e += blockDim.x) {
    const int i = e / b, jj = e % b;
    if (i < jj) out[PackedIndex(i, jj, b)] = w[i * b + jj] - w[jj * b + i];
  }
}

template <typename KernelT>
cudaError_t Configure(KernelT kernel, size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(smem));
}

template <typename T, int kItems>
cudaError_t LaunchForwardT(const void* packed, void* rotation, int64_t rows, int b,
                           const NeumannPolynomial& poly, const LaunchShape& shape, size_t smem,
                           cudaStream_t stream) {
  auto* kernel = &BuildRotationKernel<T, kItems>;
  if (cudaError_t err = Configure(kernel, smem); err != cudaSuccess) return err;
  kernel<<<static_cast<unsigned>(rows), shape.threads, smem, stream>>>(
      static_cast<const T*>(packed), static_cast<T*>(rotation), b, shape.rows_per_pass, poly);
  return cudaSuccess;
}

template <typename T, int kItems>
cudaError_t LaunchBackwardT(const void* grad_rotation, const void* packed, void* grad_packed,
                            int64_t rows, int b, const NeumannPolynomial& poly,
                            const LaunchShape& shape, size_t smem, cudaStream_t stream) {
  auto* kernel = &BuildRotationBackwardKernel<T, kItems>;
  if (cudaError_t err = Configure(kernel, smem); err != cudaSuccess) return err;
  kernel<<<static_cast<unsigned>(rows), shape.threads, smem, stream>>>(
      static_cast<const T*>(grad_rotation), static_cast<const T*>(packed),
      static_cast<T*>(grad_packed), b, shape.rows_per_pass, poly);
  return cudaSuccess;
}

}  // namespace

bool BuildRotationSupported(int b, RotationDtype dtype, bool backward, int device) {
  if (b < 2 || b > kMaxRotationBlock) return false;
  const LaunchShape shape = ShapeFor(b);
  if (dtype == RotationDtype::kFloat64 && shape.items > kMaxItemsFp64) return false;
  int optin = 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
      cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error so later launch checks stay clean
    return false;
  }
  return SharedBytes(b, dtype, backward) <= static_cast<size_t>(optin);
}

cudaError_t LaunchBuildRotation(const void* packed, void* rotation, int64_t rows, int b,
                                const NeumannPolynomial& poly, RotationDtype dtype,
                                cudaStream_t stream) {
  const LaunchShape shape = ShapeFor(b);
  const size_t smem = SharedBytes(b, dtype, /*backward=*/false);
  const int tile = TileFor(shape.items);
  if (dtype == RotationDtype::kFloat64) {
    if (tile == 2)
      return LaunchForwardT<double, 2>(packed, rotation, rows, b, poly, shape, smem, stream);
    if (tile == 8)
      return LaunchForwardT<double, 8>(packed, rotation, rows, b, poly, shape, smem, stream);
    return cudaErrorInvalidValue;  // excluded by BuildRotationSupported
  }
  if (tile == 2)
    return LaunchForwardT<float, 2>(packed, rotation, rows, b, poly, shape, smem, stream);
  if (tile == 8)
    return LaunchForwardT<float, 8>(packed, rotation, rows, b, poly, shape, smem, stream);
  return LaunchForwardT<float, 32>(packed, rotation, rows, b, poly, shape, smem, stream);
}

cudaError_t LaunchBuildRotationBackward(const void* grad_rotation, const void* packed,
                                        void* grad_packed, int64_t rows, int b,
                                        const NeumannPolynomial& poly, RotationDtype dtype,
                                        cudaStream_t stream) {
  const LaunchShape shape = ShapeFor(b);
  const size_t smem = SharedBytes(b, dtype, /*backward=*/true);
  const int tile = TileFor(shape.items);
  if (dtype == RotationDtype::kFloat64) {
    if (tile == 2) {
      return LaunchBackwardT<double, 2>(grad_rotation, packed, grad_packed, rows, b, poly, shape,
                                        smem, stream);
    }
    if (tile == 8) {
      return LaunchBackwardT<double, 8>(grad_rotation, packed, grad_packed, rows, b, poly, shape,
                                        smem, stream);
    }
    return cudaErrorInvalidValue;
  }
  if (tile == 2) {
    return LaunchBackwardT<float, 2>(grad_rotation, packed, grad_packed, rows, b, poly, shape, smem,
                                     stream);
  }
  if (tile == 8) {
    return LaunchBackwardT<float, 8>(grad_rotation, packed, grad_packed, rows, b, poly, shape, smem,
                                     stream);
  }
  return LaunchBackwardT<float, 32>(grad_rotation, packed, grad_packed, rows, b, poly, shape, smem,
                                    stream);
}

}  // namespace oft::cuda
