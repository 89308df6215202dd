// QOFT: OFTv2 over an NF4-quantized frozen base Linear (OFTv2 paper §4, Eq. 3).
//
//   Nf4Linear:   y = x Dequant(W)^T + bias          (frozen; W is never kept in full precision)
//   QoftLinear:  y = Nf4Linear(BlockRotate(x, R))   (input-centric: rotate, then quantized matmul)
//
// The rotation R comes from oft::OftRotation (server/oft/oft_linear.h), the same code
// OftLinear uses, so config semantics (Cayley/Cayley-Neumann, COFT, block_share,
// module_dropout, bias) are identical. R is built in fp32 and applied with fp32
// accumulation; activations stay in their dtype.
//
// Thread-compatibility: not thread-safe; one training loop owns a layer.
// Forward() throws c10::Error on shape/dtype/device mismatches (hot path, like any ATen
// call); callers at module boundaries convert with oft::TorchCall.
#ifndef OFT_SERVER_QUANT_QOFT_LINEAR_H_
#define OFT_SERVER_QUANT_QOFT_LINEAR_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/oft/config.h"
#include "server/oft/oft_linear.h"
#include "server/quant/nf4.h"

namespace oft {

// A frozen Linear whose weight is held only in NF4. Each Forward() dequantizes the
// weight on the fly into x's dtype, multiplies, and drops it; backward dequantizes again
// and returns the gradient w.r.t. x only (the weight gets none). The bias is kept in
// its original dtype; it is added outside the quantized matmul, so a bias that requires
// grad (QOFT with bias != "none") receives its gradient.
class Nf4Linear {
 public:
  // Quantizes `weight` [out, in] (fp32/bf16/fp16) at load. Errors: INVALID_ARGUMENT for
  // a weight that is not 2-D floating point with finite values, a bias that is not
  // [out], or bad options.
  static absl::StatusOr<std::unique_ptr<Nf4Linear>> Create(const at::Tensor& weight,
                                                           at::Tensor bias,
                                                           const Nf4Options& options = {});
  // Wraps an already quantized 2-D weight. Errors: INVALID_ARGUMENT as above.
  static absl::StatusOr<std::unique_ptr<Nf4Linear>> FromQuantized(Nf4Tensor weight,
                                                                  at::Tensor bias);

  // x [..., in] (fp32/bf16/fp16, on the weight's device) -> [..., out] in x's dtype.
  at::Tensor Forward(const at::Tensor& x) const;

  // The weight decoded to `dtype` (fp32 by default), [out, in]; a fresh tensor.
  at::Tensor DequantizedWeight(at::ScalarType dtype = at::kFloat) const;

  // Bytes held by the frozen layer: NF4 codes + absmax (+ double-quant state) + bias.
  int64_t BaseWeightBytes() const;

  int64_t in_features() const { return weight_.shape[1]; }
  int64_t out_features() const { return weight_.shape[0]; }
  const Nf4Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  at::Tensor& mutable_bias() { return bias_; }

 private:
  Nf4Linear(Nf4Tensor weight, at::Tensor bias);

  Nf4Tensor weight_;  // [out, in], frozen
  at::Tensor bias_;   // [out] or undefined
};

// OFTv2 adapter over an Nf4Linear base. The trainable parameter is oft_r (fp32, on the
// weight's device), plus the bias when config.bias != kNone.
class QoftLinear {
 public:
  // Quantizes `weight` [out, in] at load (the full-precision weight is not retained).
  // Errors: INVALID_ARGUMENT for an invalid config, or as Nf4Linear::Create.
  static absl::StatusOr<std::unique_ptr<QoftLinear>> Create(const at::Tensor& weight,
                                                            at::Tensor bias,
                                                            const OftConfig& config,
                                                            const Nf4Options& options = {});
  // Over an already quantized weight. Errors: as Create.
  static absl::StatusOr<std::unique_ptr<QoftLinear>> FromQuantized(Nf4Tensor weight,
                                                                   at::Tensor bias,
                                                                   const OftConfig& config);

  // x [..., in] -> [..., out] in x's dtype: Nf4Linear(BlockRotate(x, R)).
  at::Tensor Forward(const at::Tensor& x);
  // The frozen quantized base alone.
  at::Tensor ForwardBase(const at::Tensor& x) const { return base_->Forward(x); }

  // The rotation blocks [rows, b, b] (fp32, differentiable w.r.t. oft_r); see
  // OftRotation::Blocks().
  at::Tensor RotationBlocks() { return rotation_.Blocks(); }
  // The dense block-diagonal [in, in] rotation.
  at::Tensor DenseRotation() { return rotation_.Dense(); }

  // For merged export: Dequant(W) R^T in fp32 [out, in] (no module dropout). The layer
  // itself is unchanged and nothing is requantized. INVALID_ARGUMENT if the result has
  // NaN/Inf; RESOURCE_EXHAUSTED if the weight does not fit in memory.
  absl::StatusOr<at::Tensor> MergeToDense();

  // Bytes held by the frozen base: NF4 codes + absmax (+ double-quant state) + bias.
  int64_t BaseWeightBytes() const { return base_->BaseWeightBytes(); }

  void SetTraining(bool training) { rotation_.SetTraining(training); }
  bool training() const { return rotation_.training(); }

  // Trainable tensors: oft_r, plus the bias when config.bias != kNone.
  std::vector<at::Tensor> TrainableParameters() const;

  at::Tensor& oft_r() { return rotation_.oft_r(); }
  const Nf4Linear& base() const { return *base_; }
  const OftConfig& config() const { return rotation_.config(); }
  const OftBlockLayout& layout() const { return rotation_.layout(); }

 private:
  QoftLinear(std::unique_ptr<Nf4Linear> base, OftRotation rotation);

  std::unique_ptr<Nf4Linear> base_;
  OftRotation rotation_;
};

}  // namespace oft

#endif  // OFT_SERVER_QUANT_QOFT_LINEAR_H_
