#include "server/train/data_parallel.h"

#include <algorithm>

#include "ATen/ATen.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"

namespace oft {

Batch RankShard(const Batch& global, int rank, int64_t per_rank) {
  const int64_t begin = std::min<int64_t>(global.rows, rank * per_rank);
  const int64_t end = std::min<int64_t>(global.rows, begin + per_rank);
  Batch b;
  b.rows = end - begin;
  b.seq_len = global.seq_len;
  b.epoch = global.epoch;
  const int64_t lo = begin * global.seq_len, hi = end * global.seq_len;
  b.ids.assign(global.ids.begin() + lo, global.ids.begin() + hi);
  b.loss_mask.assign(global.loss_mask.begin() + lo, global.loss_mask.begin() + hi);
  b.position_ids.assign(global.position_ids.begin() + lo, global.position_ids.begin() + hi);
  b.document_ids.assign(global.document_ids.begin() + lo, global.document_ids.begin() + hi);
  b.sequence_indices.assign(global.sequence_indices.begin() + begin,
                            global.sequence_indices.begin() + end);
  return b;
}

absl::StatusOr<std::vector<double>> AllReduceScalars(Collective& group, std::vector<double> values) {
  at::Tensor t = at::from_blob(values.data(), {static_cast<int64_t>(values.size())}, at::kDouble);
  OFT_RETURN_IF_ERROR(group.AllReduceSum(t));
  return values;
}

absl::StatusOr<int64_t> AllReduceGradients(Collective& group, const std::vector<at::Tensor>& params) {
  if (params.empty()) return int64_t{0};
  at::Tensor bucket;
  OFT_RETURN_IF_ERROR(TorchCall("AllReduceGradients", [&] {
    std::vector<at::Tensor> flat;
    flat.reserve(params.size());
    for (const auto& p : params) {
      flat.push_back(p.grad().defined() ? p.grad().reshape({-1}) : at::zeros({p.numel()}, p.options()));
    }
    bucket = at::cat(flat);
  }));
  OFT_RETURN_IF_ERROR(group.AllReduceSum(bucket));
  OFT_RETURN_IF_ERROR(TorchCall("AllReduceGradients", [&] {
    int64_t offset = 0;
    for (const auto& p : params) {
      at::Tensor g = bucket.narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
      if (p.grad().defined()) {
        p.mutable_grad().copy_(g);
      } else {
        p.mutable_grad() = g.clone();
      }
    }
  }));
  return bucket.numel() * static_cast<int64_t>(bucket.element_size());
}

}  // namespace oft
