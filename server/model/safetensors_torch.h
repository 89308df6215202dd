// at::Tensor side of the safetensors support: include this header to call
// SafetensorsFile::Tensor() or WriteSafetensors(). Kept apart from safetensors.h so that
// code needing only the header metadata does not compile LibTorch headers.
#ifndef OFT_SERVER_MODEL_SAFETENSORS_TORCH_H_
#define OFT_SERVER_MODEL_SAFETENSORS_TORCH_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "c10/core/ScalarType.h"
#include "server/model/safetensors.h"

namespace oft {

// LibTorch dtype of a safetensors dtype (always defined).
c10::ScalarType ToScalarType(SafetensorsDtype dtype);
// Safetensors dtype of a LibTorch dtype; INVALID_ARGUMENT for complex, float8, quantized
// and other dtypes the format subset here does not carry.
absl::StatusOr<SafetensorsDtype> FromScalarType(c10::ScalarType type);

// Writes `tensors` (any device, any strides: each is copied to a contiguous CPU tensor
// first) with `metadata` as "__metadata__" — e.g. {{"format", "pt"}} for PEFT's
// adapter_model.safetensors. Atomic and sorted exactly as WriteSafetensorsRaw().
// Errors: INVALID_ARGUMENT (undefined or sparse tensor, unsupported dtype, empty or
// duplicate name), RESOURCE_EXHAUSTED (copy failed for memory), file-system errors as in
// WriteSafetensorsRaw(). Thread-safe.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace oft

#endif  // OFT_SERVER_MODEL_SAFETENSORS_TORCH_H_
