#include "server/oft/oft_linear.h"

#include <cmath>
#include <utility>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/oft/ops.h"

namespace oft {

absl::StatusOr<std::unique_ptr<OftLinear>> OftLinear::Create(at::Tensor weight, at::Tensor bias,
                                                             const OftConfig& config) {
  if (!weight.defined() || weight.dim() != 2) {
    return absl::InvalidArgumentError("OftLinear: weight must be a 2-D [out, in] tensor");
  }
  const auto dt = weight.scalar_type();
  if (dt != at::kFloat && dt != at::kBFloat16 && dt != at::kHalf && dt != at::kDouble) {
    return absl::InvalidArgumentError(
        absl::StrCat("OftLinear: weight dtype must be float32, bfloat16 or float16, got ",
                     c10::toString(dt)));
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0))) {
    return absl::InvalidArgumentError(absl::StrCat("OftLinear: bias must be [", weight.size(0),
                                                   "], got ", c10::str(bias.sizes())));
  }
  // fp64 bases (used by exactness tests) keep fp64 adapters; otherwise adapters are fp32.
  const auto pdtype = dt == at::kDouble ? at::kDouble : at::kFloat;
  OFT_ASSIGN_OR_RETURN(OftRotation rotation,
                       OftRotation::Create(config, weight.size(1), weight.options().dtype(pdtype)));
  return TorchCall("OftLinear::Create", [&] {
    return std::unique_ptr<OftLinear>(
        new OftLinear(std::move(weight), std::move(bias), std::move(rotation)));
  });
}

OftLinear::OftLinear(at::Tensor weight, at::Tensor bias, OftRotation rotation)
    : weight_(std::move(weight)), bias_(std::move(bias)), rotation_(std::move(rotation)) {
  weight_.requires_grad_(false);
  if (bias_.defined()) bias_.requires_grad_(rotation_.config().bias != OftBias::kNone);
}

// ---------------------------------------------------------------------------------------
// OftRotation

absl::StatusOr<OftRotation> OftRotation::Create(const OftConfig& config, int64_t in_features,
                                                const at::TensorOptions& options,
                                                at::Generator generator) {
  OFT_ASSIGN_OR_RETURN(OftBlockLayout layout, ResolveBlocks(config, in_features));
  return TorchCall("OftRotation::Create",
                   [&] { return OftRotation(config, layout, options, std::move(generator)); });
}

OftRotation::OftRotation(OftConfig config, OftBlockLayout layout, const at::TensorOptions& options,
                         at::Generator generator)
    : config_(config), layout_(layout), generator_(std::move(generator)) {
  const std::vector<int64_t> shape{layout_.param_rows, layout_.packed_size};
  if (config_.init_weights) {
    oft_r_ = at::zeros(shape, options);
  } else if (generator_.defined()) {
    // Drawn on the host from the job's generator: the same init on every device.
    oft_r_ = at::normal(0.0, 0.1, shape, generator_, options.device(at::kCPU)).to(options.device());
  } else {
    oft_r_ = at::normal(0.0, 0.1, shape, std::nullopt, options);
  }
  oft_r_.requires_grad_(true);
}

void OftRotation::ProjectCoft() {
  // PEFT: each block's Q_i is pulled back into the Frobenius ball of radius eps/sqrt(rows).
  // ||Q_i||_F = sqrt(2) * ||q_i|| for the packed row q_i.
  at::NoGradGuard no_grad;
  const double radius = config_.eps / std::sqrt(static_cast<double>(layout_.param_rows));
  auto norms = oft_r_.norm(2, {1}, /*keepdim=*/true) * std::sqrt(2.0);
  auto scale = at::where(norms > radius, radius / norms, at::ones_like(norms));
  oft_r_.mul_(scale);
}

at::Tensor OftRotation::ApplyModuleDropout(const at::Tensor& blocks) const {
  const int64_t rows = blocks.size(0);
  const auto n_drop = static_cast<int64_t>(config_.module_dropout * static_cast<double>(rows));
  if (!training_ || n_drop == 0 || rows == 1) return blocks;
  auto chosen = at::randperm(rows, generator_.defined() ? std::optional<at::Generator>(generator_)
                                                      : std::nullopt,
                             at::TensorOptions().dtype(at::kLong))
                    .narrow(0, 0, n_drop);
  auto mask = at::zeros({rows, 1, 1}, blocks.options());
  mask.index_fill_(0, chosen.to(blocks.device()), 1.0);
  const auto eye = at::eye(layout_.block_size, blocks.options());
  return blocks * (1 - mask) + eye * mask;
}

at::Tensor OftRotation::EvalBlocks() {
  if (config_.coft) ProjectCoft();
  return BuildRotation(oft_r_, layout_.block_size, config_.num_cayley_neumann_terms,
                       config_.use_cayley_neumann);
}

at::Tensor OftRotation::Blocks() {
  auto blocks = EvalBlocks();
  return config_.module_dropout > 0 ? ApplyModuleDropout(blocks) : blocks;
}

at::Tensor OftRotation::Dense() {
  auto blocks = Blocks();
  std::vector<at::Tensor> list;
  list.reserve(layout_.num_blocks);
  for (int64_t i = 0; i < layout_.num_blocks; ++i) list.push_back(blocks[blocks.size(0) == 1 ? 0 : i]);
  return at::block_diag(list);
}

// ---------------------------------------------------------------------------------------
// OftLinear

at::Tensor OftLinear::RotationBlocks() { return rotation_.Blocks(); }

at::Tensor OftLinear::DenseRotation() { return rotation_.Dense(); }

int64_t OftLinear::BaseWeightBytes() const {
  return static_cast<int64_t>(weight_.nbytes()) +
         (bias_.defined() ? static_cast<int64_t>(bias_.nbytes()) : 0);
}

at::Tensor OftLinear::ForwardBase(const at::Tensor& x) const {
  return at::linear(x, weight_, bias_.defined() ? std::optional<at::Tensor>(bias_) : std::nullopt);
}

at::Tensor OftLinear::Forward(const at::Tensor& x) {
  if (merged_) return ForwardBase(x);
  return ForwardBase(BlockRotate(x, RotationBlocks()));
}

at::Tensor OftLinear::ForwardWeightCentric(const at::Tensor& x) {
  if (merged_) return ForwardBase(x);
  const auto dense = DenseRotation();                                 // [in, in], fp32
  const auto rotated = at::matmul(weight_.to(dense.scalar_type()), dense.t());  // W R^T
  return at::linear(x, rotated.to(weight_.scalar_type()),
                    bias_.defined() ? std::optional<at::Tensor>(bias_) : std::nullopt);
}

absl::Status OftLinear::Merge() {
  if (merged_) return absl::FailedPreconditionError("OftLinear::Merge: already merged");
  return TorchCall("OftLinear::Merge", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    const auto blocks = rotation_.EvalBlocks();  // never merge a dropped-out rotation
    // W R^T block-wise: W[:, block i] <- W[:, block i] R_i^T.
    auto merged = BlockRotate(weight_.to(blocks.scalar_type()), blocks.transpose(1, 2).contiguous());
    if (!at::isfinite(merged).all().item<bool>()) {
      return absl::InvalidArgumentError("OftLinear::Merge: merged weight has NaN/Inf; adapter is broken");
    }
    weight_.copy_(merged);
    merged_ = true;
    return absl::OkStatus();
  });
}

absl::Status OftLinear::Unmerge() {
  if (!merged_) return absl::FailedPreconditionError("OftLinear::Unmerge: not merged");
  return TorchCall("OftLinear::Unmerge", [&] {
    at::NoGradGuard no_grad;
    const auto blocks = rotation_.EvalBlocks();
    const auto work = blocks.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const auto inv = at::linalg_inv(blocks.to(work));
    weight_.copy_(BlockRotate(weight_.to(work), inv.transpose(1, 2).contiguous()));
    merged_ = false;
  });
}

std::vector<at::Tensor> OftLinear::TrainableParameters() const {
  std::vector<at::Tensor> out{rotation_.oft_r()};
  if (bias_.defined() && rotation_.config().bias != OftBias::kNone) out.push_back(bias_);
  return out;
}

}  // namespace oft
