// Reading and writing the safetensors format (https://huggingface.co/docs/safetensors).
//
// A safetensors file is: 8 bytes little-endian u64 N, N bytes of UTF-8 JSON header, then
// the data region. The header maps tensor names to {dtype, shape, data_offsets} (offsets
// relative to the data region) plus an optional "__metadata__" object of string -> string.
//
// SafetensorsFile memory-maps a file read-only and validates the whole header when it is
// opened, so that every later accessor works on checked spans: a truncated or hostile file
// yields INVALID_ARGUMENT from Open() naming the file, the tensor and the defect, never a
// crash or an out-of-bounds read.
//
// This header is free of LibTorch. Functions that produce or consume at::Tensor are
// declared here with an incomplete at::Tensor (SafetensorsFile::Tensor) or live in
// safetensors_torch.h (WriteSafetensors); include safetensors_torch.h to call them.
#ifndef OFT_SERVER_MODEL_SAFETENSORS_H_
#define OFT_SERVER_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace at {
class Tensor;
}  // namespace at

namespace oft {

// The element types this project reads and writes. Other safetensors dtypes (F8_*, U16,
// U32, U64, C64, ...) are rejected with INVALID_ARGUMENT naming the tensor.
enum class SafetensorsDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32", "BF16", ... as spelled in the header.
absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype);
// Inverse of SafetensorsDtypeName; INVALID_ARGUMENT for any other spelling.
absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name);
// Bytes per element (1 for BOOL).
size_t SafetensorsDtypeSize(SafetensorsDtype dtype);

// One validated header entry.
struct SafetensorsTensorInfo {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // every dim >= 0; [] is a scalar
  int64_t numel = 0;           // product of shape (1 for a scalar)
  uint64_t begin = 0;          // byte offsets into the data region, end - begin ==
  uint64_t end = 0;            //   numel * SafetensorsDtypeSize(dtype)

  uint64_t byte_size() const { return end - begin; }
};

// Largest header Open() accepts (the reference implementation's bound is similar).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// A read-only, memory-mapped, validated safetensors file.
//
// Immutable after Open(); all const methods are safe to call from any thread. The mapping
// is shared with tensors made by Tensor(name, /*copy=*/false), so it stays valid until
// both this object and all such tensors are gone. As with any mmap, a file truncated by
// another process while mapped may raise SIGBUS on access; model files are expected to be
// immutable while in use.
class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors:
  //   NOT_FOUND          the file does not exist
  //   PERMISSION_DENIED  it cannot be opened for reading
  //   INVALID_ARGUMENT   not a regular file, or the header is malformed: length 0, over
  //                      kMaxSafetensorsHeaderBytes or past the end of the file; not a JSON
  //                      object; bad "__metadata__"; an entry with an unsupported dtype, a
  //                      negative or overflowing shape, offsets out of the data region,
  //                      begin > end, a byte length that disagrees with shape and dtype,
  //                      or tensors that overlap or leave a hole in the data region.
  //   INTERNAL           other I/O failures (fstat, mmap)
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }

  // Tensor names in file order (ascending data offset; ties by name).
  const std::vector<std::string>& names() const { return names_; }
  bool Has(const std::string& name) const { return index_.count(name) != 0; }

  // The entry for `name` (valid while this object lives); NOT_FOUND naming the file
  // and tensor when absent.
  absl::StatusOr<const SafetensorsTensorInfo*> Info(const std::string& name) const;

  // "__metadata__" (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Start of the data region inside the mapping; `info.begin` is relative to it. Valid
  // while this object lives. Bytes are little-endian and not necessarily aligned.
  const uint8_t* data() const { return data_; }
  uint64_t data_size() const { return data_size_; }
  // Start of `name`'s bytes (byte_size() bytes); NOT_FOUND when absent.
  absl::StatusOr<const uint8_t*> Bytes(const std::string& name) const;

  // The tensor `name` on the CPU with its dtype and shape (defined in
  // safetensors_torch.cc; include safetensors_torch.h to call it).
  //   copy = true:  an owned, contiguous copy.
  //   copy = false: a tensor aliasing the read-only mapping, which it keeps alive. Writing
  //                 to it is undefined (the pages are not writable). Falls back to a copy
  //                 when the bytes are not aligned to the element size.
  // Errors: NOT_FOUND (no such tensor), INVALID_ARGUMENT (a BOOL tensor holding a byte
  // other than 0 or 1), RESOURCE_EXHAUSTED (allocation failed).
  absl::StatusOr<at::Tensor> Tensor(const std::string& name, bool copy = true) const;

 private:
  struct Mapping;
  SafetensorsFile() = default;

  std::string path_;
  std::shared_ptr<const Mapping> mapping_;
  const uint8_t* data_ = nullptr;
  uint64_t data_size_ = 0;
  std::vector<SafetensorsTensorInfo> infos_;  // file order
  std::vector<std::string> names_;            // file order
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// One tensor for WriteSafetensorsRaw: `data` holds exactly
// numel(shape) * SafetensorsDtypeSize(dtype) little-endian bytes and must outlive the call.
struct SafetensorsRawTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t byte_size = 0;
};

// Writes a safetensors file atomically: the bytes go to "<path>.tmp.<pid>.<n>", which is
// fsync'ed and renamed over `path`, then the directory is fsync'ed; on any failure the
// temporary file is removed and `path` is untouched. The header lists tensors with keys
// sorted, is padded with spaces to a multiple of 8 bytes, and the data follows in sorted
// name order. `metadata` becomes "__metadata__" (omitted when empty).
// Errors: INVALID_ARGUMENT (empty or duplicate name, the name "__metadata__", negative
// dim, byte_size disagreeing with shape and dtype, null data with non-zero size);
// NOT_FOUND / PERMISSION_DENIED / INTERNAL from the file system.
// Thread-safe (concurrent writers to the same path: the last rename wins).
absl::Status WriteSafetensorsRaw(const std::string& path,
                                 const std::vector<SafetensorsRawTensor>& tensors,
                                 const std::map<std::string, std::string>& metadata);


}  // namespace oft

#endif  // OFT_SERVER_MODEL_SAFETENSORS_H_
