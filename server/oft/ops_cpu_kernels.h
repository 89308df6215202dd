// The fp32 register micro-kernels behind the oft:: CPU ops, one set per instruction-set path
// (server/oft/cpu_isa.h). Internal to server/oft: ops_cpu.cc picks a set with KernelsFor().
//
// Every set computes the same sums in the same order per output element (a k-ordered chain
// of multiply-adds from zero), so within one path a token's result never depends on how many
// tokens surround it or which tile computed it. Paths differ only in rounding: the AVX paths
// fuse multiply and add (FMA), the generic path rounds after each multiply.
//
// All pointers are to fp32; leading dimensions are in elements. None of the functions
// allocates, throws or starts threads: callers split work across threads.
#ifndef OFT_SERVER_OFT_OPS_CPU_KERNELS_H_
#define OFT_SERVER_OFT_OPS_CPU_KERNELS_H_

#include <cstdint>

// Deliberately not including cpu_isa.h: the per-ISA translation units that include this
// header are compiled with -mavx2 / -mavx512f, and must not emit inline library functions
// (std::string, absl) that the linker could then hand to code running on a CPU without them.
namespace oft::cpu {
enum class Isa;
}  // namespace oft::cpu

namespace oft::cpu::internal {

struct Kernels {
  // Block rotation of rows [0, n) of x ([n, r*b], row stride ldx) into y (row stride ldy):
  //   y[t, i*b + j] = sum_k x[t, i*b + k] * R_i[k, j],  R_i = rot + (shared ? 0 : i) * b * b.
  // Requires b >= min_block.
  void (*rotate)(const float* x, int64_t ldx, const float* rot, bool shared, int64_t n,
                      int64_t r, int64_t b, float* y, int64_t ldy);
  // The same with the served form of the blocks, D_i = R_i - I in IEEE fp16 (bits):
  //   y[t, i*b + j] = x[t, i*b + j] + sum_k x[t, i*b + k] * D_i[k, j]
  // (the sum as in `rotate`, then x added). y must not overlap x. Requires b >= min_block.
  void (*rotate_delta_half)(const float* x, int64_t ldx, const uint16_t* delta, bool shared,
                            int64_t n, int64_t r, int64_t b, float* y, int64_t ldy);
  // out (+)= x^T g for x, g: [n, b] with row stride ld; out: [b, b] (row stride b),
  // overwritten, or added to with `accumulate`. Fastest with ld == b (packed rows).
  // Requires b >= min_block and b >= gram_rows.
  void (*gram)(const float* x, const float* g, int64_t n, int64_t ld, int64_t b, float* out,
               bool accumulate);
  int64_t min_block;   // narrowest block the kernels take (one vector)
  int64_t gram_rows;   // rows of dR in one register tile of gram
  int64_t tile_rows;   // tokens per register tile of rotate (work-split granularity)
  Isa isa;
  // Per-block dR reads the strided rows of x and g in place (ld = d) when b equals this;
  // otherwise each block's columns are packed first (0: always pack). Measured per path.
  int64_t gram_direct_block;
};

// The kernels of `isa`; the generic set when this build has no kernels for it (non-x86).
const Kernels& KernelsFor(Isa isa);
// KernelsFor(ActiveIsa()).
const Kernels& ActiveKernels();

// Defined by the per-ISA translation units (ops_cpu_tiles.cc compiled once per path).
const Kernels& GenericKernels();
#if defined(__x86_64__)
const Kernels& Avx2Kernels();
const Kernels& Avx512Kernels();
#endif

}  // namespace oft::cpu::internal

#endif  // OFT_SERVER_OFT_OPS_CPU_KERNELS_H_
