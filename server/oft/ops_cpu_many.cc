// One input, several rotations, one pass over the tokens (ops_cpu.h: BlockRotateMany*).
//
// Forward: each chunk of kChunk tokens is read once and rotated by every rotation while it
// is in cache (separately, q/k/v would each stream x from memory).
// Backward: each thread owns a contiguous range of blocks and walks the tokens in chunks.
// Per chunk it computes the input gradient sum_j g_j R_j^T for its blocks (the first term
// written, the others rotated into a scratch tile and added) and accumulates every
// dR_j[i] = X_i^T G_j,i with x's block columns packed once for all j. Separately, every
// Linear ran an input-gradient kernel and a rotation-gradient kernel (each streaming its
// g), and autograd added the m input gradients with m - 1 full-size additions.
//
// Values: every y_j row and every g_j R_j^T row is the same tiled rotation as
// BlockRotateForward's, so the forward is bit-identical to separate calls. Each dR_j[i] is
// one sum over the tokens in order (where b is not a multiple of the vector width, the
// block's last, overlapping column tile adds its partial sum per chunk). None of it depends
// on the thread count, because threads split blocks, never the tokens of one sum.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "server/oft/ops_cpu.h"
#include "server/oft/ops_cpu_kernels.h"

namespace oft::cpu {
namespace {

using internal::ActiveKernels;
using internal::Kernels;

// Tokens per chunk: a multiple of every path's rotation tile (8, 6 and 4 tokens).
constexpr int64_t kChunk = 96;

const float* F32(const at::Tensor& t) { return t.const_data_ptr<float>(); }

}  // namespace

bool BlockRotateManyApplies(const at::Tensor& x, at::TensorList rotations) {
  if (rotations.empty() || !x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() < 1) {
    return false;
  }
  const int64_t d = x.size(-1);
  const Kernels& k = ActiveKernels();
  for (const at::Tensor& r : rotations) {
    if (!r.device().is_cpu() || r.scalar_type() != at::kFloat || r.dim() != 3) return false;
    const int64_t rows = r.size(0), b = r.size(1);
    if (r.size(2) != b || b < k.min_block || rows * b != d || rows == 1) return false;
    if (b != rotations[0].size(1)) return false;
  }
  // Threads split the blocks: with fewer blocks than threads, the separate kernels (which
  // also split the tokens) keep every core busy.
  return d / rotations[0].size(1) >= at::get_num_threads();
}

std::vector<at::Tensor> BlockRotateManyForward(const at::Tensor& x, at::TensorList rotations) {
  TORCH_CHECK(BlockRotateManyApplies(x, rotations),
              "block_rotate_many: needs fp32 CPU x and per-block fp32 rotations of one size");
  const int64_t d = x.size(-1), b = rotations[0].size(1), r = d / b;
  const at::Tensor xf = x.reshape({-1, d}).contiguous();
  const int64_t n = xf.size(0), m = static_cast<int64_t>(rotations.size());
  std::vector<at::Tensor> rots, ys;
  for (const at::Tensor& rot : rotations) {
    rots.push_back(rot.contiguous());
    ys.push_back(at::empty({n, d}, xf.options()));
  }
  const Kernels& k = ActiveKernels();
  at::parallel_for(0, (n + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t t0 = c * kChunk, len = std::min(kChunk, n - t0);
      for (int64_t j = 0; j < m; ++j) {
        k.rotate(F32(xf) + t0 * d, d, F32(rots[j]), /*shared=*/false, len, r, b,
                 ys[j].mutable_data_ptr<float>() + t0 * d, d);
      }
    }
  });
  for (at::Tensor& y : ys) y = y.view(x.sizes());
  return ys;
}

std::tuple<at::Tensor, std::vector<at::Tensor>> BlockRotateManyBackward(
    at::TensorList grads, const at::Tensor& x, at::TensorList rotations, bool need_x,
    const std::vector<bool>& need_rotation) {
  TORCH_CHECK(BlockRotateManyApplies(x, rotations),
              "block_rotate_many_backward: needs fp32 CPU x and per-block fp32 rotations");
  const int64_t m = static_cast<int64_t>(rotations.size());
  TORCH_CHECK(static_cast<int64_t>(grads.size()) == m &&
                  static_cast<int64_t>(need_rotation.size()) == m,
              "block_rotate_many_backward: ", m, " rotations but ", grads.size(), " gradients");
  const int64_t d = x.size(-1), b = rotations[0].size(1), r = d / b;
  const at::Tensor xf = x.reshape({-1, d}).contiguous();
  const int64_t n = xf.size(0);
  // Only the defined gradients contribute (an unused output has none).
  std::vector<at::Tensor> g, rot_t;
  std::vector<int64_t> which;
  std::vector<at::Tensor> gr(m);
  for (int64_t j = 0; j < m; ++j) {
    if (need_rotation[j]) gr[j] = at::zeros({r, b, b}, xf.options());
    if (!grads[j].defined()) continue;
    TORCH_CHECK(grads[j].numel() == n * d, "block_rotate_many_backward: gradient ", j,
                " has ", grads[j].numel(), " elements, expected ", n * d);
    which.push_back(j);
    g.push_back(grads[j].reshape({n, d}).to(at::kFloat).contiguous());
    rot_t.push_back(rotations[j].transpose(1, 2).contiguous());
  }
  at::Tensor gx;
  if (need_x) gx = g.empty() ? at::zeros({n, d}, xf.options()) : at::empty({n, d}, xf.options());
  const Kernels& k = ActiveKernels();
  const bool direct = b == k.gram_direct_block;
  const int64_t parts = std::min<int64_t>(at::get_num_threads(), r);
  const int64_t terms = static_cast<int64_t>(g.size());
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> px, pg, tmp;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t i0 = r * p / parts, i1 = r * (p + 1) / parts, w = (i1 - i0) * b;
      px.resize(kChunk * b), pg.resize(kChunk * b), tmp.resize(kChunk * w);
      for (int64_t t0 = 0; t0 < n && terms > 0; t0 += kChunk) {
        const int64_t len = std::min(kChunk, n - t0), off = t0 * d + i0 * b;
        if (need_x) {
          float* gxp = gx.mutable_data_ptr<float>() + off;
          for (int64_t e = 0; e < terms; ++e) {
            const float* gp = F32(g[e]) + off;
            const float* tp = F32(rot_t[e]) + i0 * b * b;
            if (e == 0) {
              k.rotate(gp, d, tp, /*shared=*/false, len, i1 - i0, b, gxp, d);
              continue;
            }
            k.rotate(gp, d, tp, /*shared=*/false, len, i1 - i0, b, tmp.data(), w);
            for (int64_t t = 0; t < len; ++t) {
              float* dst = gxp + t * d;
              const float* src = tmp.data() + t * w;
              for (int64_t c = 0; c < w; ++c) dst[c] += src[c];
            }
          }
        }
        for (int64_t i = i0; i < i1; ++i) {
          const float* xs = F32(xf) + t0 * d + i * b;
          if (!direct) {  // rows d floats apart thrash a few cache sets: pack them (ops_cpu.cc)
            for (int64_t t = 0; t < len; ++t) {
              std::memcpy(px.data() + t * b, xs + t * d, sizeof(float) * b);
            }
          }
          for (int64_t e = 0; e < terms; ++e) {
            if (!need_rotation[which[e]]) continue;
            float* dst = gr[which[e]].mutable_data_ptr<float>() + i * b * b;
            const float* gs = F32(g[e]) + t0 * d + i * b;
            if (direct) {
              k.gram(xs, gs, len, d, b, dst, /*accumulate=*/t0 > 0);
              continue;
            }
            for (int64_t t = 0; t < len; ++t) {
              std::memcpy(pg.data() + t * b, gs + t * d, sizeof(float) * b);
            }
            k.gram(px.data(), pg.data(), len, b, b, dst, /*accumulate=*/t0 > 0);
          }
        }
      }
    }
  });
  if (gx.defined()) gx = gx.view(x.sizes());  // x is fp32 (BlockRotateManyApplies)
  return {gx, gr};
}

}  // namespace oft::cpu
