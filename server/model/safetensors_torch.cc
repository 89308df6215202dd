#include "server/model/safetensors_torch.h"

#include <cstdint>
#include <cstring>
#include <memory>

#include "ATen/ops/empty.h"
#include "ATen/ops/from_blob.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/model/checkpoint.h"

namespace oft {

c10::ScalarType ToScalarType(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::kF64: return c10::kDouble;
    case SafetensorsDtype::kF32: return c10::kFloat;
    case SafetensorsDtype::kF16: return c10::kHalf;
    case SafetensorsDtype::kBF16: return c10::kBFloat16;
    case SafetensorsDtype::kI64: return c10::kLong;
    case SafetensorsDtype::kI32: return c10::kInt;
    case SafetensorsDtype::kI16: return c10::kShort;
    case SafetensorsDtype::kI8: return c10::kChar;
    case SafetensorsDtype::kU8: return c10::kByte;
    case SafetensorsDtype::kBool: return c10::kBool;
  }
  return c10::kByte;
}

absl::StatusOr<SafetensorsDtype> FromScalarType(c10::ScalarType type) {
  switch (type) {
    case c10::kDouble: return SafetensorsDtype::kF64;
    case c10::kFloat: return SafetensorsDtype::kF32;
    case c10::kHalf: return SafetensorsDtype::kF16;
    case c10::kBFloat16: return SafetensorsDtype::kBF16;
    case c10::kLong: return SafetensorsDtype::kI64;
    case c10::kInt: return SafetensorsDtype::kI32;
    case c10::kShort: return SafetensorsDtype::kI16;
    case c10::kChar: return SafetensorsDtype::kI8;
    case c10::kByte: return SafetensorsDtype::kU8;
    case c10::kBool: return SafetensorsDtype::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", c10::toString(type), " cannot be stored in safetensors here"));
  }
}

absl::StatusOr<at::Tensor> SafetensorsFile::Tensor(const std::string& name, bool copy) const {
  OFT_ASSIGN_OR_RETURN(const SafetensorsTensorInfo* info, Info(name));
  const uint8_t* src = data_ + info->begin;
  const uint64_t bytes = info->byte_size();
  if (info->dtype == SafetensorsDtype::kBool) {
    // Any byte other than 0/1 is not a valid bool for LibTorch kernels.
    for (uint64_t i = 0; i < bytes; ++i) {
      if (src[i] > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ": tensor '", name, "': BOOL element ", i, " has byte value ",
                         static_cast<int>(src[i]), ", expected 0 or 1"));
      }
    }
  }
  const size_t item = SafetensorsDtypeSize(info->dtype);
  const bool aligned = reinterpret_cast<uintptr_t>(src) % item == 0;
  const auto options = at::TensorOptions().dtype(ToScalarType(info->dtype));
  return TorchCall(absl::StrCat("reading tensor '", name, "' from ", path_), [&]() -> at::Tensor {
    if (!copy && aligned && bytes > 0) {
      // The deleter owns a reference to the mapping: the tensor keeps it mapped.
      std::shared_ptr<const Mapping> keep = mapping_;
      return at::from_blob(const_cast<uint8_t*>(src), info->shape,
                           [keep](void*) mutable { keep.reset(); }, options);
    }
    at::Tensor out = at::empty(info->shape, options);
    if (bytes > 0) std::memcpy(out.data_ptr(), src, bytes);
    return out;
  });
}

// Defined here rather than in checkpoint.cc so that only this file compiles LibTorch headers.
absl::StatusOr<at::Tensor> Checkpoint::Tensor(const std::string& name, bool copy) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": checkpoint has no tensor '", name, "'"));
  }
  return it->second->Tensor(name, copy);
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // contiguous CPU copies, alive until the write finishes
  std::vector<SafetensorsRawTensor> raw;
  keep.reserve(tensors.size());
  raw.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": tensor '", name, "': ", what));
    };
    if (!tensor.defined()) return bad("tensor is undefined");
    if (tensor.layout() != c10::kStrided) return bad("only dense (strided) tensors can be saved");
    auto dtype = FromScalarType(tensor.scalar_type());
    if (!dtype.ok()) return bad(dtype.status().message());
    OFT_ASSIGN_OR_RETURN(at::Tensor cpu, TorchCall(absl::StrCat("writing ", path, ": tensor '", name, "'"), [&] {
                           return tensor.to(c10::kCPU).contiguous();
                         }));
    SafetensorsRawTensor r;
    r.name = name;
    r.dtype = *dtype;
    r.shape.assign(cpu.sizes().begin(), cpu.sizes().end());
    r.data = cpu.numel() > 0 ? cpu.data_ptr() : nullptr;
    r.byte_size = cpu.nbytes();
    raw.push_back(std::move(r));
    keep.push_back(std::move(cpu));
  }
  return WriteSafetensorsRaw(path, raw, metadata);
}

}  // namespace oft
