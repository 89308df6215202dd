#include "server/train/activation_checkpoint.h"

#include <utility>

#include "ATen/ATen.h"
#include "ATen/autocast_mode.h"
#include "torch/csrc/autograd/autograd.h"
#include "torch/csrc/autograd/custom_function.h"

namespace oft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Forward arguments: hidden, the params (one gradient slot each), the Layer's address.
class CheckpointFn : public torch::autograd::Function<CheckpointFn> {
 public:
  static variable_list forward(AutogradContext* ctx, at::Tensor hidden, at::TensorList params,
                               int64_t layer_address) {
    auto* layer = reinterpret_cast<LayerCheckpointer::Layer*>(layer_address);
    (void)params;  // routed for their gradients; read from layer->params in backward
    ctx->save_for_backward({hidden});
    ctx->saved_data["layer"] = layer_address;
    layer->rng_state = layer->rng->State();
    layer->autocast = AutocastState::Capture();
    return {layer->body(hidden)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto* layer = reinterpret_cast<LayerCheckpointer::Layer*>(ctx->saved_data["layer"].toInt());
    const std::vector<at::Tensor>& params = *layer->params;
    at::Tensor hidden = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    std::vector<at::Tensor> inputs{hidden};
    std::vector<size_t> slots;  // indices into params of those that require grad
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].requires_grad()) {
        inputs.push_back(params[i]);
        slots.push_back(i);
      }
    }
    const at::Tensor rng_now = layer->rng->State();
    const AutocastState autocast_now = AutocastState::Capture();
    layer->rng->SetState(layer->rng_state);
    layer->autocast.Apply();
    at::Tensor out;
    {
      at::AutoGradMode grad(true);
      out = layer->body(hidden);
    }
    autocast_now.Apply();
    at::autocast::clear_cache();
    layer->rng->SetState(rng_now);
    auto grads = torch::autograd::grad({out}, inputs, {grad_out[0]}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    variable_list result(1 + params.size() + 1);
    result[0] = grads[0];
    for (size_t j = 0; j < slots.size(); ++j) result[1 + slots[j]] = grads[j + 1];
    return result;
  }
};

}  // namespace

LayerCheckpointer::LayerCheckpointer(std::vector<at::Tensor> params, JobRng* rng)
    : params_(std::move(params)), rng_(rng) {}

at::Tensor LayerCheckpointer::Run(const LayerBody& body, const at::Tensor& hidden) {
  layers_.push_back(Layer{body, &params_, rng_, at::Tensor(), AutocastState()});
  const auto address = reinterpret_cast<int64_t>(&layers_.back());
  return CheckpointFn::apply(hidden, at::TensorList(params_), address)[0];
}

}  // namespace oft
