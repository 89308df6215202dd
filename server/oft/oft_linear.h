// OftLinear: a frozen base Linear with an OFTv2 adapter on its input side.
//
//   y = (x R) W^T + bias,   R = blockdiag(R_1..R_r), R_i = Cayley(-Neumann)(Q_i)
//
// The base weight W [out, in] (fp32, bf16 or fp16) and bias are frozen; the adapter
// parameter `oft_r` [rows, b(b-1)/2] is fp32 on W's device and is the only tensor that
// requires grad (plus the bias when config.bias != kNone). Activations stay in the base
// dtype: Forward() rotates x block-wise (input-centric, O(T d b)), then calls the base
// GEMM. ForwardWeightCentric() is the original OFT computation (dense d x d R,
// W' = W R^T, y = x W'^T) kept as a reference for tests and benchmarks.
//
// Thread-compatibility: not thread-safe; one training loop owns an OftLinear.
// Forward* throw c10::Error on shape/dtype mismatches (hot path, like any ATen call);
// callers at module boundaries convert with oft::TorchCall.
#ifndef OFT_SERVER_OFT_OFT_LINEAR_H_
#define OFT_SERVER_OFT_OFT_LINEAR_H_

#include <memory>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/oft/config.h"

namespace oft {

class OftLinear {
 public:
  // Errors: INVALID_ARGUMENT for an invalid config, a weight that is not 2-D floating
  // point, or a bias whose shape is not [out].
  static absl::StatusOr<std::unique_ptr<OftLinear>> Create(at::Tensor weight, at::Tensor bias,
                                                           const OftConfig& config);

  // Input-centric forward: x [..., in] -> [..., out] in x's dtype.
  at::Tensor Forward(const at::Tensor& x);
  // Weight-centric reference forward (same result up to rounding).
  at::Tensor ForwardWeightCentric(const at::Tensor& x);
  // The frozen base layer alone.
  at::Tensor ForwardBase(const at::Tensor& x) const;

  // The rotation blocks [rows, b, b] (fp32, differentiable w.r.t. oft_r). Applies the
  // COFT projection to oft_r first when enabled, and module dropout in training.
  at::Tensor RotationBlocks();
  // The dense block-diagonal [in, in] rotation (blocks repeated under block_share).
  at::Tensor DenseRotation();

  // W <- W R^T (computed in fp32, stored in W's dtype). Forward then skips the rotation.
  // FAILED_PRECONDITION if already merged; INVALID_ARGUMENT if the result is not finite.
  absl::Status Merge();
  // W <- W (R^{-1})^T with an fp32 inverse (PEFT >= 0.18). FAILED_PRECONDITION if not merged.
  absl::Status Unmerge();
  bool merged() const { return merged_; }

  void SetTraining(bool training) { training_ = training; }
  bool training() const { return training_; }

  // Trainable tensors: oft_r, plus the bias when config.bias != kNone.
  std::vector<at::Tensor> TrainableParameters() const;

  at::Tensor& oft_r() { return oft_r_; }
  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  const OftConfig& config() const { return config_; }
  const OftBlockLayout& layout() const { return layout_; }

 private:
  OftLinear(at::Tensor weight, at::Tensor bias, OftConfig config, OftBlockLayout layout);
  void ProjectCoft();                    // COFT: in place on oft_r_, without grad
  at::Tensor ApplyModuleDropout(const at::Tensor& blocks) const;

  at::Tensor weight_;  // [out, in], frozen
  at::Tensor bias_;    // [out] or undefined
  at::Tensor oft_r_;   // [rows, b(b-1)/2], fp32, requires grad
  OftConfig config_;
  OftBlockLayout layout_;
  bool merged_ = false;
  bool training_ = true;
};

}  // namespace oft

#endif  // OFT_SERVER_OFT_OFT_LINEAR_H_
