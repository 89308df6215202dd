// The serving side of LlamaModel: adapters prepared for serving, the per-row adapter
// selection of a batch, and ServingBatch, the per-row state of one LlamaModel::ForwardBatch.
//
// Serving never attaches adapters to the model: a ServingAdapter holds the rotation blocks
// built once from an adapter's packed parameters, an AdapterBatch says which of them rotates
// each row, and ForwardBatch runs the shared base model with them. Training uses the other
// mechanism (LlamaModel::AddAdapter / SetActiveAdapters and LlamaModel::Forward); the two do
// not mix: ForwardBatch never applies the active adapters, Forward never takes per-row ones.
#ifndef OFT_SERVER_MODEL_SERVING_BATCH_H_
#define OFT_SERVER_MODEL_SERVING_BATCH_H_

#include <cstdint>
#include <vector>

#include "ATen/core/Tensor.h"
#include "server/model/served_rotations.h"
#include "server/oft/config.h"

namespace oft {

class LlamaModel;
struct KvCache;

// An adapter prepared for serving (LlamaModel::PrepareServingAdapter): the rotation blocks
// of every Linear it targets, built once from the packed parameters (inference: no grad, no
// module dropout, COFT projection applied), never attached to the model. Immutable, so any
// number of threads and batches may share it; its memory is freed with the last reference.
//
// The blocks' served form depends on the model:
//   fp32 model on the CPU, on a kernel path that converts fp16 in hardware (AVX2, AVX-512:
//     cpu::ConvertsHalfInHardware): D = R - I in fp16 (delta() is true). A decode row reads
//     its adapter's blocks from memory at every Linear, so with many adapters in a batch the
//     bytes per step, not the FLOPs, set the cost; fp16 halves them. Holding R - I rather
//     than R keeps the identity exact and gives each entry of the adapter's own contribution
//     fp16's 11-bit significand (relative error <= 2^-11 per entry of R - I). An adapter
//     whose R - I has an entry beyond fp16's range (65504) is refused by
//     PrepareServingAdapter. (On the generic path the conversion costs more compute than
//     the bytes save: docs/benchmarks.md.)
//   otherwise (CUDA, an fp64/bf16/fp16 model, the generic CPU path), or when prepared with
//     ServedRotations::kFp32: R in fp32 (fp64 for an fp64 model).
class ServingAdapter {
 public:
  // Blocks [rows, b, b] of the Linear at `linear_index` in LlamaModel::LinearNames() order,
  // in the served form above; undefined where the adapter does not apply.
  const at::Tensor& blocks(size_t linear_index) const { return blocks_[linear_index]; }
  // True when blocks() hold R - I (oft::GatheredBlockRotate's `delta`).
  bool delta() const { return delta_; }
  size_t num_linears() const { return blocks_.size(); }
  // Bytes held by the blocks.
  int64_t bytes() const { return bytes_; }
  const OftConfig& config() const { return config_; }

 private:
  friend class LlamaModel;
  std::vector<at::Tensor> blocks_;
  bool delta_ = false;
  int64_t bytes_ = 0;
  OftConfig config_;
};

// Which adapter rotates each row of a serving forward pass (ServingBatch::adapters).
// Made by LlamaModel::MakeAdapterBatch once per batch composition and reused across decode
// steps. It copies the blocks it needs (stacked per Linear), so it does not keep the
// ServingAdapters alive. Or assembled by FromGroups from stacks the caller keeps (the
// serving engine's cache). Immutable; thread-compatible.
class AdapterBatch {
 public:
  // One block size's adapters at one Linear: stacked blocks and each row's index into them.
  struct Group {
    at::Tensor rotations;  // [A, r, b, b] on the model's device: ServingAdapter::blocks()
    at::Tensor row_index;  // [B] int64 on that device: index into rotations, -1 = not rotated
    bool delta = false;    // rotations hold R - I (ServingAdapter::delta())
  };
  AdapterBatch() = default;
  // `per_linear` has one entry per Linear of the model (LinearNames() order; empty = no row
  // adapted there); every group's row_index has `rows` entries, and each row appears in at
  // most one group per Linear. The tensors are shared, not copied.
  static AdapterBatch FromGroups(int64_t rows, std::vector<std::vector<Group>> per_linear);
  int64_t rows() const { return rows_; }
  // Bytes held by the stacked blocks.
  int64_t bytes() const;

 private:
  friend class LlamaModel;
  int64_t rows_ = 0;
  std::vector<std::vector<Group>> per_linear_;  // by Linear index; empty: no row adapted
};

// The per-row state of one serving forward pass (LlamaModel::ForwardBatch): every row has
// its own KV cache, continues it at its own position with its own causal mask, attends only
// to itself, and is rotated by its own adapter (or none). The caller keeps the caches and the
// adapter batch alive for the call.
struct ServingBatch {
  // One cache per row, not null; each grows by its row's new tokens. Required (>= 1 row).
  // When every row's cache is a slot of one KvPool (KvCache::pool, kv_pool.h) and each row
  // has one new token (a decode step, not packed), every layer attends once for all rows;
  // otherwise once per row.
  std::vector<KvCache*> caches;
  // Empty: ids is [rows, T], T new tokens per row. Otherwise rows of different lengths
  // packed into one sequence: ids is [1, sum(lengths)] and row i's tokens are the i-th slice
  // (one entry per cache, each > 0); the token-wise work (embedding, norms, every Linear)
  // runs once over all rows' tokens.
  std::vector<int64_t> lengths;
  // Per-row adapters (adapters->rows() == number of rows); null: every row runs the base
  // model.
  const AdapterBatch* adapters = nullptr;
  // Only each row's last position's logits: [rows, 1, vocab] (generation).
  bool logits_for_last_only = false;
};

}  // namespace oft

#endif  // OFT_SERVER_MODEL_SERVING_BATCH_H_
