// The weights of a Hugging Face model directory: either one `model.safetensors` or a
// sharded checkpoint described by `model.safetensors.index.json`
// ({"metadata": {...}, "weight_map": {tensor name: shard file name}}).
//
// Opening validates everything up front: the index is well formed, every shard name is a
// plain file name inside the directory (no "/", "\", "." or ".." — a hostile index cannot
// make us read elsewhere), every shard opens as a valid safetensors file, and every mapped
// tensor is present in its shard. Shards are memory-mapped (see SafetensorsFile).
#ifndef OFT_SERVER_MODEL_CHECKPOINT_H_
#define OFT_SERVER_MODEL_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/safetensors.h"

namespace oft {

inline constexpr char kSafetensorsWeightsName[] = "model.safetensors";
inline constexpr char kSafetensorsIndexName[] = "model.safetensors.index.json";

// Immutable after Open(); all const methods are thread-safe.
class Checkpoint {
 public:
  // Per-dtype totals for DtypeSummary().
  struct DtypeStats {
    int64_t tensors = 0;
    int64_t elements = 0;
    int64_t bytes = 0;
  };

  // Opens the checkpoint in `dir`; the index takes precedence over a single file when both
  // exist (as in transformers). Errors:
  //   NOT_FOUND         `dir` has neither model.safetensors nor the index, or a shard the
  //                     index names is missing
  //   INVALID_ARGUMENT  malformed index (not JSON, no "weight_map" object, a non-string or
  //                     unsafe shard name, a tensor absent from its shard) or a malformed
  //                     safetensors file; the message names the file and tensor
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool sharded() const { return sharded_; }
  // Shard file names (a single entry for an unsharded checkpoint), sorted.
  std::vector<std::string> shard_files() const;

  // All tensor names, sorted.
  const std::vector<std::string>& names() const { return names_; }
  bool Has(const std::string& name) const { return where_.count(name) != 0; }

  // Header entry of `name`; NOT_FOUND naming the directory and tensor when absent.
  absl::StatusOr<const SafetensorsTensorInfo*> Info(const std::string& name) const;

  // The tensor on the CPU (see SafetensorsFile::Tensor for `copy`). Include
  // safetensors_torch.h (for the complete at::Tensor) to call it.
  // Errors: NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED as SafetensorsFile::Tensor.
  absl::StatusOr<at::Tensor> Tensor(const std::string& name, bool copy = true) const;

  // Dtype name ("BF16", ...) -> totals over all tensors.
  std::map<std::string, DtypeStats> DtypeSummary() const;

 private:
  Checkpoint() = default;

  std::string dir_;
  bool sharded_ = false;
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_;  // file name -> file
  std::map<std::string, const SafetensorsFile*> where_;              // tensor -> its shard
  std::vector<std::string> names_;
};

namespace internal {
// True when `name` can be used as a file name directly inside a directory: non-empty, not
// "." or "..", and free of '/', '\\' and NUL.
bool IsPlainFileName(const std::string& name);
}  // namespace internal

}  // namespace oft

#endif  // OFT_SERVER_MODEL_CHECKPOINT_H_
