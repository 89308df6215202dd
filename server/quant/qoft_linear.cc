#include "server/quant/qoft_linear.h"

#include <optional>
#include <utility>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/oft/ops.h"
#include "server/quant/nf4_internal.h"
#include "torch/autograd.h"

namespace oft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = x W^T with W held in NF4. Autograd saves only the quantized state (shared, not
// copied) and dequantizes again in backward, so no full-precision weight outlives a
// call. The weight is frozen: only x gets a gradient.
class Nf4MatmulFunction : public torch::autograd::Function<Nf4MatmulFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const Nf4Tensor& w) {
    ctx->saved_data["codes"] = w.codes;
    ctx->saved_data["absmax"] = w.absmax;
    if (w.double_quant) ctx->saved_data["absmax_scale"] = w.absmax_scale;
    ctx->saved_data["absmax_offset"] = static_cast<double>(w.absmax_offset);
    ctx->saved_data["shape"] = w.shape;
    ctx->saved_data["block_size"] = w.block_size;
    ctx->saved_data["double_quant"] = w.double_quant;
    return at::linear(x, Dequantize(w, x.scalar_type()));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Nf4Tensor w;
    w.codes = ctx->saved_data["codes"].toTensor();
    w.absmax = ctx->saved_data["absmax"].toTensor();
    w.double_quant = ctx->saved_data["double_quant"].toBool();
    if (w.double_quant) w.absmax_scale = ctx->saved_data["absmax_scale"].toTensor();
    w.absmax_offset = static_cast<float>(ctx->saved_data["absmax_offset"].toDouble());
    w.shape = ctx->saved_data["shape"].toIntVector();
    w.block_size = ctx->saved_data["block_size"].toInt();
    const at::Tensor& grad = grads[0];  // [..., out]
    at::Tensor grad_x = at::matmul(grad, Dequantize(w, grad.scalar_type()));  // [..., in]
    return {grad_x, at::Tensor()};
  }
};

absl::Status CheckBias(const at::Tensor& bias, int64_t out_features) {
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != out_features)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bias must be [", out_features, "], got ", c10::str(bias.sizes())));
  }
  return absl::OkStatus();
}

absl::Status CheckWeight2d(const at::Tensor& weight) {
  if (!weight.defined() || weight.dim() != 2) {
    return absl::InvalidArgumentError("weight must be a 2-D [out, in] tensor");
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Nf4Linear

absl::StatusOr<std::unique_ptr<Nf4Linear>> Nf4Linear::Create(const at::Tensor& weight,
                                                             at::Tensor bias,
                                                             const Nf4Options& options) {
  OFT_RETURN_IF_ERROR(CheckWeight2d(weight));
  OFT_RETURN_IF_ERROR(CheckBias(bias, weight.size(0)));
  OFT_ASSIGN_OR_RETURN(Nf4Tensor q, Quantize(weight, options));
  return FromQuantized(std::move(q), std::move(bias));
}

absl::StatusOr<std::unique_ptr<Nf4Linear>> Nf4Linear::FromQuantized(Nf4Tensor weight,
                                                                    at::Tensor bias) {
  if (weight.shape.size() != 2 || !weight.codes.defined()) {
    return absl::InvalidArgumentError("Nf4Linear: weight must be a quantized 2-D [out, in] tensor");
  }
  OFT_RETURN_IF_ERROR(CheckBias(bias, weight.shape[0]));
  return TorchCall("Nf4Linear::FromQuantized", [&] {
    return std::unique_ptr<Nf4Linear>(new Nf4Linear(std::move(weight), std::move(bias)));
  });
}

Nf4Linear::Nf4Linear(Nf4Tensor weight, at::Tensor bias)
    : weight_(std::move(weight)), bias_(std::move(bias)) {
  if (bias_.defined()) bias_.requires_grad_(false);
}

at::Tensor Nf4Linear::Forward(const at::Tensor& x) const {
  TORCH_CHECK(x.size(-1) == in_features(), "Nf4Linear: x must be [..., ", in_features(),
              "], got ", x.sizes());
  TORCH_CHECK(x.device() == weight_.codes.device(), "Nf4Linear: x is on ", x.device(),
              " but the weight is on ", weight_.codes.device());
  at::Tensor y = Nf4MatmulFunction::apply(x, weight_);
  if (bias_.defined()) y = y + bias_.to(y.scalar_type());
  return y;
}

at::Tensor Nf4Linear::DequantizedWeight(at::ScalarType dtype) const {
  return Dequantize(weight_, dtype);
}

int64_t Nf4Linear::BaseWeightBytes() const {
  return weight_.StorageBytes() + (bias_.defined() ? static_cast<int64_t>(bias_.nbytes()) : 0);
}

// ---------------------------------------------------------------------------------------
// QoftLinear

absl::StatusOr<std::unique_ptr<QoftLinear>> QoftLinear::Create(const at::Tensor& weight,
                                                               at::Tensor bias,
                                                               const OftConfig& config,
                                                               const Nf4Options& options) {
  OFT_RETURN_IF_ERROR(CheckWeight2d(weight));
  // Validate the config before the (expensive) quantization.
  OFT_ASSIGN_OR_RETURN(OftRotation rotation,
                       OftRotation::Create(config, weight.size(1), weight.options().dtype(at::kFloat)));
  OFT_ASSIGN_OR_RETURN(std::unique_ptr<Nf4Linear> base,
                       Nf4Linear::Create(weight, std::move(bias), options));
  return TorchCall("QoftLinear::Create", [&] {
    return std::unique_ptr<QoftLinear>(new QoftLinear(std::move(base), std::move(rotation)));
  });
}

absl::StatusOr<std::unique_ptr<QoftLinear>> QoftLinear::FromQuantized(Nf4Tensor weight,
                                                                      at::Tensor bias,
                                                                      const OftConfig& config) {
  OFT_ASSIGN_OR_RETURN(std::unique_ptr<Nf4Linear> base,
                       Nf4Linear::FromQuantized(std::move(weight), std::move(bias)));
  OFT_ASSIGN_OR_RETURN(
      OftRotation rotation,
      OftRotation::Create(config, base->in_features(),
                          base->weight().codes.options().dtype(at::kFloat)));
  return TorchCall("QoftLinear::FromQuantized", [&] {
    return std::unique_ptr<QoftLinear>(new QoftLinear(std::move(base), std::move(rotation)));
  });
}

QoftLinear::QoftLinear(std::unique_ptr<Nf4Linear> base, OftRotation rotation)
    : base_(std::move(base)), rotation_(std::move(rotation)) {
  if (base_->bias().defined()) {
    base_->mutable_bias().requires_grad_(rotation_.config().bias != OftBias::kNone);
  }
}

at::Tensor QoftLinear::Forward(const at::Tensor& x) {
  return base_->Forward(BlockRotate(x, rotation_.Blocks()));
}

absl::StatusOr<at::Tensor> QoftLinear::MergeToDense() {
  return TorchCall("QoftLinear::MergeToDense", [&]() -> absl::StatusOr<at::Tensor> {
    at::NoGradGuard no_grad;
    const at::Tensor blocks = rotation_.EvalBlocks();             // [rows, b, b] fp32
    const at::Tensor weight = base_->DequantizedWeight(at::kFloat);  // [out, in]
    // W R^T block-wise: W[:, block i] <- W[:, block i] R_i^T.
    at::Tensor merged = BlockRotate(weight, blocks.transpose(1, 2).contiguous());
    if (!at::isfinite(merged).all().item<bool>()) {
      return absl::InvalidArgumentError(
          "QoftLinear::MergeToDense: merged weight has NaN/Inf; adapter is broken");
    }
    return merged;
  });
}

std::vector<at::Tensor> QoftLinear::TrainableParameters() const {
  std::vector<at::Tensor> out{rotation_.oft_r()};
  if (base_->bias().defined() && rotation_.config().bias != OftBias::kNone) {
    out.push_back(base_->bias());
  }
  return out;
}

}  // namespace oft
