// The register micro-kernels of ops_cpu_kernels.h for one instruction-set path. CMake
// compiles this file once per path with its flags and one of
//   OFT_TILES_AVX512  (-mavx512f -mavx2 -mfma): 16-float zmm vectors, 32 registers
//   OFT_TILES_AVX2    (-mavx2 -mfma):           8-float ymm vectors, 16 registers
//   OFT_TILES_GENERIC (no ISA flags):           4-float GCC vectors (SSE2 on x86-64, 16 xmm)
// Everything here has internal linkage except the one accessor per path, and nothing here
// includes a library header with inline functions: code compiled for AVX-512 must never be
// what a generic caller links against.
//
// Tile shapes (accumulators + operand registers <= register file, so the inner loop keeps
// everything in registers; checked with objdump, docs/benchmarks.md):
//   rotation (y = x R):   RT tokens x NV vectors of output columns; per k one row of R is
//                         loaded (NV vectors) and one x value per token broadcast.
//   gram (dR = X^T G):    RT rows of dR x NV vectors of columns; per token one row of G is
//                         loaded and RT values of X broadcast. Callers pack X and G
//                         contiguous (ld = b) first: rows d floats apart thrash the cache.
//   avx512: rotation 8 x 2 (16 acc + 2), gram 8 x 2;   avx2: 6 x 2 (12 acc + 2 + 1 broadcast);
//   generic: 4 x 2 (8 acc + 2 + 1 broadcast + 1 product temporary, no FMA).
#include <cstdint>

#include "server/oft/ops_cpu_kernels.h"

#if defined(OFT_TILES_AVX512) || defined(OFT_TILES_AVX2)
#include <immintrin.h>
#endif

namespace oft::cpu::internal {
namespace {

#define OFT_INLINE __attribute__((always_inline)) inline

#if defined(OFT_TILES_AVX512)
using V = __m512;
constexpr int kW = 16;
constexpr int kRotRows = 8, kRotVecs = 2, kGramRows = 8, kGramVecs = 2;
OFT_INLINE V Zero() { return _mm512_setzero_ps(); }
OFT_INLINE V Load(const float* p) { return _mm512_loadu_ps(p); }
OFT_INLINE void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
OFT_INLINE V Bcast(const float* p) { return _mm512_set1_ps(*p); }
OFT_INLINE V MulAdd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
OFT_INLINE V Add(V a, V b) { return _mm512_add_ps(a, b); }
#elif defined(OFT_TILES_AVX2)
using V = __m256;
constexpr int kW = 8;
constexpr int kRotRows = 6, kRotVecs = 2, kGramRows = 6, kGramVecs = 2;
OFT_INLINE V Zero() { return _mm256_setzero_ps(); }
OFT_INLINE V Load(const float* p) { return _mm256_loadu_ps(p); }
OFT_INLINE void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
OFT_INLINE V Bcast(const float* p) { return _mm256_broadcast_ss(p); }
OFT_INLINE V MulAdd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
OFT_INLINE V Add(V a, V b) { return _mm256_add_ps(a, b); }
#elif defined(OFT_TILES_GENERIC)
typedef float V __attribute__((vector_size(16)));
constexpr int kW = 4;
constexpr int kRotRows = 4, kRotVecs = 2, kGramRows = 4, kGramVecs = 2;  // no FMA: +1 temp
OFT_INLINE V Zero() { return V{0.0f, 0.0f, 0.0f, 0.0f}; }
OFT_INLINE V Load(const float* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
OFT_INLINE void Store(float* p, V v) { __builtin_memcpy(p, &v, sizeof(v)); }
OFT_INLINE V Bcast(const float* p) { return V{*p, *p, *p, *p}; }
OFT_INLINE V MulAdd(V a, V b, V c) { return a * b + c; }
OFT_INLINE V Add(V a, V b) { return a + b; }
#else
#error "compile ops_cpu_tiles.cc with one of OFT_TILES_AVX512, OFT_TILES_AVX2, OFT_TILES_GENERIC"
#endif

OFT_INLINE int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// out[rr, W*v + l] = sum over s < n of a[rr * a_row + s * a_step] * b[s * b_step + W*v + l]
// for rr < RT, v < NV; rows [first, RT) are stored at out + rr * ldo (row stride ldo).
// With `accumulate` the sums start from out's values instead of zero.
template <int RT, int NV>
OFT_INLINE void Tile(const float* a, int64_t a_row, int64_t a_step, const float* b, int64_t b_step,
                     int64_t n, float* out, int64_t ldo, int first, bool accumulate = false) {
  V acc[RT][NV];
#pragma GCC unroll 16
  for (int rr = 0; rr < RT; ++rr) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[rr][v] = accumulate ? Load(out + rr * ldo + kW * v) : Zero();
  }
  for (int64_t s = 0; s < n; ++s) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = Load(b + s * b_step + kW * v);
#pragma GCC unroll 16
    for (int rr = 0; rr < RT; ++rr) {
      const V av = Bcast(a + rr * a_row + s * a_step);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[rr][v] = MulAdd(av, bv[v], acc[rr][v]);
    }
  }
  // (A loop from `first` would index acc at run time and keep it in memory.)
#pragma GCC unroll 16
  for (int rr = 0; rr < RT; ++rr) {
    if (rr < first) continue;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) Store(out + rr * ldo + kW * v, acc[rr][v]);
  }
}

// Every column tile of one [RT, b] x [b, b] block product; the last tile overlaps the one
// before when b is not a multiple of the tile width (same sums, so the same values).
template <int RT>
OFT_INLINE void RotateBlock(const float* x, int64_t ldx, const float* m, int64_t b, float* y,
                            int64_t ldy) {
  constexpr int64_t kWide = kW * kRotVecs;
  int64_t j = 0;
  for (; j + kWide <= b; j += kWide) Tile<RT, kRotVecs>(x, ldx, 1, m + j, b, b, y + j, ldy, 0);
  for (; j + kW <= b; j += kW) Tile<RT, 1>(x, ldx, 1, m + j, b, b, y + j, ldy, 0);
  if (j < b) Tile<RT, 1>(x, ldx, 1, m + b - kW, b, b, y + b - kW, ldy, 0);
}

template <int RT>
OFT_INLINE void RotateTokens(const float* x, int64_t ldx, const float* rot, bool shared, int64_t r,
                             int64_t b, float* y, int64_t ldy) {
  for (int64_t i = 0; i < r; ++i) {
    RotateBlock<RT>(x + i * b, ldx, rot + (shared ? 0 : i) * b * b, b, y + i * b, ldy);
  }
}

// The last n % kRotRows tokens: a 4-token tile then one of 3, 2 or 1 (fewer row pointers
// than one tile per count, which keeps the AVX-512 tail loops free of stack reloads).
__attribute__((noinline)) void RotateTail(int64_t rem, const float* x, int64_t ldx, const float* rot, bool shared,
                           int64_t r, int64_t b, float* y, int64_t ldy) {
  if (rem >= 4) {
    RotateTokens<4>(x, ldx, rot, shared, r, b, y, ldy);
    x += 4 * ldx, y += 4 * ldy, rem -= 4;
  }
  if (rem == 3) RotateTokens<3>(x, ldx, rot, shared, r, b, y, ldy);
  if (rem == 2) RotateTokens<2>(x, ldx, rot, shared, r, b, y, ldy);
  if (rem == 1) RotateTokens<1>(x, ldx, rot, shared, r, b, y, ldy);
}

// Loop order (measured, docs/benchmarks.md): a panel of tokens at a time; within it the
// blocks in groups whose rotations fit in L2 (per-block R is r * b * b floats, often larger);
// within a group, one register tile of tokens walks the group's blocks left to right, so
// every x and y row is read and written as one sequential stream. (Walking one block's
// column down the tokens instead strides by d floats -- a power of two -- and thrashes the
// few cache sets those addresses map to.)
constexpr int64_t kPanelTokens = 16 * kRotRows;
constexpr int64_t kGroupFloats = 64 * 1024;  // 256 KiB of rotations per block group

void RotateRows(const float* x, int64_t ldx, const float* rot, bool shared, int64_t n, int64_t r,
                int64_t b, float* y, int64_t ldy) {
  const int64_t full = n - n % kRotRows;
  const int64_t group = shared ? r : (b * b >= kGroupFloats ? 1 : kGroupFloats / (b * b));
  for (int64_t t = 0; t < full; t += kPanelTokens) {
    const int64_t end = Min(full, t + kPanelTokens);
    for (int64_t i0 = 0; i0 < r; i0 += group) {
      const int64_t i1 = Min(r, i0 + group);
      for (int64_t u = t; u < end; u += kRotRows) {
        for (int64_t i = i0; i < i1; ++i) {
          RotateBlock<kRotRows>(x + u * ldx + i * b, ldx, rot + (shared ? 0 : i) * b * b, b,
                                y + u * ldy + i * b, ldy);
        }
      }
    }
  }
  if (full < n) {
    RotateTail(n - full, x + full * ldx, ldx, rot, shared, r, b, y + full * ldy, ldy);
  }
}

template <int RT>
OFT_INLINE void GramBlock(const float* xk, const float* g, int64_t n, int64_t ld, int64_t b,
                          float* dst, int first, bool accumulate) {
  constexpr int64_t kWide = kW * kGramVecs;
  int64_t j = 0;
  for (; j + kWide <= b; j += kWide) {
    Tile<RT, kGramVecs>(xk, 1, ld, g + j, ld, n, dst + j, b, first, accumulate);
  }
  for (; j + kW <= b; j += kW) Tile<RT, 1>(xk, 1, ld, g + j, ld, n, dst + j, b, first, accumulate);
  if (j == b) return;
  if (!accumulate) return Tile<RT, 1>(xk, 1, ld, g + b - kW, ld, n, dst + b - kW, b, first);
  // The overlapping last tile must not add twice to the columns before j.
  float tail[RT * kW];
  Tile<RT, 1>(xk, 1, ld, g + b - kW, ld, n, tail, kW, 0);
  for (int rr = first; rr < RT; ++rr) {
    for (int64_t c = j - (b - kW); c < kW; ++c) dst[rr * b + b - kW + c] += tail[rr * kW + c];
  }
}

void Gram(const float* x, const float* g, int64_t n, int64_t ld, int64_t b, float* out,
          bool accumulate) {
  for (int64_t k0 = 0; k0 < b; k0 += kGramRows) {
    // A row range past b is shifted back to end at b; its first rows belong to the previous
    // range and are not stored again.
    const int64_t start = Min(k0, b - kGramRows);
    const int first = static_cast<int>(k0 - start);
    GramBlock<kGramRows>(x + start, g, n, ld, b, out + start * b, first, accumulate);
  }
}

}  // namespace

#if defined(OFT_TILES_AVX512)
const Kernels& Avx512Kernels() {
  // gram_direct_block 32: one 2 x 16-float column tile spans the block, and reading the rows
  // in place beat packing them at d = 256, 1024 and 4096 (docs/benchmarks.md).
  static const Kernels k{&RotateRows, &Gram, kW, kGramRows, kRotRows,
                         static_cast<Isa>(2), /*gram_direct_block=*/32};  // Isa::kAvx512
  return k;
}
#elif defined(OFT_TILES_AVX2)
const Kernels& Avx2Kernels() {
  static const Kernels k{&RotateRows, &Gram, kW, kGramRows, kRotRows, static_cast<Isa>(1),
                         /*gram_direct_block=*/0};
  return k;
}
#else
const Kernels& GenericKernels() {
  static const Kernels k{&RotateRows, &Gram, kW, kGramRows, kRotRows, static_cast<Isa>(0),
                         /*gram_direct_block=*/0};
  return k;
}
#endif

}  // namespace oft::cpu::internal
