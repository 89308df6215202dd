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
#include "server/oft/ops_cpu_kernels.h"
#include "server/oft/ops_reference.h"

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

// The fp32 kernels: register micro-tiles per instruction-set path (ops_cpu_kernels.h).
// At the block sizes OFT uses (16-64) one block's GEMM is too small for BLAS to reach its
// peak (packing and threading overheads dominate), so tiles of tokens x output columns are
// computed in registers over the natural [tokens, d] layout.
using internal::ActiveKernels;
using internal::Kernels;

bool UseRotateKernel(at::ScalarType acc, int64_t b) {
  return acc == at::kFloat && b >= ActiveKernels().min_block;
}

// dR ([r, b, b], or [1, b, b] summed over blocks when shared) from fp32 x, g ([n, d]).
// The kernel wants X_i and G_i with rows b floats apart: shared rotations view x as
// [n * r, b] as it is; per-block ones copy each block's columns in chunks of kGramChunk
// tokens into per-thread buffers (rows d floats apart -- a power of two -- would map to few
// cache sets and thrash them on every pass), except at the block size where the path's
// kernel measured faster reading them in place (Kernels::gram_direct_block). Both orders
// add the tokens in the same sequence, so the results are identical. When there are fewer output blocks than
// threads, tokens are split too and the partial sums added in a fixed order.
constexpr int64_t kGramChunk = 256;

at::Tensor BlockGramParallel(const at::Tensor& x, const at::Tensor& g, int64_t b, bool shared) {
  const int64_t n = x.size(0), d = x.size(1), r = d / b;
  const int64_t outs = shared ? 1 : r;
  const int64_t span = shared ? n * r : n;  // rows of X_i / G_i (shared: all blocks stacked)
  const int64_t threads = at::get_num_threads();
  const int64_t splits = std::clamp<int64_t>((threads + outs - 1) / outs, 1,
                                             std::max<int64_t>(1, span / kGramChunk));
  at::Tensor out = at::empty({outs, b, b}, x.options());
  at::Tensor part = splits > 1 ? at::empty({outs, splits, b, b}, x.options()) : out;
  const float* xp = x.const_data_ptr<float>();
  const float* gp = g.const_data_ptr<float>();
  float* pp = part.mutable_data_ptr<float>();
  const Kernels& k = ActiveKernels();
  at::parallel_for(0, outs * splits, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> px, pg;
    if (!shared) px.resize(kGramChunk * b), pg.resize(kGramChunk * b);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task / splits, s = task % splits;
      const int64_t t0 = span * s / splits, t1 = span * (s + 1) / splits;
      float* dst = pp + task * b * b;
      if (shared) {
        k.gram(xp + t0 * b, gp + t0 * b, t1 - t0, b, b, dst, false);
        continue;
      }
      if (b == k.gram_direct_block) {  // in place, rows d floats apart
        k.gram(xp + t0 * d + blk * b, gp + t0 * d + blk * b, t1 - t0, d, b, dst, false);
        continue;
      }
      for (int64_t c = t0; c < t1; c += kGramChunk) {
        const int64_t len = std::min(kGramChunk, t1 - c);
        for (int64_t t = 0; t < len; ++t) {  // memcpy: the C library's widest vector copy
          std::memcpy(px.data() + t * b, xp + (c + t) * d + blk * b, sizeof(float) * b);
          std::memcpy(pg.data() + t * b, gp + (c + t) * d + blk * b, sizeof(float) * b);
        }
        k.gram(px.data(), pg.data(), len, b, b, dst, /*accumulate=*/c > t0);
      }
    }
  });
  if (splits > 1) at::sum_out(out, part, {1});
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
  const Kernels& k = ActiveKernels();
  // At least ~128K multiply-adds per task, in whole register tiles.
  const int64_t grain = std::max<int64_t>(k.tile_rows, (int64_t{1} << 17) / (d * b));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    k.rotate(xp + begin * d, d, rp, shared, end - begin, d / b, b, yp + begin * d, d);
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
    const Kernels& k = ActiveKernels();
    if (n >= k.min_block) return k.rotate(a, n, b, /*shared=*/true, n, /*r=*/1, n, c, n);
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
    if (k + 1 == m) {
      // Q H_m = c_m Q: the product with a scaled identity, without the n^3 multiply (the
      // same values: every other term of each sum is a zero).
      const T cm = static_cast<T>(c[m]);
      for (size_t e = 0; e < nn; ++e) hk[e] = q[e] * cm;
    } else {
      SmallMatMul(q, hk + nn, hk, n);
    }
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
        if (k + 1 == m) {  // H_m = c_m I: G_k H_m^T = c_m G_k (no multiply)
          const T cm = static_cast<T>(c[m]);
          for (int64_t e = 0; e < nn; ++e) gq[e] += gk[e] * cm;
          continue;
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
                                      const at::Tensor& index, bool delta) {
  const int64_t r = reference::CheckGatheredBlockRotateArgs(x, rotations, index);
  const int64_t n = x.size(0), d = x.size(1), a_count = rotations.size(0);
  const int64_t rows = rotations.size(1), b = rotations.size(2);
  const auto acc = reference::AccumulationType(x.scalar_type());
  // fp16 D read by the kernel as it is; any other form becomes R in acc_t, one adapter's
  // blocks at a time (R = D + I), when a run of rows needs it.
  const bool half_delta = delta && rotations.scalar_type() == at::kHalf &&
                          x.scalar_type() == at::kFloat && UseRotateKernel(acc, b);
  const at::Tensor xc = x.contiguous();                     // [N, d]
  const at::Tensor rot =
      delta ? rotations.contiguous() : rotations.to(acc).contiguous();  // [A, rows, b, b]
  const at::Tensor eye =
      delta && !half_delta ? at::eye(b, rotations.options().dtype(acc)) : at::Tensor();
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
        start = end;
        continue;
      }
      const auto* xf = reinterpret_cast<const float*>(xp) + start * d;
      auto* yf = reinterpret_cast<float*>(yp) + start * d;
      if (half_delta) {
        const auto* dp = reinterpret_cast<const uint16_t*>(rot.const_data_ptr<at::Half>());
        ActiveKernels().rotate_delta_half(xf, d, dp + a * rows * b * b, rows == 1, len, r, b, yf,
                                          d);
        start = end;
        continue;
      }
      // This adapter's R ([rows, b, b], acc_t): a slice of rot, or formed from D.
      const at::Tensor ra = delta ? (rot[a].to(acc) + eye).contiguous() : at::Tensor();
      const acc_t* rp = delta ? ra.const_data_ptr<acc_t>()
                              : rot.const_data_ptr<acc_t>() + a * rows * b * b;
      if (fast) {
        ActiveKernels().rotate(xf, d, reinterpret_cast<const float*>(rp), rows == 1, len, r, b,
                               yf, d);
      } else if (len >= kGatheredBlasRun) {
        y.narrow(0, start, len).copy_(
            BlockRotateForward(xc.narrow(0, start, len), delta ? ra : rot[a]));
      } else {
        for (int64_t t = start; t < end; ++t) {
          RotateOneRow(xp + t * d, rp, rows == 1, r, b, yp + t * d, buf.data());
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
  const auto c = oft::internal::NeumannCoefficients(num_terms);
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
  const auto c = oft::internal::NeumannCoefficients(num_terms);
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
  if (need_x && need_rotation && BlockRotateManyApplies(x, {rotation})) {
    auto [many_gx, many_gr] = BlockRotateManyBackward({grad}, x, {rotation}, true, {true});
    return {many_gx, many_gr[0]};
  }
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
