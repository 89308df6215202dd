#include "server/oft/ops_cpu.h"

#include "ATen/ATen.h"
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

}  // namespace

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
