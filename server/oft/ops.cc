// Registration of the oft:: operators: schemas, CPU kernels (the reference), and the
// autograd kernels. CUDA kernels register themselves in cuda/ops_cuda.cc.
#include "server/oft/ops.h"

#include "ATen/ATen.h"
#include "ATen/core/dispatch/Dispatcher.h"
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

at::Tensor GatheredBlockRotate(const at::Tensor& x, const at::Tensor& rotations,
                               const at::Tensor& index) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("oft::gathered_block_rotate", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&)>();
  return op.call(x, rotations, index);
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
  m.def("gathered_block_rotate(Tensor x, Tensor rotations, Tensor index) -> Tensor");
}

TORCH_LIBRARY_IMPL(oft, CPU, m) {
  m.impl("build_rotation", &oft::cpu::BuildRotationForward);
  m.impl("build_rotation_backward", &oft::cpu::BuildRotationBackward);
  m.impl("block_rotate", &oft::cpu::BlockRotateForward);
  m.impl("block_rotate_backward", &oft::cpu::BlockRotateBackward);
  m.impl("gathered_block_rotate", &oft::cpu::GatheredBlockRotateForward);
}

TORCH_LIBRARY_IMPL(oft, Autograd, m) {
  m.impl("build_rotation", &oft::BuildRotationAutograd);
  m.impl("block_rotate", &oft::BlockRotateAutograd);
}
