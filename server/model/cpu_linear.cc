#include "server/model/cpu_linear.h"

#include <cstdlib>
#include <cstring>
#include <optional>

#include "ATen/ATen.h"
#include "ATen/autocast_mode.h"
#include "ATen/core/dispatch/Dispatcher.h"
#include "c10/core/GradMode.h"
#include "server/oft/cpu_isa.h"
#include "torch/csrc/autograd/custom_function.h"

namespace oft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using PointwiseFn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                               c10::string_view, c10::List<std::optional<c10::Scalar>>,
                               std::optional<c10::string_view>);

// LibTorch's oneDNN linear, or null when this LibTorch was built without oneDNN.
const c10::TypedOperatorHandle<PointwiseFn>* OneDnnOp() {
  static const std::optional<c10::TypedOperatorHandle<PointwiseFn>> op =
      []() -> std::optional<c10::TypedOperatorHandle<PointwiseFn>> {
    auto handle = c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
    if (!handle.has_value()) return std::nullopt;
    return handle->typed<PointwiseFn>();
  }();
  return op.has_value() ? &*op : nullptr;
}

// a [M, K] (contiguous) times w^T for w [N, K] (strided views are fine), plus b.
at::Tensor Gemm(const at::Tensor& a, const at::Tensor& w, const at::Tensor& b) {
  if (ActiveCpuGemm() == CpuGemm::kOneDnn && OneDnnOp() != nullptr) {
    return OneDnnOp()->call(a, w.contiguous(), b.defined() ? std::optional<at::Tensor>(b) : std::nullopt,
                            "none", c10::List<std::optional<c10::Scalar>>(), std::nullopt);
  }
  return at::linear(a, w, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
}

// x [..., K] times w^T (w [N, K]) plus b, over every leading dimension: [..., N].
at::Tensor LinearNd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  std::vector<int64_t> out(x.sizes().begin(), x.sizes().end());
  out.back() = w.size(0);
  return Gemm(x.contiguous().view({-1, x.size(-1)}), w, b).view(out);
}

class CpuLinearFunction : public torch::autograd::Function<CpuLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b) {
    ctx->saved_data["w"] = w;  // frozen: no version check needed
    return LinearNd(x, w, b.numel() > 0 ? b : at::Tensor());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor w = ctx->saved_data["w"].toTensor();
    return {LinearNd(grad_outputs[0], w.t(), at::Tensor()), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

CpuGemm ActiveCpuGemm() {
  static const CpuGemm g = [] {
    const char* env = std::getenv("OFT_CPU_GEMM");
    if (env == nullptr || *env == '\0') {
      return cpu::CpuVendor() == "AuthenticAMD" ? CpuGemm::kOneDnn : CpuGemm::kMkl;
    }
    if (std::strcmp(env, "onednn") == 0) return CpuGemm::kOneDnn;
    TORCH_CHECK(std::strcmp(env, "mkl") == 0, "OFT_CPU_GEMM=", env, ": expected mkl or onednn");
    return CpuGemm::kMkl;
  }();
  return g;
}

const char* CpuGemmName(CpuGemm g) { return g == CpuGemm::kOneDnn ? "onednn" : "mkl"; }

bool CpuLinearApplies(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (ActiveCpuGemm() != CpuGemm::kOneDnn || OneDnnOp() == nullptr) return false;
  if (!x.defined() || !w.defined() || x.dim() < 1 || w.dim() != 2 || x.size(-1) != w.size(1)) return false;
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat) return false;
  if (w.requires_grad() || (b.defined() && (b.requires_grad() || b.scalar_type() != at::kFloat))) return false;
  // Under CPU autocast at::linear runs in the autocast dtype: keep it.
  if (at::autocast::is_autocast_enabled(at::kCPU)) return false;
  return x.numel() / x.size(-1) >= kCpuLinearMinRows;
}

at::Tensor CpuLinear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  // An empty bias stands for none (autograd's Function cannot take an undefined input).
  const at::Tensor bias = b.defined() ? b : at::empty({0}, w.options());
  if (at::GradMode::is_enabled() && x.requires_grad()) return CpuLinearFunction::apply(x, w, bias);
  return LinearNd(x, w, b);
}

at::Tensor CpuGemmNT(const at::Tensor& a, const at::Tensor& w) { return Gemm(a.contiguous(), w, at::Tensor()); }

}  // namespace oft
