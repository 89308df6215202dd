#include "server/model/folded_linear.h"

#include <vector>

#include "ATen/ATen.h"
#include "ATen/autocast_mode.h"
#include "c10/core/GradMode.h"
#include "server/model/cpu_linear.h"
#include "server/oft/ops.h"
#include "torch/csrc/autograd/custom_function.h"

namespace oft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// W' = W R^T block-wise, in W's dtype (fp32 or fp64, as R).
at::Tensor Fold(const at::Tensor& weight, const at::Tensor& rotation) {
  at::NoGradGuard no_grad;
  return BlockRotate(weight, rotation.transpose(1, 2).contiguous());
}

// a [M, K] times w^T (w [N, K]).
at::Tensor GemmNT(const at::Tensor& a, const at::Tensor& w, bool fast) {
  return fast ? CpuGemmNT(a, w) : at::mm(a, w.t());
}

// x [..., in] times folded^T plus bias (empty = none): [..., out].
at::Tensor Apply(const at::Tensor& x, const at::Tensor& folded, const at::Tensor& bias, bool fast) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = folded.size(0);
  at::Tensor y = GemmNT(x.reshape({-1, x.size(-1)}).contiguous(), folded, fast);
  if (bias.numel() > 0) y.add_(bias);
  return y.view(shape);
}

// Inputs (flattened by autograd): x, m rotations, m biases (empty = none), m frozen weights,
// fast_gemm. saved_data["folded"]: the m W' (no grad, private to the node).
class FoldedOftFunction : public torch::autograd::Function<FoldedOftFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList rotations,
                               at::TensorList biases, at::TensorList weights, bool fast) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    std::vector<at::Tensor> saved{x};
    saved.insert(saved.end(), rotations.begin(), rotations.end());
    ctx->save_for_backward(saved);
    c10::List<at::Tensor> folded;
    variable_list ys;
    for (size_t j = 0; j < rotations.size(); ++j) {
      folded.push_back(Fold(weights[j], rotations[j]));
      ys.push_back(Apply(x, folded.get(j), biases[j], fast));
    }
    ctx->saved_data["folded"] = folded;
    ctx->saved_data["fast"] = fast;
    return ys;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const std::vector<at::Tensor> rotations(saved.begin() + 1, saved.end());
    const auto folded = ctx->saved_data["folded"].toTensorList();
    const bool fast = ctx->saved_data["fast"].toBool();
    const size_t m = rotations.size();
    const int64_t in = x.size(-1);
    const at::Tensor x2 = x.reshape({-1, in});
    variable_list out(1 + 3 * m + 1);
    std::vector<at::Tensor> gx(m);  // dx_j = g_j W'_j, [T, in]
    bool any_r = false;
    for (size_t j = 0; j < m; ++j) {
      if (!grads[j].defined()) continue;
      const at::Tensor w = folded.get(j);
      const at::Tensor g = grads[j].reshape({-1, w.size(0)}).contiguous();
      const bool need_r = ctx->needs_input_grad(1 + j);
      any_r = any_r || need_r;
      if (ctx->needs_input_grad(0) || need_r) gx[j] = GemmNT(g, w.t(), fast);
      if (ctx->needs_input_grad(1 + m + j)) out[1 + m + j] = g.sum(0);
    }
    if (any_r) {
      std::vector<at::Tensor> gram_in(m);
      for (size_t j = 0; j < m; ++j) {
        if (ctx->needs_input_grad(1 + j)) gram_in[j] = gx[j];
      }
      const std::vector<at::Tensor> gram = BlockRotateGramMany(gram_in, x2, rotations);
      for (size_t j = 0; j < m; ++j) {
        if (!gram[j].defined()) continue;
        // dR_j[i] = G_j[i] R_j[i]^{-T}: solve X R_j[i]^T = G_j[i].
        out[1 + j] = at::linalg_solve(rotations[j].transpose(1, 2).to(at::kDouble),
                                      gram[j].to(at::kDouble), /*left=*/false)
                         .to(rotations[j].scalar_type());
      }
    }
    if (ctx->needs_input_grad(0)) {
      at::Tensor sum;
      for (const at::Tensor& g : gx) {
        if (!g.defined()) continue;
        if (!sum.defined()) sum = g;
        else sum.add_(g);  // gx[j] is this node's own buffer
      }
      if (sum.defined()) out[0] = sum.view(x.sizes());
    }
    return out;
  }
};

}  // namespace

bool FoldedOftPays(int64_t tokens, int64_t out_features) { return tokens >= out_features; }

bool FoldedOftApplies(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                      const at::Tensor& rotation) {
  if (!x.defined() || !weight.defined() || !rotation.defined()) return false;
  if (weight.dim() != 2 || x.dim() < 1 || x.size(-1) != weight.size(1) || rotation.dim() != 3) {
    return false;
  }
  const auto dt = weight.scalar_type();
  if (x.scalar_type() != dt || weight.requires_grad()) return false;
  if (dt != at::kFloat && dt != at::kDouble) return false;  // header: why not bf16 / fp16
  if (rotation.scalar_type() != dt || rotation.size(1) != rotation.size(2)) return false;
  const int64_t rows = rotation.size(0), b = rotation.size(1);
  if (rows != 1 && rows * b != weight.size(1)) return false;
  if (rows == 1 && weight.size(1) % b != 0) return false;
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0) ||
                         bias.scalar_type() != dt || bias.device() != x.device())) {
    return false;
  }
  if (x.device() != weight.device() || rotation.device() != weight.device()) return false;
  // Under autocast the base GEMM runs in the autocast dtype: input-centric keeps that.
  return !at::autocast::is_autocast_enabled(x.device().type());
}

std::vector<at::Tensor> FoldedOftLinears(const at::Tensor& x,
                                         const std::vector<FoldedOftInput>& linears,
                                         bool fast_gemm) {
  std::vector<at::Tensor> rotations, biases, weights;
  bool grad = at::GradMode::is_enabled() && x.requires_grad();
  for (const FoldedOftInput& l : linears) {
    TORCH_CHECK(FoldedOftApplies(x, l.weight, l.bias, l.rotation),
                "FoldedOftLinears: x ", x.sizes(), " with weight ", l.weight.sizes(), " and rotation ",
                l.rotation.sizes(), " cannot fold");
    rotations.push_back(l.rotation);
    weights.push_back(l.weight);
    // An empty bias stands for none (autograd's Function cannot take an undefined input).
    biases.push_back(l.bias.defined() ? l.bias : at::empty({0}, l.weight.options()));
    grad = grad || (at::GradMode::is_enabled() &&
                    (l.rotation.requires_grad() || biases.back().requires_grad()));
  }
  if (!grad) {
    std::vector<at::Tensor> ys;
    for (size_t j = 0; j < linears.size(); ++j) {
      ys.push_back(Apply(x, Fold(weights[j], rotations[j]), biases[j], fast_gemm));
    }
    return ys;
  }
  // TensorLists, not vectors: autograd flattens only those into its inputs.
  return FoldedOftFunction::apply(x, at::TensorList(rotations), at::TensorList(biases),
                                  at::TensorList(weights), fast_gemm);
}

}  // namespace oft
