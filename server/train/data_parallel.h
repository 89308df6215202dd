// What the Trainer does differently when it is one rank of a data-parallel group
// (TrainerParams::collective): the data shard of a rank and the per-step reductions.
//
// Semantics (one optimizer step, world_size W, per-rank micro-batch B, grad_accum A):
//   * The global batch of a micro-step is the next W*B sequences of one BatchIterator that
//     every rank builds alike (same data, seed, options); rank r takes rows [r*B, (r+1)*B) of
//     it (RankShard). So the ranks see disjoint shards, together exactly what one process
//     with batch W*B sees, and the data cursor (saved in checkpoints) is the same on every
//     rank. A short last batch of an epoch may leave a rank fewer or no rows.
//   * The loss is normalised by the trainable tokens of the whole global step (summed over
//     ranks before the forward pass), so summing the ranks' gradients gives exactly the
//     gradient of one process over the global batch, up to the order of the additions.
//   * Gradients: one all-reduce (sum) of one flat fp32 bucket of every adapter gradient,
//     then the global norm, clipping and AdamW, identical on every rank.
// Thread-compatibility: as the Trainer.
#ifndef OFT_SERVER_TRAIN_DATA_PARALLEL_H_
#define OFT_SERVER_TRAIN_DATA_PARALLEL_H_

#include <cstdint>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "server/data/batching.h"
#include "server/dist/collective.h"

namespace oft {

// Rows [rank*per_rank, (rank+1)*per_rank) of `global`, clipped to its rows (maybe none).
Batch RankShard(const Batch& global, int rank, int64_t per_rank);

// Sums `values` over the ranks (fp64, exact for integer counts below 2^53).
absl::StatusOr<std::vector<double>> AllReduceScalars(Collective& group, std::vector<double> values);

// Replaces every parameter's gradient by its sum over the ranks: one all-reduce of one flat
// bucket (the gradients' dtype; an undefined gradient counts as zeros and is defined after).
// Returns the bucket's size in bytes.
absl::StatusOr<int64_t> AllReduceGradients(Collective& group, const std::vector<at::Tensor>& params);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_DATA_PARALLEL_H_
