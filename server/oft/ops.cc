// Registration of the oft:: operators: schemas, the autograd kernels, and one dispatch
// function per op for the CPU and CUDA keys that runs the optimized kernel of the device
// type (CPU kernels in ops_cpu.cc, CUDA kernels in cuda/ops_cuda.cc, both registered in
// kernel_registry.h) or the composite path (oft::reference), as the per-device switch says.
#include "server/oft/ops.h"

#include "ATen/ATen.h"
#include "ATen/core/dispatch/Dispatcher.h"
#include "server/oft/kernel_registry.h"
#include "server/oft/ops_cpu.h"
#include "server/oft/ops_reference.h"
#include "torch/autograd.h"
#include "torch/library.h"

namespace oft {
namespace internal {
#ifdef OFT_WITH_CUDA
// Defined in cuda/ops_cuda.cc; referencing it keeps that object file (and its
// TORCH_LIBRARY_IMPL registration) in every binary that uses these ops.
bool CudaOpsLinked();
#endif
}  // namespace internal

bool CudaKernelsBuilt() {
#ifdef OFT_WITH_CUDA
  return internal::CudaOpsLinked();
#else
  return false;
#endif
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// The composite path of every op and the CPU kernels, registered before main().
[[maybe_unused]] const bool kKernelsRegistered = [] {
  RegisterCompositeKernel(KernelId::kBuildRotation, EraseKernel<BuildRotationFn>(&reference::BuildRotationForward));
  RegisterCompositeKernel(KernelId::kBuildRotationBackward,
                          EraseKernel<BuildRotationBackwardFn>(&reference::BuildRotationBackward));
  RegisterCompositeKernel(KernelId::kBlockRotate, EraseKernel<BlockRotateFn>(&reference::BlockRotateForward));
  RegisterCompositeKernel(KernelId::kBlockRotateBackward,
                          EraseKernel<BlockRotateBackwardFn>(&reference::BlockRotateBackward));
  RegisterCompositeKernel(KernelId::kGatheredBlockRotate,
                          EraseKernel<GatheredBlockRotateFn>(&reference::GatheredBlockRotateForward));
  constexpr auto kCpu = c10::DeviceType::CPU;
  RegisterOptimizedKernel(KernelId::kBuildRotation, kCpu, EraseKernel<BuildRotationFn>(&cpu::BuildRotationForward));
  RegisterOptimizedKernel(KernelId::kBuildRotationBackward, kCpu,
                          EraseKernel<BuildRotationBackwardFn>(&cpu::BuildRotationBackward));
  RegisterOptimizedKernel(KernelId::kBlockRotate, kCpu, EraseKernel<BlockRotateFn>(&cpu::BlockRotateForward));
  RegisterOptimizedKernel(KernelId::kBlockRotateBackward, kCpu,
                          EraseKernel<BlockRotateBackwardFn>(&cpu::BlockRotateBackward));
  RegisterOptimizedKernel(KernelId::kGatheredBlockRotate, kCpu,
                          EraseKernel<GatheredBlockRotateFn>(&cpu::GatheredBlockRotateForward));
  return true;
}();

// Dispatch functions (CPU and CUDA keys): the switch picks the implementation.
at::Tensor BuildRotationDispatch(const at::Tensor& packed, int64_t block_size, int64_t num_terms,
                                 bool use_cayley_neumann) {
  return SelectKernel<BuildRotationFn>(KernelId::kBuildRotation, packed.device())(
      packed, block_size, num_terms, use_cayley_neumann);
}

at::Tensor BuildRotationBackwardDispatch(const at::Tensor& grad, const at::Tensor& packed,
                                         const at::Tensor& rotation, int64_t block_size,
                                         int64_t num_terms, bool use_cayley_neumann) {
  return SelectKernel<BuildRotationBackwardFn>(KernelId::kBuildRotationBackward, packed.device())(
      grad, packed, rotation, block_size, num_terms, use_cayley_neumann);
}

at::Tensor BlockRotateDispatch(const at::Tensor& x, const at::Tensor& rotation) {
  return SelectKernel<BlockRotateFn>(KernelId::kBlockRotate, x.device())(x, rotation);
}

std::tuple<at::Tensor, at::Tensor> BlockRotateBackwardDispatch(const at::Tensor& grad,
                                                               const at::Tensor& x,
                                                               const at::Tensor& rotation,
                                                               bool need_x, bool need_rotation) {
  return SelectKernel<BlockRotateBackwardFn>(KernelId::kBlockRotateBackward, x.device())(
      grad, x, rotation, need_x, need_rotation);
}

at::Tensor GatheredBlockRotateDispatch(const at::Tensor& x, const at::Tensor& rotations,
                                       const at::Tensor& index, bool delta) {
  return SelectKernel<GatheredBlockRotateFn>(KernelId::kGatheredBlockRotate, x.device())(
      x, rotations, index, delta);
}

const auto& BuildRotationOp() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("oft::build_rotation", "")
                             .typed<at::Tensor(const at::Tensor&, int64_t, int64_t, bool)>();
  return op;
}

const auto& BuildRotationBackwardOp() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("oft::build_rotation_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                            int64_t, bool)>();
  return op;
}

const auto& BlockRotateOp() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("oft::block_rotate", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op;
}

const auto& BlockRotateBackwardOp() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("oft::block_rotate_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, bool, bool)>();
  return op;
}

class BuildRotationFunction : public torch::autograd::Function<BuildRotationFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& packed, int64_t block_size,
                            int64_t num_terms, bool use_cayley_neumann) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto rotation = BuildRotationOp().call(packed, block_size, num_terms, use_cayley_neumann);
    ctx->save_for_backward({packed, rotation});
    ctx->saved_data["block_size"] = block_size;
    ctx->saved_data["num_terms"] = num_terms;
    ctx->saved_data["neumann"] = use_cayley_neumann;
    return rotation;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto grad = BuildRotationBackwardOp().call(
        grad_outputs[0].contiguous(), saved[0], saved[1], ctx->saved_data["block_size"].toInt(),
        ctx->saved_data["num_terms"].toInt(), ctx->saved_data["neumann"].toBool());
    return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class BlockRotateFunction : public torch::autograd::Function<BlockRotateFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& rotation) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, rotation});
    return BlockRotateOp().call(x, rotation);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto [gx, gr] = BlockRotateBackwardOp().call(grad_outputs[0].contiguous(), saved[0], saved[1],
                                                 ctx->needs_input_grad(0),
                                                 ctx->needs_input_grad(1));
    return {gx, gr};
  }
};

// BlockRotateMany on the CPU kernels: saves x and the rotations, and returns x's gradient
// summed over the outputs (ops_cpu.h). Gradients of unused outputs stay undefined.
class BlockRotateManyFunction : public torch::autograd::Function<BlockRotateManyFunction> {
 public:
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList rotations) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    tensor_list saved{x};
    saved.insert(saved.end(), rotations.begin(), rotations.end());
    ctx->save_for_backward(saved);
    return cpu::BlockRotateManyForward(x, rotations);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const std::vector<at::Tensor> rotations(saved.begin() + 1, saved.end());
    std::vector<bool> need(rotations.size());
    for (size_t j = 0; j < rotations.size(); ++j) need[j] = ctx->needs_input_grad(1 + j);
    auto [gx, gr] = cpu::BlockRotateManyBackward(grad_outputs, saved[0], rotations,
                                                 ctx->needs_input_grad(0), need);
    tensor_list out{gx};
    out.insert(out.end(), gr.begin(), gr.end());
    return out;
  }
};

at::Tensor BuildRotationAutograd(const at::Tensor& packed, int64_t block_size, int64_t num_terms,
                                 bool use_cayley_neumann) {
  return BuildRotationFunction::apply(packed, block_size, num_terms, use_cayley_neumann);
}

at::Tensor BlockRotateAutograd(const at::Tensor& x, const at::Tensor& rotation) {
  return BlockRotateFunction::apply(x, rotation);
}

}  // namespace

at::Tensor BuildRotation(const at::Tensor& packed, int64_t block_size, int64_t num_terms,
                         bool use_cayley_neumann) {
  return BuildRotationOp().call(packed, block_size, num_terms, use_cayley_neumann);
}

at::Tensor BlockRotate(const at::Tensor& x, const at::Tensor& rotation) {
  return BlockRotateOp().call(x, rotation);
}

std::tuple<at::Tensor, at::Tensor> BlockRotateGrads(const at::Tensor& grad, const at::Tensor& x,
                                                    const at::Tensor& rotation, bool need_x,
                                                    bool need_rotation) {
  return BlockRotateBackwardOp().call(grad.contiguous(), x, rotation, need_x, need_rotation);
}

namespace {
// Whether BlockRotateMany and BlockRotateGramMany run the fused CPU kernels.
bool ManyKernelsApply(const at::Tensor& x, at::TensorList rotations) {
  const c10::Device dev = x.device();
  return cpu::BlockRotateManyApplies(x, rotations) &&
         KernelPathFor(KernelId::kBlockRotate, dev) == KernelPath::kOptimized &&
         KernelPathFor(KernelId::kBlockRotateBackward, dev) == KernelPath::kOptimized;
}
}  // namespace

std::vector<at::Tensor> BlockRotateGramMany(at::TensorList grads, const at::Tensor& x,
                                            at::TensorList rotations) {
  TORCH_CHECK(grads.size() == rotations.size(), "BlockRotateGramMany: ", rotations.size(),
              " rotations but ", grads.size(), " gradients");
  if (ManyKernelsApply(x, rotations)) {
    std::vector<bool> need(rotations.size());
    for (size_t j = 0; j < need.size(); ++j) need[j] = grads[j].defined();
    return std::get<1>(cpu::BlockRotateManyBackward(grads, x, rotations, false, need));
  }
  std::vector<at::Tensor> out(rotations.size());
  for (size_t j = 0; j < out.size(); ++j) {
    if (grads[j].defined()) out[j] = std::get<1>(BlockRotateGrads(grads[j], x, rotations[j], false, true));
  }
  return out;
}

std::vector<at::Tensor> BlockRotateMany(const at::Tensor& x, at::TensorList rotations) {
  if (ManyKernelsApply(x, rotations)) return BlockRotateManyFunction::apply(x, rotations);
  std::vector<at::Tensor> ys;
  ys.reserve(rotations.size());
  for (const at::Tensor& r : rotations) ys.push_back(BlockRotate(x, r));
  return ys;
}

at::Tensor GatheredBlockRotate(const at::Tensor& x, const at::Tensor& rotations,
                               const at::Tensor& index, bool delta) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("oft::gathered_block_rotate", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, bool)>();
  return op.call(x, rotations, index, delta);
}

}  // namespace oft

TORCH_LIBRARY(oft, m) {
  m.def("build_rotation(Tensor packed, int block_size, int num_terms, bool use_cayley_neumann)"
        " -> Tensor");
  m.def("build_rotation_backward(Tensor grad, Tensor packed, Tensor rotation, int block_size,"
        " int num_terms, bool use_cayley_neumann) -> Tensor");
  m.def("block_rotate(Tensor x, Tensor rotation) -> Tensor");
  m.def("block_rotate_backward(Tensor grad, Tensor x, Tensor rotation, bool need_x,"
        " bool need_rotation) -> (Tensor, Tensor)");
  // Inference only (serving many adapters in one batch): no autograd kernel.
  // delta: rotations hold R - I (ops.h).
  m.def("gathered_block_rotate(Tensor x, Tensor rotations, Tensor index, bool delta=False)"
        " -> Tensor");
}

// The same dispatch functions serve both keys; without CUDA kernels in the binary, CUDA
// tensors take the composite path.
TORCH_LIBRARY_IMPL(oft, CPU, m) {
  m.impl("build_rotation", &oft::BuildRotationDispatch);
  m.impl("build_rotation_backward", &oft::BuildRotationBackwardDispatch);
  m.impl("block_rotate", &oft::BlockRotateDispatch);
  m.impl("block_rotate_backward", &oft::BlockRotateBackwardDispatch);
  m.impl("gathered_block_rotate", &oft::GatheredBlockRotateDispatch);
}

TORCH_LIBRARY_IMPL(oft, CUDA, m) {
  m.impl("build_rotation", &oft::BuildRotationDispatch);
  m.impl("build_rotation_backward", &oft::BuildRotationBackwardDispatch);
  m.impl("block_rotate", &oft::BlockRotateDispatch);
  m.impl("block_rotate_backward", &oft::BlockRotateBackwardDispatch);
  m.impl("gathered_block_rotate", &oft::GatheredBlockRotateDispatch);
}

TORCH_LIBRARY_IMPL(oft, Autograd, m) {
  m.impl("build_rotation", &oft::BuildRotationAutograd);
  m.impl("block_rotate", &oft::BlockRotateAutograd);
}
