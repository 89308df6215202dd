// AdaptedLinear (declared in llama.h): a frozen Linear plus the OFT rotations attached to it.
#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "server/model/cpu_linear.h"
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
  return Base(RotateInput(x, active), loss_pass);
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
  if (compute == OftCompute::kInputCentric) {
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
  // separate Forwards would.
  std::vector<at::Tensor> blocks;
  blocks.reserve(on.size());
  for (OftRotation* rotation : on) blocks.push_back(rotation->Blocks());
  const std::vector<at::Tensor> rotated = BlockRotateMany(x, blocks);
  for (size_t j = 0; j < linears.size(); ++j) out.push_back(linears[j]->Base(rotated[j], loss_pass));
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
