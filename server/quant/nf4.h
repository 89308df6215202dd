// NF4 (4-bit NormalFloat, QLoRA) blockwise quantization of frozen base weights.
//
// Format (bit-compatible with bitsandbytes' `quant_type="nf4"` codes and absmax):
//   * The weight is flattened row-major and cut into blocks of `block_size` (64) values;
//     the last block is padded with zeros.
//   * absmax[k] = max |w| over block k (fp32).
//   * Each value is normalised, v = w * (1 / absmax[k]) in fp32 (bitsandbytes multiplies
//     by the reciprocal too), and mapped to the nearest of the 16 NF4 levels
//     (kNf4Codebook). Ties: v is compared against the 15 midpoints between consecutive
//     levels (computed in double, rounded to fp32) and the code is the number of
//     midpoints strictly below v, so a value exactly on a midpoint takes the LOWER
//     level, as bitsandbytes' `x > threshold` decision tree does. NaN/Inf are rejected.
//     An all-zero block has absmax 0 and every code is 7 (level 0.0).
//   * Two 4-bit codes per byte, the first (even-index) element in the HIGH nibble.
//   * Decoding: w' = kNf4Codebook[code] * absmax[k], one fp32 multiply, then a cast to
//     the requested dtype (round to nearest even). CPU and CUDA decode bit-identically.
//
// Optional double quantization (QLoRA §3): the fp32 absmax vector is itself quantized.
//   offset = mean(absmax); c = absmax - offset, in groups of 256 (last group padded);
//   scale[g] = max |c| over group g / 127; q = round_half_even(c / scale[g]) in
//   [-127, 127] stored as int8 (a symmetric linear int8, NOT bitsandbytes' dynamic
//   8-bit map); decoded absmax = fma(q, scale[g], offset) in fp32.
//   Error bound: |decoded - absmax| <= scale[g] / 2 (half a quantization step of its
//   group) plus fp32 rounding of a few ulp(absmax) (tested: <= scale[g]/2 * (1 + 1e-5)
//   + 4 * FLT_EPSILON * absmax); each decoded weight moves by at most that much extra,
//   since every NF4 level has magnitude <= 1. Storage drops from 32 to 8 bits per block
//   (+4 bytes per 256 blocks, +4 for the offset), i.e. from 0.5 to ~0.127 bits per
//   weight with 64-blocks.
//
// Quantize() runs on the weight's device (vectorised ATen); Dequantize() is the
// dispatcher op `oft::nf4_dequantize` with a CPU reference kernel and, when built with
// CUDA, a CUDA kernel (server/quant/cuda/).
#ifndef OFT_SERVER_QUANT_NF4_H_
#define OFT_SERVER_QUANT_NF4_H_

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "server/quant/nf4_codebook.h"  // kNf4Codebook

namespace oft {

inline constexpr int64_t kNf4DefaultBlockSize = 64;

struct Nf4Options {
  int64_t block_size = kNf4DefaultBlockSize;  // values per absmax block; even, in [2, 4096]
  bool double_quant = false;                  // quantize the absmax values to int8 (QLoRA DQ)
};

// A quantized tensor. All tensors live on one device; the struct is a cheap handle
// (tensors are reference counted), copies share storage.
struct Nf4Tensor {
  at::Tensor codes;         // uint8 [num_blocks * block_size / 2], high nibble first
  at::Tensor absmax;        // fp32 [num_blocks]; int8 [num_blocks] when double_quant
  at::Tensor absmax_scale;  // fp32 [ceil(num_blocks / 256)] when double_quant, else undefined
  float absmax_offset = 0;  // mean of the absmax values when double_quant, else 0
  std::vector<int64_t> shape;               // shape of the original weight
  at::ScalarType dtype = at::kFloat;        // dtype of the original weight
  int64_t block_size = kNf4DefaultBlockSize;
  bool double_quant = false;

  int64_t numel() const;
  int64_t num_blocks() const;  // ceil(numel / block_size)
  // Bytes held: codes + absmax (+ absmax_scale + 4 for the offset with double_quant).
  int64_t StorageBytes() const;
  // The same tensor on `device` (copies the component tensors).
  Nf4Tensor To(const at::Device& device) const;
};

// Quantizes `weight` (any shape, fp32/bf16/fp16/fp64, any device; the result is on the
// same device). Errors: INVALID_ARGUMENT for an undefined or empty tensor, a
// non-floating dtype, non-finite values, or a bad option (the message names it).
absl::StatusOr<Nf4Tensor> Quantize(const at::Tensor& weight, const Nf4Options& options = {});

// Decodes to a tensor of q.shape in `dtype` (default q.dtype; fp32/bf16/fp16/fp64) on
// q's device. Throws c10::Error on a malformed Nf4Tensor (hot path, like an ATen op);
// callers at module boundaries wrap it with oft::TorchCall.
at::Tensor Dequantize(const Nf4Tensor& q, std::optional<at::ScalarType> dtype = std::nullopt);

// The decoded fp32 absmax [num_blocks] (identity without double quant). Throws c10::Error.
at::Tensor DequantizeAbsmax(const Nf4Tensor& q);

// True when the CUDA dequantization kernel was compiled into this binary.
bool Nf4CudaKernelBuilt();

namespace internal {
// The scalar spec of the code assignment: the number of midpoints strictly below v.
uint8_t Nf4Code(float normalized);
// The 15 midpoints between consecutive levels, in double rounded to fp32.
const std::array<float, 15>& Nf4Midpoints();
}  // namespace internal

}  // namespace oft

#endif  // OFT_SERVER_QUANT_NF4_H_
