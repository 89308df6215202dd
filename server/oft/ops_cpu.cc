#include "server/oft/ops_cpu.h"

#include "ATen/ATen.h"
#include "server/oft/ops_reference.h"

namespace oft::cpu {
namespace {

at::ScalarType AccType(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

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

}  // namespace

at::Tensor BlockRotateForward(const at::Tensor& x, const at::Tensor& rotation) {
  const int64_t r = reference::CheckBlockRotateArgs(x, rotation);
  const int64_t d = x.size(-1), b = rotation.size(1);
  const auto acc = AccType(x.scalar_type());
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
  const auto acc = AccType(x.scalar_type());
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
