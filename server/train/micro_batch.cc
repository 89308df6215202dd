#include "server/train/micro_batch.h"

#include "ATen/ATen.h"

namespace oft {
namespace {

constexpr int64_t kIgnoreIndex = -100;

// True when no row has padding or a second document.
bool OneDocumentPerRow(const Batch& b) {
  for (int64_t r = 0; r < b.rows; ++r) {
    const int32_t* doc = b.document_ids.data() + r * b.seq_len;
    for (int64_t t = 0; t < b.seq_len; ++t) {
      if (doc[t] < 0 || doc[t] != doc[0]) return false;
    }
  }
  return true;
}

}  // namespace

MicroBatch ToMicroBatch(const Batch& b, const c10::Device& device) {
  const int64_t n = b.rows * b.seq_len;
  at::Tensor host = at::empty({4, b.rows, b.seq_len},
                              at::TensorOptions().dtype(at::kLong).pinned_memory(device.is_cuda()));
  int64_t* p = host.data_ptr<int64_t>();
  MicroBatch m;
  for (int64_t i = 0; i < n; ++i) {
    p[i] = b.ids[i];
    p[n + i] = b.position_ids[i];
    p[2 * n + i] = b.document_ids[i];
    p[3 * n + i] = b.loss_mask[i];
    m.tokens += b.document_ids[i] >= 0;
    m.trainable += b.loss_mask[i];
  }
  const at::Tensor on_device = device.is_cpu() ? host : host.to(device, /*non_blocking=*/true);
  m.ids = on_device[0];
  m.position_ids = on_device[1];
  if (!OneDocumentPerRow(b)) m.document_ids = on_device[2];
  m.loss_mask = on_device[3].to(at::kBool);
  return m;
}

at::Tensor SumMaskedLoss(const LlamaModel& model, const MicroBatch& m, const ForwardOptions& base) {
  ForwardOptions fo = base;
  fo.position_ids = m.position_ids;
  fo.document_ids = m.document_ids;
  // Position t predicts token t + 1 where that token is trained; the last position predicts
  // nothing. The loss never builds the [B, T, V] logits (LlamaModel::CausalLmLoss).
  const int64_t T = m.ids.size(1);
  at::Tensor targets = at::full_like(m.ids, kIgnoreIndex);
  if (T > 1) {
    targets.narrow(1, 0, T - 1)
        .copy_(m.ids.narrow(1, 1, T - 1)
                   .masked_fill(m.loss_mask.narrow(1, 1, T - 1).logical_not(), kIgnoreIndex));
  }
  return model.CausalLmLoss(m.ids, targets, fo, kIgnoreIndex);
}

}  // namespace oft
