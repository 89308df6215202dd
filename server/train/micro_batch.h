// One training micro-batch on the model's device, and the masked next-token loss over it.
//
// Upload: the four [rows, seq_len] arrays of a Batch (ids, positions, document ids, loss
// mask) are written into one host buffer, pinned when the device is CUDA, and moved with
// one non-blocking copy; the host never waits for it. The token counts are taken on the
// host. document_ids stay undefined when every row is one document without padding: the
// model then needs no mask and attention runs causal (ForwardOptions).
//
// Loss: cross-entropy in fp32 of logits at position i-1 against ids[i] for every i with
// loss_mask[i] == 1, summed (not averaged); other positions are ignored (ignore_index),
// so no host synchronisation (nonzero, item) happens.
#ifndef OFT_SERVER_TRAIN_MICRO_BATCH_H_
#define OFT_SERVER_TRAIN_MICRO_BATCH_H_

#include <cstdint>

#include "ATen/core/Tensor.h"
#include "c10/core/Device.h"
#include "server/data/batching.h"
#include "server/model/llama.h"

namespace oft {

struct MicroBatch {
  at::Tensor ids;           // [B, T] int64
  at::Tensor loss_mask;     // [B, T] bool
  at::Tensor position_ids;  // [B, T] int64
  at::Tensor document_ids;  // [B, T] int64, -1 = padding; undefined: one document per row, no padding
  int64_t tokens = 0;       // non-padding tokens
  int64_t trainable = 0;    // targets (loss_mask == 1)
};

// `b` on `device` (see above). Throws c10::Error like any op.
MicroBatch ToMicroBatch(const Batch& b, const c10::Device& device);

// Sum over the micro-batch of the masked next-token cross-entropy, a 0-dim fp32 tensor on
// the model's device. `base` supplies the non-batch forward options (e.g. layer_runner).
at::Tensor SumMaskedLoss(const LlamaModel& model, const MicroBatch& m, const ForwardOptions& base);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_MICRO_BATCH_H_
