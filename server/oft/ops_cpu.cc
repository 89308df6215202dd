#include "server/oft/ops_cpu.h"

#include <algorithm>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Dispatch.h"
#include "ATen/OpMathType.h"
#include "server/oft/ops.h"
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

// Horner terms H[k] = c_k I + Q H[k+1] for k = m-1 .. `lowest`, H[m] = c_m I (index = k).
std::vector<at::Tensor> HornerTerms(const at::Tensor& q, const std::vector<double>& c, size_t lowest) {
  const size_t m = c.size() - 1;
  const auto eye = at::eye(q.size(1), q.options()).expand_as(q);
  std::vector<at::Tensor> h(m + 1);
  h[m] = eye * c[m];
  for (size_t k = m; k-- > lowest;) h[k] = at::baddbmm(eye, q, h[k + 1], /*beta=*/c[k], /*alpha=*/1.0);
  return h;
}

// y[0:d] = x[0:d] rotated block-wise by rot ([rows, b, b], acc_t, rows == r or 1).
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

// The fp32 case of RotateOneRow, compiled for several instruction sets and picked at load
// time (the build targets baseline x86-64): per-row decode rotations in serving run here.
// For the common block sizes the accumulator is a fixed-size local array the compiler keeps
// in vector registers (through `buf` it would be stored and reloaded for every k).
template <int64_t B>
__attribute__((always_inline)) inline void RotateRowFixed(const float* x, const float* rot,
                                                          bool shared, int64_t r, float* y) {
  for (int64_t i = 0; i < r; ++i) {
    const float* m = rot + (shared ? 0 : i) * B * B;
    const float* xi = x + i * B;
    float acc[B] = {};
    for (int64_t k = 0; k < B; ++k) {
      const float xv = xi[k];
      const float* mk = m + k * B;
      for (int64_t j = 0; j < B; ++j) acc[j] += xv * mk[j];
    }
    for (int64_t j = 0; j < B; ++j) y[i * B + j] = acc[j];
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void RotateOneRowF32(const float* x, const float* rot, bool shared, int64_t r, int64_t b, float* y,
                     float* buf) {
  if (b == 16) return RotateRowFixed<16>(x, rot, shared, r, y);
  if (b == 32) return RotateRowFixed<32>(x, rot, shared, r, y);
  if (b == 64) return RotateRowFixed<64>(x, rot, shared, r, y);
  for (int64_t i = 0; i < r; ++i) {
    const float* m = rot + (shared ? 0 : i) * b * b;
    const float* xi = x + i * b;
    for (int64_t j = 0; j < b; ++j) buf[j] = 0.0f;
    for (int64_t k = 0; k < b; ++k) {
      const float xv = xi[k];
      const float* mk = m + k * b;
      for (int64_t j = 0; j < b; ++j) buf[j] += xv * mk[j];
    }
    for (int64_t j = 0; j < b; ++j) y[i * b + j] = buf[j];
  }
}

template <typename scalar_t, typename acc_t>
void RotateRow(const scalar_t* x, const acc_t* rot, bool shared, int64_t r, int64_t b,
               scalar_t* y, acc_t* buf) {
  RotateOneRow<scalar_t, acc_t>(x, rot, shared, r, b, y, buf);
}
void RotateRow(const float* x, const float* rot, bool shared, int64_t r, int64_t b, float* y,
               float* buf) {
  RotateOneRowF32(x, rot, shared, r, b, y, buf);
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
    int64_t start = 0;
    while (start < n) {
      const int64_t a = ip[start];
      int64_t end = start + 1;
      while (end < n && ip[end] == a) ++end;
      const int64_t len = end - start;
      if (a < 0) {
        std::copy(xp + start * d, xp + end * d, yp + start * d);
      } else if (len >= kGatheredBlasRun) {
        y.narrow(0, start, len).copy_(BlockRotateForward(xc.narrow(0, start, len), rot[a]));
      } else {
        const acc_t* ra = rp + a * rows * b * b;
        for (int64_t t = start; t < end; ++t) {
          RotateRow(xp + t * d, ra, rows == 1, r, b, yp + t * d, buf.data());
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
  return HornerTerms(SkewFromPacked(packed, b), c, 0)[0];
}

at::Tensor BuildRotationBackward(const at::Tensor& grad, const at::Tensor& packed,
                                 const at::Tensor& rotation, int64_t b, int64_t num_terms,
                                 bool use_cayley_neumann) {
  if (!use_cayley_neumann) {
    return reference::BuildRotationBackward(grad, packed, rotation, b, num_terms, false);
  }
  reference::CheckBuildRotationArgs(packed, b, num_terms);
  const auto c = internal::NeumannCoefficients(num_terms);
  const size_t m = c.size() - 1;
  if (m == 0) return at::zeros_like(packed);
  const auto q = SkewFromPacked(packed, b);
  const auto h = HornerTerms(q, c, 1);
  // R = H0 = c0 I + Q H1: dL/dQ = sum_k G_k H_{k+1}^T with G_0 = G, G_{k+1} = Q^T G_k.
  auto gk = grad.to(packed.scalar_type());
  auto gq = at::bmm(gk, h[1].transpose(1, 2));
  const auto qt = q.transpose(1, 2);
  for (size_t k = 1; k < m; ++k) {
    gk = at::bmm(qt, gk);
    gq = at::baddbmm(gq, gk, h[k + 1].transpose(1, 2));
  }
  return PackedFromSkew(gq - gq.transpose(1, 2));
}

at::Tensor BlockRotateForward(const at::Tensor& x, const at::Tensor& rotation) {
  const int64_t r = reference::CheckBlockRotateArgs(x, rotation);
  const int64_t d = x.size(-1), b = rotation.size(1);
  const auto acc = reference::AccumulationType(x.scalar_type());
  const auto xf = x.reshape({-1, d}).to(acc).contiguous();
  const auto rf = rotation.to(acc).contiguous();
  auto y = at::empty({xf.size(0), d}, xf.options());
  PerBlockMatmul(y, xf, rf, r, b, /*transpose_mats=*/false);
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
    PerBlockMatmul(gx, gf, rotation.to(acc).contiguous(), r, b, /*transpose_mats=*/true);
    gx = gx.view(x.sizes()).to(x.scalar_type());
  }
  if (need_rotation) {
    const auto xf = x.reshape({-1, d}).to(acc).contiguous();
    if (rotation.size(0) == 1) {
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
