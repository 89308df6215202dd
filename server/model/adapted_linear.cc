// AdaptedLinear (declared in llama.h): a frozen Linear plus the OFT rotations attached to it.
#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "server/model/cpu_linear.h"
#include "server/model/folded_linear.h"
#include "server/model/llama.h"
#include "server/oft/ops.h"

namespace oft {

AdaptedLinear::AdaptedLinear(std::string name, at::Tensor weight, at::Tensor bias)
    : name_(std::move(name)), weight_(std::move(weight)), bias_(std::move(bias)) {}

AdaptedLinear::AdaptedLinear(std::string name, std::unique_ptr<Nf4Linear> quantized)
    : name_(std::move(name)), nf4_(std::move(quantized)) {}

at::Tensor AdaptedLinear::DenseWeight(at::ScalarType dtype) const {
  return nf4_ ? nf4_->DequantizedWeight(dtype) : weight_.to(dtype);
}

int64_t AdaptedLinear::BaseWeightBytes() const {
  if (nf4_) return nf4_->BaseWeightBytes();
  int64_t n = weight_.numel() * static_cast<int64_t>(weight_.element_size());
  if (bias_.defined()) n += bias_.numel() * static_cast<int64_t>(bias_.element_size());
  return n;
}

at::Tensor AdaptedLinear::Forward(const at::Tensor& x, const std::vector<std::string>& active,
                                  OftCompute compute, bool loss_pass) const {
  if (compute == OftCompute::kWeightCentric) {
    // W' = W (R_a R_b ...)^T = W R_last^T ... R_first^T, then one GEMM.
    std::vector<OftRotation*> on;
    for (const auto& [adapter, rotation] : rotations_) {
      for (const auto& a : active) {
        if (a == adapter) on.push_back(rotation.get());
      }
    }
    if (!on.empty()) {
      at::Tensor w = DenseWeight(x.scalar_type());
      for (auto it = on.rbegin(); it != on.rend(); ++it) {
        w = at::matmul(w, (*it)->Dense().to(x.scalar_type()).t());
      }
      const at::Tensor& b = bias();
      return at::linear(x, w, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
    }
  }
  if (compute == OftCompute::kAuto || compute == OftCompute::kFolded) {
    const std::vector<OftRotation*> on = ActiveRotations(active);
    if (on.size() == 1) {
      at::Tensor blocks = on[0]->Blocks();
      if (Folds(x, compute, blocks)) return Folded({this}, x, {blocks}, loss_pass)[0];
      return Base(BlockRotate(x, blocks), loss_pass);
    }
  }
  return Base(RotateInput(x, active), loss_pass);
}

bool AdaptedLinear::Folds(const at::Tensor& x, OftCompute compute, const at::Tensor& rotation) const {
  if (nf4_ || !FoldedOftApplies(x, weight_, bias_, rotation)) return false;
  if (compute == OftCompute::kFolded) return true;
  return compute == OftCompute::kAuto && x.device().is_cpu() &&
         FoldedOftPays(x.numel() / x.size(-1), out_features());
}

std::vector<at::Tensor> AdaptedLinear::Folded(const std::vector<const AdaptedLinear*>& linears,
                                              const at::Tensor& x,
                                              const std::vector<at::Tensor>& rotations,
                                              bool loss_pass) {
  std::vector<FoldedOftInput> in;
  bool fast = loss_pass;
  for (size_t j = 0; j < linears.size(); ++j) {
    in.push_back({linears[j]->weight_, linears[j]->bias_, rotations[j]});
    fast = fast && CpuLinearApplies(x, linears[j]->weight_, at::Tensor());
  }
  return FoldedOftLinears(x, in, fast);
}

at::Tensor AdaptedLinear::Base(const at::Tensor& h, bool loss_pass) const {
  if (nf4_) return nf4_->Forward(h);
  if (packed_ && packed_->Handles(h)) return packed_->Forward(h);
  if (loss_pass && CpuLinearApplies(h, weight_, bias_)) return CpuLinear(h, weight_, bias_);
  return at::linear(h, weight_, bias_.defined() ? std::optional<at::Tensor>(bias_) : std::nullopt);
}

std::vector<at::Tensor> AdaptedLinear::ForwardSiblings(
    const std::vector<const AdaptedLinear*>& linears, const at::Tensor& x,
    const std::vector<std::string>& active, OftCompute compute, bool loss_pass) {
  std::vector<OftRotation*> on;  // the one active rotation of each Linear
  if (compute != OftCompute::kWeightCentric) {
    for (const AdaptedLinear* lin : linears) {
      const std::vector<OftRotation*> mine = lin->ActiveRotations(active);
      if (mine.size() != 1) break;
      on.push_back(mine[0]);
    }
  }
  std::vector<at::Tensor> out;
  out.reserve(linears.size());
  if (on.size() != linears.size()) {
    for (const AdaptedLinear* lin : linears) out.push_back(lin->Forward(x, active, compute, loss_pass));
    return out;
  }
  // Blocks() in the Linears' order: module dropout draws from the generator as the
  // separate Forwards would. The Linears that fold run as one folded group; the others
  // share one BlockRotateMany.
  std::vector<at::Tensor> blocks;
  blocks.reserve(on.size());
  for (OftRotation* rotation : on) blocks.push_back(rotation->Blocks());
  std::vector<size_t> fold, rotate;  // indices of the Linears that fold / rotate x
  std::vector<const AdaptedLinear*> fold_linears;
  std::vector<at::Tensor> fold_blocks, rotate_blocks;
  for (size_t j = 0; j < linears.size(); ++j) {
    if (linears[j]->Folds(x, compute, blocks[j])) {
      fold.push_back(j);
      fold_linears.push_back(linears[j]);
      fold_blocks.push_back(blocks[j]);
    } else {
      rotate.push_back(j);
      rotate_blocks.push_back(blocks[j]);
    }
  }
  out.resize(linears.size());
  if (!fold.empty()) {
    const std::vector<at::Tensor> ys = Folded(fold_linears, x, fold_blocks, loss_pass);
    for (size_t k = 0; k < fold.size(); ++k) out[fold[k]] = ys[k];
  }
  if (!rotate.empty()) {
    const std::vector<at::Tensor> rotated = BlockRotateMany(x, rotate_blocks);
    for (size_t k = 0; k < rotate.size(); ++k) {
      out[rotate[k]] = linears[rotate[k]]->Base(rotated[k], loss_pass);
    }
  }
  return out;
}

std::vector<OftRotation*> AdaptedLinear::ActiveRotations(
    const std::vector<std::string>& active) const {
  std::vector<OftRotation*> on;
  for (const auto& [adapter, rotation] : rotations_) {
    if (std::find(active.begin(), active.end(), adapter) != active.end()) {
      on.push_back(rotation.get());
    }
  }
  return on;
}

at::Tensor AdaptedLinear::RotateInput(const at::Tensor& x, const std::vector<std::string>& active) const {
  at::Tensor h = x;
  for (OftRotation* rotation : ActiveRotations(active)) h = BlockRotate(h, rotation->Blocks());
  return h;
}

void AdaptedLinear::Attach(const std::string& adapter, std::shared_ptr<OftRotation> rotation) {
  rotations_.emplace_back(adapter, std::move(rotation));
}

void AdaptedLinear::Detach(const std::string& adapter) {
  std::erase_if(rotations_, [&](const auto& p) { return p.first == adapter; });
}

OftRotation* AdaptedLinear::Rotation(const std::string& adapter) const {
  for (const auto& [a, r] : rotations_) {
    if (a == adapter) return r.get();
  }
  return nullptr;
}

}  // namespace oft
