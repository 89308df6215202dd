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

#include <cstdint>
#include <memory>
#include <vector>

#include "ATen/core/Generator.h"
#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/oft/config.h"

namespace oft {

// The trainable half of an OFTv2 adapter on one layer: the packed skew parameter
// `oft_r` [rows, b(b-1)/2], the config, the block layout, and the rotation built from
// them (COFT projection and module dropout included). Shared by OftLinear (dense base)
// and QoftLinear (server/quant, NF4 base), which differ only in the base layer.
//
// oft_r is fp32 (fp64 when created with fp64 options) and requires grad.
// Thread-compatibility: not thread-safe. Movable, not copyable.
class OftRotation {
 public:
  // `in_features`: the base layer's input width. `options`: device and dtype of oft_r.
  // `generator`: a CPU generator for this rotation's random draws (the init when
  // init_weights is false, drawn on the host and then moved to the device, and module
  // dropout's choice of blocks), or undefined for the process-wide default generators.
  // A training job passes its own so that concurrent jobs do not disturb each other and
  // the draws do not depend on the device. The handle is shared, not copied.
  // Errors: INVALID_ARGUMENT for an invalid config or in_features < 1.
  static absl::StatusOr<OftRotation> Create(const OftConfig& config, int64_t in_features,
                                            const at::TensorOptions& options,
                                            at::Generator generator = {});

  OftRotation(OftRotation&&) = default;
  OftRotation& operator=(OftRotation&&) = default;
  OftRotation(const OftRotation&) = delete;
  OftRotation& operator=(const OftRotation&) = delete;

  // The rotation blocks [rows, b, b] in oft_r's dtype, differentiable w.r.t. oft_r.
  // Applies the COFT projection to oft_r first when enabled (in place, without grad),
  // and module dropout when training().
  at::Tensor Blocks();
  // As Blocks(), but never drops blocks (used for merging).
  at::Tensor EvalBlocks();
  // The dense block-diagonal [in, in] rotation (blocks repeated under block_share).
  at::Tensor Dense();

  void SetTraining(bool training) { training_ = training; }
  bool training() const { return training_; }

  at::Tensor& oft_r() { return oft_r_; }
  const at::Tensor& oft_r() const { return oft_r_; }
  const OftConfig& config() const { return config_; }
  const OftBlockLayout& layout() const { return layout_; }

 private:
  OftRotation(OftConfig config, OftBlockLayout layout, const at::TensorOptions& options,
              at::Generator generator);
  void ProjectCoft();  // COFT: in place on oft_r_, without grad
  at::Tensor ApplyModuleDropout(const at::Tensor& blocks) const;

  at::Tensor oft_r_;  // [rows, b(b-1)/2], requires grad
  OftConfig config_;
  OftBlockLayout layout_;
  at::Generator generator_;  // CPU; undefined: the process-wide default generators
  bool training_ = true;
};

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

  void SetTraining(bool training) { rotation_.SetTraining(training); }
  bool training() const { return rotation_.training(); }

  // Bytes held by the frozen base layer: weight plus bias (if any).
  int64_t BaseWeightBytes() const;

  // Trainable tensors: oft_r, plus the bias when config.bias != kNone.
  std::vector<at::Tensor> TrainableParameters() const;

  at::Tensor& oft_r() { return rotation_.oft_r(); }
  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  const OftConfig& config() const { return rotation_.config(); }
  const OftBlockLayout& layout() const { return rotation_.layout(); }

 private:
  OftLinear(at::Tensor weight, at::Tensor bias, OftRotation rotation);

  at::Tensor weight_;  // [out, in], frozen
  at::Tensor bias_;    // [out] or undefined
  OftRotation rotation_;
  bool merged_ = false;
};

}  // namespace oft

#endif  // OFT_SERVER_OFT_OFT_LINEAR_H_
