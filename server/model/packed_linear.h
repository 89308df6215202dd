// A frozen fp32 Linear whose weight is packed once for MKL's packed GEMM
// (cblas_sgemm_pack once, cblas_sgemm_compute per call), for decode-time matmuls on the CPU.
//
// Why: at::linear with few rows (a decode step has one row per request) spends much of its
// time in MKL re-packing the weight panel on every call; a weight packed once skips that.
// The packed layout is MKL's own and depends on the ISA MKL runs (set MKL_ENABLE_INSTRUCTIONS
// before the first MKL call to constrain it), so a PackedLinear is built and used in one
// process.
//
// Availability: the MKL symbols are looked up as weak symbols in the process (LibTorch's
// libtorch_cpu bundles MKL and exports them). Where they are absent, Available() is false and
// Create() returns FAILED_PRECONDITION; callers keep at::linear.
//
// Thread-safety: immutable after Create(); Forward() may run on any number of threads at
// once. Memory: the packed buffer (about the weight's size) is held in addition to the
// weight, which the caller keeps.
#ifndef OFT_SERVER_MODEL_PACKED_LINEAR_H_
#define OFT_SERVER_MODEL_PACKED_LINEAR_H_

#include <cstdint>
#include <memory>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"

namespace oft {

class PackedLinear {
 public:
  // Whether MKL's packed GEMM is present in this process.
  static bool Available();

  // Packs `weight` [out, in] (fp32, CPU; copied, so the caller may free or change it later)
  // with optional `bias` [out] (fp32, CPU; undefined = none). Calls with at most `max_rows`
  // rows use the packed weight (Handles()). Errors: FAILED_PRECONDITION (MKL packed GEMM not
  // available), INVALID_ARGUMENT (dtype, device, shapes or max_rows < 1, naming them).
  static absl::StatusOr<std::unique_ptr<PackedLinear>> Create(const at::Tensor& weight,
                                                              const at::Tensor& bias,
                                                              int64_t max_rows);

  // True when Forward() takes `x`: fp32 on the CPU, last dim == in_features(), at most
  // max_rows() rows (the product of the leading dims), no autograd needed.
  bool Handles(const at::Tensor& x) const;
  // x [..., in] -> [..., out] = x W^T + b. Only for inputs Handles() accepts.
  at::Tensor Forward(const at::Tensor& x) const;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  int64_t max_rows() const { return max_rows_; }
  // Bytes of the packed buffer and the bias copy.
  int64_t bytes() const;

 private:
  PackedLinear() = default;
  int64_t in_ = 0, out_ = 0, max_rows_ = 0;
  at::Tensor packed_;  // uint8, MKL's packed B = W^T
  at::Tensor bias_;    // [out] fp32 or undefined
};

class LlamaModel;

// Gives every dense fp32 CPU Linear of `model` (lm_head included; NF4 ones skipped) a packed
// copy of its weight for inputs of at most `max_rows` rows (AdaptedLinear::set_packed).
// Returns the bytes added. Not while the model runs Forward. Errors: as Create (nothing is
// changed then); OK with 0 bytes on a non-CPU or non-fp32 model.
absl::StatusOr<int64_t> PackLinearsForDecode(LlamaModel& model, int64_t max_rows);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_PACKED_LINEAR_H_
