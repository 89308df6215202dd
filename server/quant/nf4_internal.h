// Internal to server/quant: the argument contract of the `oft::nf4_dequantize` operator,
// shared by its CPU reference (nf4.cc) and its CUDA kernel (cuda/nf4_cuda.cc).
//
//   oft::nf4_dequantize(Tensor codes, Tensor absmax, Tensor? absmax_scale,
//                       float absmax_offset, int numel, int block_size,
//                       ScalarType dtype) -> Tensor [numel]
#ifndef OFT_SERVER_QUANT_NF4_INTERNAL_H_
#define OFT_SERVER_QUANT_NF4_INTERNAL_H_

#include <cstdint>
#include <optional>
#include <utility>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"

namespace oft::internal {

// TORCH_CHECKs the operator's arguments:
//   codes: uint8 [ceil(numel / block_size) * block_size / 2], contiguous
//   absmax: fp32 [num_blocks] (no scale) or int8 [num_blocks] (with absmax_scale)
//   absmax_scale: fp32 [ceil(num_blocks / 256)], contiguous
//   all on one device; dtype one of fp32/bf16/fp16/fp64; block_size even and > 0.
// Returns the number of blocks.
int64_t CheckNf4DequantizeArgs(const at::Tensor& codes, const at::Tensor& absmax,
                               const std::optional<at::Tensor>& absmax_scale, int64_t numel,
                               int64_t block_size, at::ScalarType dtype);

#ifdef OFT_WITH_CUDA
// Defined in cuda/nf4_cuda.cc; referencing it links that object (and its CUDA
// registration) into every binary that calls Dequantize.
bool Nf4CudaLinked();
#endif

}  // namespace oft::internal

#endif  // OFT_SERVER_QUANT_NF4_INTERNAL_H_
