#include "server/model/linear_cross_entropy.h"

#include <algorithm>

#include "ATen/ATen.h"
#include "ATen/autocast_mode.h"
#include "c10/core/GradMode.h"
#include "server/model/cpu_linear.h"
#include "torch/csrc/autograd/custom_function.h"

namespace oft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Needs {
  bool h = false, weight = false, bias = false;
  bool any() const { return h || weight || bias; }
};

struct Gradients {
  at::Tensor h, weight, bias;
};

int64_t ChunkRows(const at::Tensor& h, int64_t vocab, int64_t requested) {
  const int64_t n = h.size(0);
  if (requested > 0) return std::min(requested, std::max<int64_t>(n, 1));
  // CPU: about 4 MiB of fp32 logits per chunk (cache-sized), but never so few rows that the
  // head's GEMM turns into a matrix-vector product. Accelerators: large chunks (the GEMM
  // wants them; the buffer is still a fraction of the full logits).
  const int64_t floats = h.device().is_cpu() ? (int64_t{1} << 20) : (int64_t{1} << 24);
  const int64_t floor = h.device().is_cpu() ? 128 : 1024;
  return std::clamp<int64_t>(floats / std::max<int64_t>(vocab, 1), floor, std::max<int64_t>(n, 1));
}

void CheckTargets(const at::Tensor& targets, int64_t vocab, int64_t ignore_index) {
  if (!targets.device().is_cpu()) return;  // no host synchronisation on accelerators
  const at::Tensor bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab));
  if (!bad.any().item<bool>()) return;
  const int64_t i = bad.nonzero()[0][0].item<int64_t>();
  TORCH_CHECK(false, "LinearCrossEntropy: target ", targets[i].item<int64_t>(), " at token ", i,
              " is outside [0, ", vocab, ") and is not the ignore index ", ignore_index);
}

// The loss sum over every chunk; fills `grads` with d(sum)/d(input) for the inputs `need` names.
at::Tensor Run(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
               const at::Tensor& targets, const LinearCrossEntropyOptions& o, Needs need,
               Gradients* grads) {
  const int64_t n = h.size(0), vocab = weight.size(0);
  const int64_t chunk = ChunkRows(h, vocab, o.chunk_rows);
  // fp32 without CPU autocast: the out= GEMMs into the reused buffers. Otherwise at::linear /
  // at::mm, so autocast and the model dtype apply as they do to the unfused head.
  const bool fp32 = h.scalar_type() == at::kFloat && !at::autocast::is_autocast_enabled(h.device().type());
  const auto f32 = h.options().dtype(at::kFloat);
  at::Tensor loss = at::zeros({}, f32);
  if (need.h) grads->h = at::empty_like(h);
  if (need.weight) grads->weight = at::zeros_like(weight);
  if (need.bias) grads->bias = at::zeros_like(bias);
  if (n == 0) return loss;
  // Two reused [chunk, V] fp32 buffers: the logits and their log-softmax / gradient.
  at::Tensor zbuf = at::empty({std::min(chunk, n), vocab}, f32);
  at::Tensor pbuf = at::empty_like(zbuf);
  // fp32 on the CPU: the GEMMs go through the library CPU Linears use (cpu_linear.h).
  const bool onednn = fp32 && CpuLinearApplies(h, weight, at::Tensor());
  const at::Tensor weight_t = onednn && need.h ? weight.t().contiguous() : at::Tensor();
  const double c = o.softcap.value_or(1.0);
  const double pre = o.divisor * c;  // one division serves both
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t m = std::min(chunk, n - s);
    const at::Tensor hc = h.narrow(0, s, m);
    at::Tensor z = zbuf.narrow(0, 0, m);
    if (onednn) {
      z = CpuGemmNT(hc, weight);  // the head's GEMM through the CPU Linears' library
      if (bias.defined()) z.add_(bias);
    } else if (fp32) {
      at::mm_out(z, hc, weight.t());
      if (bias.defined()) z.add_(bias);
    } else {  // logits in the model dtype, the softmax in fp32 (transformers' upcast)
      z.copy_(at::linear(hc, weight, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt));
    }
    if (pre != 1.0) z.div_(pre);
    if (o.softcap) z.tanh_().mul_(c);
    const at::Tensor tc = targets.narrow(0, s, m);
    const at::Tensor valid = tc != o.ignore_index;
    const at::Tensor safe = tc.masked_fill(valid.logical_not(), 0).unsqueeze(1);
    at::Tensor p = pbuf.narrow(0, 0, m);
    at::_log_softmax_out(p, z, 1, /*half_to_float=*/false);
    loss.sub_(at::where(valid, p.gather(1, safe).squeeze(1), 0.0).sum());
    if (!need.any()) continue;
    // d(sum)/d(logits) = softmax - onehot(target) on the counted rows, 0 on ignored ones.
    p.exp_();
    const at::Tensor validf = valid.to(at::kFloat).unsqueeze(1);
    p.scatter_add_(1, safe, validf.neg());
    if (!h.device().is_cpu() || !valid.all().item<bool>()) p.mul_(validf);
    if (o.softcap) p.mul_(z.div_(c).square_().neg_().add_(1.0));  // d(c tanh(u/c))/du
    if (pre != 1.0) p.mul_(c / pre);                              // 1 / divisor
    const at::Tensor pd = fp32 ? p : p.to(h.scalar_type());
    if (need.h) {
      at::Tensor dst = grads->h.narrow(0, s, m);
      if (onednn) {
        dst.copy_(CpuGemmNT(pd, weight_t));
      } else if (fp32) {
        at::mm_out(dst, pd, weight);
      } else {
        dst.copy_(at::mm(pd, weight));
      }
    }
    if (need.weight) grads->weight.addmm_(pd.t(), hc);
    if (need.bias) grads->bias.add_(pd.sum(0).to(bias.scalar_type()));
  }
  return loss;
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& targets,
                            const LinearCrossEntropyOptions& options, Needs need) {
    Gradients g;
    // An empty bias stands for none (autograd's Function cannot take an undefined input).
    const at::Tensor b = bias.numel() > 0 ? bias : at::Tensor();
    at::Tensor loss = Run(h, weight, b, targets, options, need, &g);
    ctx->saved_data["h"] = g.h;
    ctx->saved_data["weight"] = g.weight;
    ctx->saved_data["bias"] = g.bias;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor& go = grad_outputs[0];
    auto scaled = [&](const char* key) {
      at::Tensor t = ctx->saved_data[key].toTensor();
      return t.defined() ? t.mul_(go.to(t.scalar_type())) : t;  // each is used once
    };
    return {scaled("h"), scaled("weight"), scaled("bias"), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor LinearCrossEntropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& targets, const LinearCrossEntropyOptions& options) {
  TORCH_CHECK(h.dim() == 2 && weight.dim() == 2 && h.size(1) == weight.size(1),
              "LinearCrossEntropy: h [N, H] and weight [V, H] expected, got ", h.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == h.size(0) && targets.scalar_type() == at::kLong,
              "LinearCrossEntropy: targets must be int64 [", h.size(0), "], got ", targets.sizes(),
              " ", targets.scalar_type());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
              "LinearCrossEntropy: bias must be [", weight.size(0), "]");
  TORCH_CHECK(options.divisor > 0 && (!options.softcap || *options.softcap > 0),
              "LinearCrossEntropy: divisor and soft-cap must be positive");
  CheckTargets(targets, weight.size(0), options.ignore_index);
  const bool grad = at::GradMode::is_enabled();
  Needs need;
  need.h = grad && h.requires_grad();
  need.weight = grad && weight.requires_grad();
  need.bias = grad && bias.defined() && bias.requires_grad();
  const at::Tensor hc = h.contiguous();
  if (!need.any()) {
    Gradients unused;
    return Run(hc, weight, bias, targets, options, need, &unused);
  }
  return LinearCrossEntropyFunction::apply(hc, weight,
                                           bias.defined() ? bias : at::empty({0}, weight.options()),
                                           targets, options, need);
}

}  // namespace oft
