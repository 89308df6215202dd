#include "server/model/rms_norm_cpu.h"

#include <cmath>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "c10/core/GradMode.h"
#include "torch/csrc/autograd/custom_function.h"

namespace oft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Eight partial sums: the compiler vectorizes the row reductions without reassociating
// anything itself (no -ffast-math).
constexpr int kLanes = 8;

float Dot(const float* a, const float* b, int64_t h) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= h; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += a[j + l] * b[j + l];
  }
  float s = 0.f;
  for (; j < h; ++j) s += a[j] * b[j];
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

// The weight as applied: w, or 1 + w.
at::Tensor Applied(const at::Tensor& w, bool one_plus) {
  return one_plus ? (1.0 + w).contiguous() : w.contiguous();
}

void Forward(const float* x, const float* wv, int64_t n, int64_t h, float eps, float* y, float* rstd) {
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* xi = x + i * h;
      const float r = 1.f / std::sqrt(Dot(xi, xi, h) / static_cast<float>(h) + eps);
      float* yi = y + i * h;
      for (int64_t j = 0; j < h; ++j) yi[j] = (xi[j] * r) * wv[j];
      if (rstd != nullptr) rstd[i] = r;
    }
  });
}

// dx (or null) and dw (or null) from dy, x, rstd.
void Backward(const float* dy, const float* x, const float* rstd, const float* wv, int64_t n, int64_t h,
              float* dx, float* dw) {
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / 16));
  std::vector<float> partial(dw != nullptr ? static_cast<size_t>(tasks * h) : 0, 0.f);
  at::parallel_for(0, tasks, 1, [&](int64_t tb, int64_t te) {
    std::vector<float> g(static_cast<size_t>(h)), xhat(static_cast<size_t>(h));
    for (int64_t task = tb; task < te; ++task) {
      float* pw = dw != nullptr ? partial.data() + task * h : nullptr;
      for (int64_t i = n * task / tasks; i < n * (task + 1) / tasks; ++i) {
        const float* xi = x + i * h;
        const float* dyi = dy + i * h;
        const float r = rstd[i];
        for (int64_t j = 0; j < h; ++j) xhat[j] = xi[j] * r;
        if (pw != nullptr) {
          for (int64_t j = 0; j < h; ++j) pw[j] += dyi[j] * xhat[j];
        }
        if (dx == nullptr) continue;
        for (int64_t j = 0; j < h; ++j) g[j] = dyi[j] * wv[j];
        const float c = Dot(g.data(), xhat.data(), h) / static_cast<float>(h);
        float* dxi = dx + i * h;
        for (int64_t j = 0; j < h; ++j) dxi[j] = r * (g[j] - xhat[j] * c);
      }
    }
  });
  if (dw == nullptr) return;
  for (int64_t j = 0; j < h; ++j) dw[j] = 0.f;
  for (int64_t task = 0; task < tasks; ++task) {  // a fixed order
    for (int64_t j = 0; j < h; ++j) dw[j] += partial[task * h + j];
  }
}

class FusedRmsNormFunction : public torch::autograd::Function<FusedRmsNormFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, double eps,
                            bool one_plus) {
    const int64_t h = x.size(-1);
    const at::Tensor x2 = x.contiguous().view({-1, h});
    const at::Tensor wv = Applied(w, one_plus);
    at::Tensor y = at::empty_like(x2);
    at::Tensor rstd = at::empty({x2.size(0)}, x2.options());
    Forward(x2.const_data_ptr<float>(), wv.const_data_ptr<float>(), x2.size(0), h,
            static_cast<float>(eps), y.mutable_data_ptr<float>(), rstd.mutable_data_ptr<float>());
    ctx->save_for_backward({x2});
    ctx->saved_data["wv"] = wv;
    ctx->saved_data["rstd"] = rstd;
    return y.view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor x2 = ctx->get_saved_variables()[0];
    const at::Tensor wv = ctx->saved_data["wv"].toTensor();
    const at::Tensor rstd = ctx->saved_data["rstd"].toTensor();
    const int64_t n = x2.size(0), h = x2.size(1);
    const at::Tensor dy = grad_outputs[0].contiguous().view({n, h});
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    at::Tensor dx = need_x ? at::empty_like(x2) : at::Tensor();
    at::Tensor dw = need_w ? at::empty({h}, x2.options()) : at::Tensor();
    Backward(dy.const_data_ptr<float>(), x2.const_data_ptr<float>(), rstd.const_data_ptr<float>(),
             wv.const_data_ptr<float>(), n, h, need_x ? dx.mutable_data_ptr<float>() : nullptr,
             need_w ? dw.mutable_data_ptr<float>() : nullptr);
    return {need_x ? dx.view(grad_outputs[0].sizes()) : dx, dw, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool FusedRmsNormApplies(const at::Tensor& x, const at::Tensor& w) {
  return x.defined() && w.defined() && x.device().is_cpu() && w.device().is_cpu() &&
         x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat && w.dim() == 1 &&
         x.dim() >= 1 && x.size(-1) == w.size(0) && x.numel() > 0;
}

at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& w, double eps, NormKind kind) {
  TORCH_CHECK(FusedRmsNormApplies(x, w), "FusedRmsNorm: fp32 CPU x [..., H] and w [H] expected, got ",
              x.sizes(), " ", x.scalar_type(), " and ", w.sizes(), " ", w.scalar_type());
  const bool one_plus = kind == NormKind::kOnePlusWeight;
  if (at::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad())) {
    return FusedRmsNormFunction::apply(x, w, eps, one_plus);
  }
  const int64_t h = x.size(-1);
  const at::Tensor x2 = x.contiguous().view({-1, h});
  const at::Tensor wv = Applied(w, one_plus);
  at::Tensor y = at::empty_like(x2);
  Forward(x2.const_data_ptr<float>(), wv.const_data_ptr<float>(), x2.size(0), h,
          static_cast<float>(eps), y.mutable_data_ptr<float>(), nullptr);
  return y.view(x.sizes());
}

}  // namespace oft
