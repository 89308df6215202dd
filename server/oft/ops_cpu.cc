#include "server/oft/ops_cpu.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Dispatch.h"
#include "ATen/OpMathType.h"
#include "ATen/Parallel.h"
#include "server/oft/ops.h"
#include "server/oft/ops_reference.h"

// The 64-byte vector type below is only passed between always-inline helpers.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace oft::cpu {
namespace {

// out[:, block i] = a[:, block i] @ m_i for every block, with m_i = mats[i] (or mats[0]).
void PerBlockMatmul(at::Tensor& out, const at::Tensor& a, const at::Tensor& mats, int64_t r, int64_t b,
                    bool transpose_mats) {
  const bool shared = mats.size(0) == 1;
  for (int64_t i = 0; i < r; ++i) {
    at::Tensor dst = out.narrow(1, i * b, b);  // [T, b], row stride d: BLAS writes in place
    const at::Tensor m = mats[shared ? 0 : i];
    at::mm_out(dst, a.narrow(1, i * b, b), transpose_mats ? m.t() : m);
  }
}

// y[0:d] = x[0:d] rotated block-wise by rot ([rows, b, b], acc_t, rows == r or 1): the
// generic per-token loop (fp64, and blocks narrower than one vector).
template <typename scalar_t, typename acc_t>
void RotateOneRow(const scalar_t* x, const acc_t* rot, bool shared, int64_t r, int64_t b,
                  scalar_t* y, acc_t* buf) {
  for (int64_t i = 0; i < r; ++i) {
    const acc_t* m = rot + (shared ? 0 : i) * b * b;
    const scalar_t* xi = x + i * b;
    std::fill(buf, buf + b, acc_t(0));
    for (int64_t k = 0; k < b; ++k) {
      const acc_t xv = static_cast<acc_t>(xi[k]);
      const acc_t* mk = m + k * b;
      for (int64_t j = 0; j < b; ++j) buf[j] += xv * mk[j];
    }
    for (int64_t j = 0; j < b; ++j) y[i * b + j] = static_cast<scalar_t>(buf[j]);
  }
}

// ---------------------------------------------------------------------------------------
// The fp32 block-rotation kernel. At the block sizes OFT uses (16-64) one block's GEMM is
// too small for BLAS to reach its peak (its packing and threading overheads dominate), so
// this kernel computes tiles of kTileRows tokens x 16 or 32 output columns in registers:
// per k it loads one row of the block and broadcasts one input value per token. GCC
// vector extensions map the 16-float vectors onto whatever the clone targets (one zmm,
// two ymm, four xmm). A column tail narrower than 16 is computed by an overlapping last
// tile (columns b-16 .. b-1), so any b >= 16 runs vectorized. Every output element is
// the same k-ordered sum whatever tile computes it (and one clone serves every call on a
// given machine), so a token's result never depends on its neighbours in the batch.
typedef float F32x16 __attribute__((vector_size(64)));
constexpr int64_t kVec = 16;
constexpr int kTileRows = 4;

__attribute__((always_inline)) inline F32x16 LoadVec(const float* p) {
  F32x16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
__attribute__((always_inline)) inline void StoreVec(float* p, F32x16 v) {
  std::memcpy(p, &v, sizeof(v));
}

// The register tile both kernels below are made of: out[rr, 16v + l] = sum over s < n of
// a[rr * a_row + s * a_step] * b[s * b_step + 16v + l] for rr < RT, v < NV; output rows
// [first, RT) are stored (row stride ldo).
template <int RT, int NV>
__attribute__((always_inline)) inline void MicroTile(const float* a, int64_t a_row, int64_t a_step,
                                                     const float* b, int64_t b_step, int64_t n,
                                                     float* out, int64_t ldo, int first = 0) {
  F32x16 acc[RT][NV] = {};
  for (int64_t s = 0; s < n; ++s) {
    F32x16 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = LoadVec(b + s * b_step + kVec * v);
#pragma GCC unroll 8
    for (int rr = 0; rr < RT; ++rr) {
      const float av = a[rr * a_row + s * a_step];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[rr][v] += av * bv[v];
    }
  }
#pragma GCC unroll 8
  for (int rr = first; rr < RT; ++rr) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) StoreVec(out + rr * ldo + kVec * v, acc[rr][v]);
  }
}

// y[rr, 16v + l] = sum_k x[rr, k] m[k, 16v + l] for rr < RT, v < NV (m has row stride b).
template <int RT, int NV>
__attribute__((always_inline)) inline void RotateTile(const float* x, int64_t ldx, const float* m,
                                                      int64_t b, float* y, int64_t ldy) {
  MicroTile<RT, NV>(x, ldx, 1, m, b, b, y, ldy);
}

template <int RT>
__attribute__((always_inline)) inline void RotateTileRows(const float* x, int64_t ldx,
                                                          const float* rot, bool shared, int64_t r,
                                                          int64_t b, float* y, int64_t ldy) {
  for (int64_t i = 0; i < r; ++i) {
    const float* m = rot + (shared ? 0 : i) * b * b;
    const float* xi = x + i * b;
    float* yi = y + i * b;
    int64_t j = 0;
    for (; j + 2 * kVec <= b; j += 2 * kVec) RotateTile<RT, 2>(xi, ldx, m + j, b, yi + j, ldy);
    if (j + kVec <= b) {
      RotateTile<RT, 1>(xi, ldx, m + j, b, yi + j, ldy);
      j += kVec;
    }
    if (j < b) RotateTile<RT, 1>(xi, ldx, m + b - kVec, b, yi + b - kVec, ldy);
  }
}

// Rows [0, n) of x ([n, r*b], row stride ldx) rotated into y (row stride ldy). b >= 16.
__attribute__((target_clones("avx512f", "avx2", "default")))
void RotateRowsF32(const float* x, int64_t ldx, const float* rot, bool shared, int64_t n,
                   int64_t r, int64_t b, float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + kTileRows <= n; t += kTileRows) {
    RotateTileRows<kTileRows>(x + t * ldx, ldx, rot, shared, r, b, y + t * ldy, ldy);
  }
  for (; t < n; ++t) RotateTileRows<1>(x + t * ldx, ldx, rot, shared, r, b, y + t * ldy, ldy);
}

bool UseRotateKernel(at::ScalarType acc, int64_t b) { return acc == at::kFloat && b >= kVec; }

// The rotation gradient dR_i = X_i^T G_i (X_i, G_i: block i's [tokens, b] columns), tiled
// like RotateTile: kGramRows rows of dR_i x 16 or 32 columns in registers, summed over
// tokens. Rows [first, RT) of the tile are stored (an overlapping last row tile stores only
// the rows the previous tile did not).
constexpr int kGramRows = 8;

template <int RT, int NV>
__attribute__((always_inline)) inline void GramTile(const float* x, const float* g, int64_t ld,
                                                    int64_t n, float* out, int64_t ldo,
                                                    int first) {
  MicroTile<RT, NV>(x, 1, ld, g, ld, n, out, ldo, first);
}

// Rows [k0, k0 + 8) of sum over blocks i in [i0, i1) of X_i^T G_i into out ([b, b]); x, g:
// [n, d] with d = r * b, b >= 16. A row range past b is shifted back to end at b.
__attribute__((target_clones("avx512f", "avx2", "default")))
void GramRowsF32(const float* x, const float* g, int64_t n, int64_t d, int64_t b, int64_t i0,
                 int64_t i1, int64_t k0, float* out) {
  const int64_t start = std::min(k0, b - kGramRows);
  const int first = static_cast<int>(k0 - start);
  float* o = out + start * b;
  std::vector<float> part;
  if (i1 - i0 > 1) part.assign(kGramRows * b, 0.0f);
  for (int64_t i = i0; i < i1; ++i) {
    const float* xi = x + i * b + start;
    const float* gi = g + i * b;
    float* dst = i1 - i0 > 1 ? part.data() : o;
    int64_t j = 0;
    for (; j + 2 * kVec <= b; j += 2 * kVec) GramTile<kGramRows, 2>(xi, gi + j, d, n, dst + j, b, first);
    if (j + kVec <= b) {
      GramTile<kGramRows, 1>(xi, gi + j, d, n, dst + j, b, first);
      j += kVec;
    }
    if (j < b) GramTile<kGramRows, 1>(xi, gi + b - kVec, d, n, dst + b - kVec, b, first);
    if (i1 - i0 > 1) {
      for (int64_t e = first * b; e < kGramRows * b; ++e) o[e] += part[e];
    }
  }
}

// dR ([r, b, b], or [1, b, b] summed over blocks when shared) from fp32 x, g ([n, d]).
at::Tensor BlockGramParallel(const at::Tensor& x, const at::Tensor& g, int64_t b, bool shared) {
  const int64_t n = x.size(0), d = x.size(1), r = d / b;
  const int64_t rows = shared ? 1 : r;
  at::Tensor out = at::zeros({rows, b, b}, x.options());
  const float* xp = x.const_data_ptr<float>();
  const float* gp = g.const_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  const int64_t chunks = (b + kGramRows - 1) / kGramRows;
  at::parallel_for(0, rows * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task / chunks, k0 = (task % chunks) * kGramRows;
      const int64_t i0 = shared ? 0 : blk, i1 = shared ? r : blk + 1;
      GramRowsF32(xp, gp, n, d, b, i0, i1, k0, op + blk * b * b);
    }
  });
  return out;
}

// y = x rotated block-wise by rot ([rows, b, b]); x, y: contiguous fp32 [n, d]; threads
// split the tokens.
void RotateRowsParallel(const at::Tensor& x, const at::Tensor& rot, at::Tensor& y) {
  const int64_t n = x.size(0), d = x.size(1), b = rot.size(1);
  const float* xp = x.const_data_ptr<float>();
  const float* rp = rot.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  const bool shared = rot.size(0) == 1;
  const int64_t grain = std::max<int64_t>(kTileRows, (int64_t{1} << 17) / (d * b));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    RotateRowsF32(xp + begin * d, d, rp, shared, end - begin, d / b, b, yp + begin * d, d);
  });
}

// out = a rotated block-wise by mats (or by their transposes): the fast kernel for fp32,
// per-block strided GEMMs otherwise.
void RotateBlocks(at::Tensor& out, const at::Tensor& a, const at::Tensor& mats, int64_t r,
                  int64_t b, bool transpose_mats) {
  if (UseRotateKernel(a.scalar_type(), b)) {
    RotateRowsParallel(a, transpose_mats ? mats.transpose(1, 2).contiguous() : mats, out);
  } else {
    PerBlockMatmul(out, a, mats, r, b, transpose_mats);
  }
}


// ---------------------------------------------------------------------------------------
// Cayley-Neumann blocks, fused per block. Each block is a handful of b x b products; as
// ATen ops (index_put, eye, baddbmm per term, and as many again in backward) the per-op
// overhead costs more than the arithmetic, for every adapted Linear at every step. Here one
// task builds one block from its packed row in scratch memory.
//
// Horner: R = H_0 with H_m = c_m I, H_k = c_k I + Q H_{k+1}. Backward: dQ = sum_k G_k H_{k+1}^T
// with G_0 = dR, G_{k+1} = Q^T G_k = -Q G_k; d(packed) = upper(dQ - dQ^T).

// c = a b (n x n, row-major). In fp32 with n >= 16 this is the rotation kernel applied to
// the n rows of a with the single block b; otherwise rows are streamed so the inner loop
// vectorizes.
template <typename T>
void SmallMatMul(const T* a, const T* b, T* c, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (n >= kVec) return RotateRowsF32(a, n, b, /*shared=*/true, n, /*r=*/1, n, c, n);
  }
  for (int64_t i = 0; i < n; ++i) {
    T* ci = c + i * n;
    std::fill(ci, ci + n, T(0));
    for (int64_t k = 0; k < n; ++k) {
      const T aik = a[i * n + k];
      const T* bk = b + k * n;
      for (int64_t j = 0; j < n; ++j) ci[j] += aik * bk[j];
    }
  }
}

template <typename T>
void SkewBlock(const T* packed, int64_t n, T* q) {
  int64_t p = 0;
  for (int64_t i = 0; i < n; ++i) {
    q[i * n + i] = T(0);
    for (int64_t j = i + 1; j < n; ++j, ++p) {
      q[i * n + j] = packed[p];
      q[j * n + i] = -packed[p];
    }
  }
}

// h[k - lowest] = H_k for k = lowest .. m (each n x n).
template <typename T>
void HornerBlock(const T* q, const std::vector<double>& c, int64_t n, size_t lowest,
                 std::vector<T>& h) {
  const size_t m = c.size() - 1, nn = static_cast<size_t>(n * n);
  h.assign((m + 1 - lowest) * nn, T(0));
  T* top = h.data() + (m - lowest) * nn;
  for (int64_t i = 0; i < n; ++i) top[i * n + i] = static_cast<T>(c[m]);
  for (size_t k = m; k-- > lowest;) {
    T* hk = h.data() + (k - lowest) * nn;
    SmallMatMul(q, hk + nn, hk, n);
    for (int64_t i = 0; i < n; ++i) hk[i * n + i] += static_cast<T>(c[k]);
  }
}

template <typename T>
void BuildRotationBlocks(const T* packed, int64_t rows, int64_t n, const std::vector<double>& c,
                         T* out) {
  const int64_t plen = n * (n - 1) / 2;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> q(n * n), h;
    for (int64_t blk = begin; blk < end; ++blk) {
      SkewBlock(packed + blk * plen, n, q.data());
      HornerBlock(q.data(), c, n, 0, h);
      std::copy(h.begin(), h.begin() + n * n, out + blk * n * n);
    }
  });
}

template <typename T>
void BuildRotationBlocksBackward(const T* grad, const T* packed, int64_t rows, int64_t n,
                                 const std::vector<double>& c, T* out) {
  const int64_t plen = n * (n - 1) / 2, nn = n * n;
  const size_t m = c.size() - 1;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> q(nn), h, gk(nn), next(nn), ht(nn), gq(nn), tmp(nn);
    for (int64_t blk = begin; blk < end; ++blk) {
      SkewBlock(packed + blk * plen, n, q.data());
      HornerBlock(q.data(), c, n, 1, h);  // h[k - 1] = H_k
      std::copy(grad + blk * nn, grad + (blk + 1) * nn, gk.begin());
      std::fill(gq.begin(), gq.end(), T(0));
      for (size_t k = 0; k < m; ++k) {
        if (k > 0) {  // G_k = -Q G_{k-1}
          SmallMatMul(q.data(), gk.data(), next.data(), n);
          for (int64_t e = 0; e < nn; ++e) gk[e] = -next[e];
        }
        const T* hk1 = h.data() + k * nn;  // H_{k+1}
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < n; ++j) ht[i * n + j] = hk1[j * n + i];
        }
        SmallMatMul(gk.data(), ht.data(), tmp.data(), n);
        for (int64_t e = 0; e < nn; ++e) gq[e] += tmp[e];
      }
      T* o = out + blk * plen;
      int64_t p = 0;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = i + 1; j < n; ++j, ++p) o[p] = gq[i * n + j] - gq[j * n + i];
      }
    }
  });
}

bool UseFusedBuild(const at::Tensor& packed) {
  return packed.device().is_cpu() &&
         (packed.scalar_type() == at::kFloat || packed.scalar_type() == at::kDouble);
}

}  // namespace

at::Tensor GatheredBlockRotateForward(const at::Tensor& x, const at::Tensor& rotations,
                                      const at::Tensor& index) {
  const int64_t r = reference::CheckGatheredBlockRotateArgs(x, rotations, index);
  const int64_t n = x.size(0), d = x.size(1), a_count = rotations.size(0);
  const int64_t rows = rotations.size(1), b = rotations.size(2);
  const auto acc = reference::AccumulationType(x.scalar_type());
  const at::Tensor xc = x.contiguous();                     // [N, d]
  const at::Tensor rot = rotations.to(acc).contiguous();    // [A, rows, b, b]
  const at::Tensor idx = index.contiguous();                // [N]
  at::Tensor y = at::empty_like(xc);                        // [N, d]
  const int64_t* ip = idx.const_data_ptr<int64_t>();
  for (int64_t t = 0; t < n; ++t) {
    TORCH_CHECK(ip[t] >= -1 && ip[t] < a_count, "gathered_block_rotate: index[", t, "] = ", ip[t],
                " is outside [-1, ", a_count, ")");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                  "gathered_block_rotate", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const acc_t* rp = rot.const_data_ptr<acc_t>();
    std::vector<acc_t> buf(b);
    const bool fast = std::is_same_v<scalar_t, float> && UseRotateKernel(acc, b);
    int64_t start = 0;
    while (start < n) {
      const int64_t a = ip[start];
      int64_t end = start + 1;
      while (end < n && ip[end] == a) ++end;
      const int64_t len = end - start;
      if (a < 0) {
        std::copy(xp + start * d, xp + end * d, yp + start * d);
      } else if (fast) {
        RotateRowsF32(reinterpret_cast<const float*>(xp) + start * d, d,
                      reinterpret_cast<const float*>(rp) + a * rows * b * b, rows == 1, len, r, b,
                      reinterpret_cast<float*>(yp) + start * d, d);
      } else if (len >= kGatheredBlasRun) {
        y.narrow(0, start, len).copy_(BlockRotateForward(xc.narrow(0, start, len), rot[a]));
      } else {
        const acc_t* ra = rp + a * rows * b * b;
        for (int64_t t = start; t < end; ++t) {
          RotateOneRow(xp + t * d, ra, rows == 1, r, b, yp + t * d, buf.data());
        }
      }
      start = end;
    }
  });
  return y;
}

at::Tensor BuildRotationForward(const at::Tensor& packed, int64_t b, int64_t num_terms,
                                bool use_cayley_neumann) {
  if (!use_cayley_neumann) {
    return reference::BuildRotationForward(packed, b, num_terms, use_cayley_neumann);
  }
  reference::CheckBuildRotationArgs(packed, b, num_terms);
  const auto c = internal::NeumannCoefficients(num_terms);
  const at::Tensor p = UseFusedBuild(packed) ? packed.contiguous() : packed.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({p.size(0), b, b}, p.options());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "build_rotation", [&] {
    BuildRotationBlocks(p.const_data_ptr<scalar_t>(), p.size(0), b, c,
                        out.mutable_data_ptr<scalar_t>());
  });
  return out.to(packed.scalar_type());
}

at::Tensor BuildRotationBackward(const at::Tensor& grad, const at::Tensor& packed,
                                 const at::Tensor& rotation, int64_t b, int64_t num_terms,
                                 bool use_cayley_neumann) {
  if (!use_cayley_neumann) {
    return reference::BuildRotationBackward(grad, packed, rotation, b, num_terms, false);
  }
  reference::CheckBuildRotationArgs(packed, b, num_terms);
  const auto c = internal::NeumannCoefficients(num_terms);
  if (c.size() == 1) return at::zeros_like(packed);
  const at::ScalarType work = UseFusedBuild(packed) ? packed.scalar_type() : at::kFloat;
  const at::Tensor p = packed.to(work).contiguous();
  const at::Tensor g = grad.to(work).contiguous();
  at::Tensor out = at::empty_like(p);
  AT_DISPATCH_FLOATING_TYPES(work, "build_rotation_backward", [&] {
    BuildRotationBlocksBackward(g.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(),
                                p.size(0), b, c, out.mutable_data_ptr<scalar_t>());
  });
  return out.to(packed.scalar_type());
}

at::Tensor BlockRotateForward(const at::Tensor& x, const at::Tensor& rotation) {
  const int64_t r = reference::CheckBlockRotateArgs(x, rotation);
  const int64_t d = x.size(-1), b = rotation.size(1);
  const auto acc = reference::AccumulationType(x.scalar_type());
  const auto xf = x.reshape({-1, d}).to(acc).contiguous();
  const auto rf = rotation.to(acc).contiguous();
  auto y = at::empty({xf.size(0), d}, xf.options());
  RotateBlocks(y, xf, rf, r, b, /*transpose_mats=*/false);
  return y.view(x.sizes()).to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> BlockRotateBackward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& rotation, bool need_x,
                                                       bool need_rotation) {
  const int64_t r = reference::CheckBlockRotateArgs(x, rotation);
  const int64_t d = x.size(-1), b = rotation.size(1);
  const auto acc = reference::AccumulationType(x.scalar_type());
  const auto gf = grad.reshape({-1, d}).to(acc).contiguous();
  const int64_t t = gf.size(0);
  at::Tensor gx, gr;
  if (need_x) {
    gx = at::empty({t, d}, gf.options());
    RotateBlocks(gx, gf, rotation.to(acc).contiguous(), r, b, /*transpose_mats=*/true);
    gx = gx.view(x.sizes()).to(x.scalar_type());
  }
  if (need_rotation) {
    const auto xf = x.reshape({-1, d}).to(acc).contiguous();
    if (UseRotateKernel(acc, b)) {
      gr = BlockGramParallel(xf, gf, b, rotation.size(0) == 1);
    } else if (rotation.size(0) == 1) {
      gr = xf.view({t * r, b}).t().mm(gf.view({t * r, b})).unsqueeze(0);
    } else {
      // One batched GEMM over strided views: [r, b, T] x [r, T, b].
      gr = at::bmm(xf.view({t, r, b}).permute({1, 2, 0}), gf.view({t, r, b}).transpose(0, 1));
    }
    gr = gr.to(rotation.scalar_type());
  }
  return {gx, gr};
}

}  // namespace oft::cpu
