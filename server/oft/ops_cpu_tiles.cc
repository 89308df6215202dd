// The register micro-kernels of ops_cpu_kernels.h for one instruction-set path. CMake
// compiles this file once per path with its flags and one of
//   OFT_TILES_AVX512  (-mavx512f -mavx2 -mfma): 16-float zmm vectors, 32 registers
//   OFT_TILES_AVX2    (-mavx2 -mfma -mf16c):    8-float ymm vectors, 16 registers
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
//   served form (fp16 rows): the same tiles, but 2 x 2 on the generic path (its conversion
//   constants need 5 of the 16 xmm registers).
// The served form of an adapter (y = x + x D, D = R - I stored in fp16) runs the rotation
// tiles with R's rows loaded from fp16 (vcvtph2ps on the AVX paths, integer bit moves on the
// generic one) and x added to each tile's sums as they are stored.
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
constexpr int kRotRows = 8, kRotVecs = 2, kGramRows = 8, kGramVecs = 2, kDeltaRows = 8;
OFT_INLINE V Zero() { return _mm512_setzero_ps(); }
OFT_INLINE V Load(const float* p) { return _mm512_loadu_ps(p); }
OFT_INLINE void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
OFT_INLINE V Bcast(const float* p) { return _mm512_set1_ps(*p); }
OFT_INLINE V MulAdd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
OFT_INLINE V Add(V a, V b) { return _mm512_add_ps(a, b); }
// (GCC 12's _mm512_cvtph_ps starts from _mm512_undefined_ps, which -Wmaybe-uninitialized
// flags; the zero-masked form with every lane selected is the same instruction.)
OFT_INLINE V LoadHalf(const uint16_t* p) {
  return _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#elif defined(OFT_TILES_AVX2)
using V = __m256;
constexpr int kW = 8;
constexpr int kRotRows = 6, kRotVecs = 2, kGramRows = 6, kGramVecs = 2, kDeltaRows = 6;
OFT_INLINE V Zero() { return _mm256_setzero_ps(); }
OFT_INLINE V Load(const float* p) { return _mm256_loadu_ps(p); }
OFT_INLINE void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
OFT_INLINE V Bcast(const float* p) { return _mm256_broadcast_ss(p); }
OFT_INLINE V MulAdd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
OFT_INLINE V Add(V a, V b) { return _mm256_add_ps(a, b); }
OFT_INLINE V LoadHalf(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#elif defined(OFT_TILES_GENERIC)
typedef float V __attribute__((vector_size(16)));
constexpr int kW = 4;
// No FMA: +1 temporary. The fp16 rows' conversion holds 5 constants, hence 2-row tiles there.
constexpr int kRotRows = 4, kRotVecs = 2, kGramRows = 4, kGramVecs = 2, kDeltaRows = 2;
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
// IEEE half -> float without F16C, exact for every finite half: a normal half's exponent and
// mantissa move to float's fields with the bias raised by 112; a subnormal (exponent 0) is
// its mantissa times 2^-24, converted as an integer (no float denormals, so it is exact also
// with flush-to-zero/denormals-are-zero set); the sign bit moves last. Three constants, so
// the tiles around it stay in registers. Inf/NaN never occur in the served form.
typedef uint16_t H4 __attribute__((vector_size(8)));
typedef uint32_t U __attribute__((vector_size(16)));
typedef int32_t S __attribute__((vector_size(16)));
OFT_INLINE V LoadHalf(const uint16_t* p) {
  H4 packed;
  __builtin_memcpy(&packed, p, sizeof(packed));
  const U h = __builtin_convertvector(packed, U);
  const U sign = h & 0x8000u;
  const U mag = h ^ sign;
  const U normal = (mag << 13) + (112u << 23);
  const V sub =
      __builtin_convertvector(reinterpret_cast<const S&>(mag), V) * 5.9604644775390625e-8f;  // 2^-24
  U sub_bits;
  __builtin_memcpy(&sub_bits, &sub, sizeof(sub_bits));
  const U is_sub = (U)((mag >> 10) == 0u);  // all ones where subnormal or zero
  const U bits = ((sub_bits & is_sub) | (normal & ~is_sub)) | (sign << 16);
  V out;
  __builtin_memcpy(&out, &bits, sizeof(out));
  return out;
}
#else
#error "compile ops_cpu_tiles.cc with one of OFT_TILES_AVX512, OFT_TILES_AVX2, OFT_TILES_GENERIC"
#endif

OFT_INLINE int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

OFT_INLINE V LoadB(const float* p) { return Load(p); }
OFT_INLINE V LoadB(const uint16_t* p) { return LoadHalf(p); }

// out[rr, W*v + l] = sum over s < n of a[rr * a_row + s * a_step] * b[s * b_step + W*v + l]
// for rr < RT, v < NV; rows [first, RT) are stored at out + rr * ldo (row stride ldo).
// With `accumulate` the sums start from out's values instead of zero. B is float or fp16
// (uint16_t bits). With kAddX, plus[rr * a_row + W*v + l] is added to each finished sum as it
// is stored (the identity part of y = x + x D).
template <int RT, int NV, typename B = float, bool kAddX = false>
OFT_INLINE void Tile(const float* a, int64_t a_row, int64_t a_step, const B* b, int64_t b_step,
                     int64_t n, float* out, int64_t ldo, int first, bool accumulate = false,
                     const float* plus = nullptr) {
  V acc[RT][NV];
#pragma GCC unroll 16
  for (int rr = 0; rr < RT; ++rr) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[rr][v] = accumulate ? Load(out + rr * ldo + kW * v) : Zero();
  }
  for (int64_t s = 0; s < n; ++s) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = LoadB(b + s * b_step + kW * v);
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
    for (int v = 0; v < NV; ++v) {
      if constexpr (kAddX) acc[rr][v] = Add(acc[rr][v], Load(plus + rr * a_row + kW * v));
      Store(out + rr * ldo + kW * v, acc[rr][v]);
    }
  }
}

// Every column tile of one [RT, b] x [b, b] block product; the last tile overlaps the one
// before when b is not a multiple of the tile width (same sums, so the same values). M is
// float (y = x R) or fp16 bits with kAddX (y = x + x D).
template <int RT, typename M, bool kAddX>
OFT_INLINE void RotateBlock(const float* x, int64_t ldx, const M* m, int64_t b, float* y,
                            int64_t ldy) {
  constexpr int64_t kWide = kW * kRotVecs;
  int64_t j = 0;
  for (; j + kWide <= b; j += kWide) {
    Tile<RT, kRotVecs, M, kAddX>(x, ldx, 1, m + j, b, b, y + j, ldy, 0, false, x + j);
  }
  for (; j + kW <= b; j += kW) {
    Tile<RT, 1, M, kAddX>(x, ldx, 1, m + j, b, b, y + j, ldy, 0, false, x + j);
  }
  if (j < b) {
    Tile<RT, 1, M, kAddX>(x, ldx, 1, m + b - kW, b, b, y + b - kW, ldy, 0, false, x + b - kW);
  }
}

// On the generic path the fp16 conversion leaves too few registers for a block's tiles to
// share them with the loops around them (their invariants were reloaded from the stack in
// the innermost loop): there each block is its own call.
template <int RT, typename M, bool kAddX>
__attribute__((noinline)) void RotateBlockOutlined(const float* x, int64_t ldx, const M* m,
                                                   int64_t b, float* y, int64_t ldy) {
  RotateBlock<RT, M, kAddX>(x, ldx, m, b, y, ldy);
}

template <int RT, typename M, bool kAddX>
OFT_INLINE void Block(const float* x, int64_t ldx, const M* m, int64_t b, float* y, int64_t ldy) {
#if defined(OFT_TILES_GENERIC)
  if constexpr (sizeof(M) == 2) return RotateBlockOutlined<RT, M, kAddX>(x, ldx, m, b, y, ldy);
#endif
  RotateBlock<RT, M, kAddX>(x, ldx, m, b, y, ldy);
}

template <int RT, typename M, bool kAddX>
OFT_INLINE void RotateTokens(const float* x, int64_t ldx, const M* rot, bool shared, int64_t r,
                             int64_t b, float* y, int64_t ldy) {
  for (int64_t i = 0; i < r; ++i) {
    Block<RT, M, kAddX>(x + i * b, ldx, rot + (shared ? 0 : i) * b * b, b, y + i * b, ldy);
  }
}

// Tokens per register tile: kRotRows for R in fp32, kDeltaRows for the served fp16 form.
template <typename M>
constexpr int kTileRows = kDeltaRows;
template <>
constexpr int kTileRows<float> = kRotRows;

// The last n % kTileRows tokens: a 4-token tile then one of 3, 2 or 1 (fewer row pointers
// than one tile per count, which keeps the AVX-512 tail loops free of stack reloads); only
// the tiles shorter than a full one are compiled.
template <typename M, bool kAddX>
__attribute__((noinline)) void RotateTail(int64_t rem, const float* x, int64_t ldx, const M* rot,
                                          bool shared, int64_t r, int64_t b, float* y, int64_t ldy) {
  constexpr int kFull = kTileRows<M>;
  if constexpr (kFull > 4) {
    if (rem >= 4) {
      RotateTokens<4, M, kAddX>(x, ldx, rot, shared, r, b, y, ldy);
      x += 4 * ldx, y += 4 * ldy, rem -= 4;
    }
  }
  if constexpr (kFull > 3) {
    if (rem == 3) RotateTokens<3, M, kAddX>(x, ldx, rot, shared, r, b, y, ldy);
  }
  if constexpr (kFull > 2) {
    if (rem == 2) RotateTokens<2, M, kAddX>(x, ldx, rot, shared, r, b, y, ldy);
  }
  if (rem == 1) RotateTokens<1, M, kAddX>(x, ldx, rot, shared, r, b, y, ldy);
}

// Loop order (measured, docs/benchmarks.md): a panel of tokens at a time; within it the
// blocks in groups whose rotations fit in L2 (per-block R is r * b * b floats, often larger);
// within a group, one register tile of tokens walks the group's blocks left to right, so
// every x and y row is read and written as one sequential stream. (Walking one block's
// column down the tokens instead strides by d floats -- a power of two -- and thrashes the
// few cache sets those addresses map to.)
constexpr int64_t kGroupFloats = 64 * 1024;  // 256 KiB of fp32 rotations per block group

template <typename M, bool kAddX>
void RotateRowsOf(const float* x, int64_t ldx, const M* rot, bool shared, int64_t n, int64_t r,
                  int64_t b, float* y, int64_t ldy) {
  constexpr int kRows = kTileRows<M>;
  constexpr int64_t kPanelTokens = 16 * kRows;
  const int64_t full = n - n % kRows;
  const int64_t group = shared ? r : (b * b >= kGroupFloats ? 1 : kGroupFloats / (b * b));
  for (int64_t t = 0; t < full; t += kPanelTokens) {
    const int64_t end = Min(full, t + kPanelTokens);
    for (int64_t i0 = 0; i0 < r; i0 += group) {
      const int64_t i1 = Min(r, i0 + group);
      for (int64_t u = t; u < end; u += kRows) {
        for (int64_t i = i0; i < i1; ++i) {
          Block<kRows, M, kAddX>(x + u * ldx + i * b, ldx, rot + (shared ? 0 : i) * b * b, b,
                                 y + u * ldy + i * b, ldy);
        }
      }
    }
  }
  if (full < n) {
    RotateTail<M, kAddX>(n - full, x + full * ldx, ldx, rot, shared, r, b, y + full * ldy, ldy);
  }
}

void RotateRows(const float* x, int64_t ldx, const float* rot, bool shared, int64_t n, int64_t r,
                int64_t b, float* y, int64_t ldy) {
  RotateRowsOf<float, false>(x, ldx, rot, shared, n, r, b, y, ldy);
}

void RotateRowsDeltaHalf(const float* x, int64_t ldx, const uint16_t* delta, bool shared,
                         int64_t n, int64_t r, int64_t b, float* y, int64_t ldy) {
  RotateRowsOf<uint16_t, true>(x, ldx, delta, shared, n, r, b, y, ldy);
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
  static const Kernels k{&RotateRows, &RotateRowsDeltaHalf, &Gram, kW, kGramRows, kRotRows,
                         static_cast<Isa>(2), /*gram_direct_block=*/32};  // Isa::kAvx512
  return k;
}
#elif defined(OFT_TILES_AVX2)
const Kernels& Avx2Kernels() {
  static const Kernels k{&RotateRows, &RotateRowsDeltaHalf, &Gram, kW, kGramRows, kRotRows,
                         static_cast<Isa>(1), /*gram_direct_block=*/0};  // Isa::kAvx2
  return k;
}
#else
const Kernels& GenericKernels() {
  static const Kernels k{&RotateRows, &RotateRowsDeltaHalf, &Gram, kW, kGramRows, kRotRows,
                         static_cast<Isa>(0), /*gram_direct_block=*/0};  // Isa::kGeneric
  return k;
}
#endif

}  // namespace oft::cpu::internal
