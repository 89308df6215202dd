#include "server/serving/adapter_batch_cache.h"

#include <algorithm>

#include "ATen/ATen.h"
#include "server/model/host_upload.h"

namespace oft {

AdapterBatchCache::AdapterBatchCache(const LlamaModel& model) : model_(model) {
  for (const std::string& name : model.LinearNames()) {
    // Linear() hands out a mutable pointer; only the shape is read here.
    in_features_.push_back(const_cast<LlamaModel&>(model).Linear(name)->in_features());
  }
  stacks_.resize(in_features_.size());
}

void AdapterBatchCache::Grow(int64_t capacity) {
  bytes_ = 0;
  for (auto& per_size : stacks_) {
    for (auto& [b, stack] : per_size) {
      at::Tensor bigger = at::zeros({capacity, stack.blocks.size(1), b, b}, stack.blocks.options());
      bigger.narrow(0, 0, capacity_).copy_(stack.blocks);
      stack.blocks = bigger;
      bytes_ += bigger.numel() * static_cast<int64_t>(bigger.element_size());
    }
  }
  slots_.resize(capacity);
  last_used_.resize(capacity, 0);
  capacity_ = capacity;
}

void AdapterBatchCache::CopyIn(const ServingAdapter& a, int64_t slot) {
  TORCH_CHECK(a.num_linears() == in_features_.size(), "adapter was prepared for another model");
  for (size_t li = 0; li < in_features_.size(); ++li) {
    const at::Tensor& blk = a.blocks(li);  // [r, b, b], r = d / b or 1 (shared)
    if (!blk.defined()) continue;
    const int64_t b = blk.size(1), d = in_features_[li];
    auto it = stacks_[li].find(b);
    if (it == stacks_[li].end()) {
      Stack s;
      s.blocks = at::zeros({capacity_, d / b, b, b}, blk.options());
      s.delta = a.delta();
      bytes_ += s.blocks.numel() * static_cast<int64_t>(s.blocks.element_size());
      it = stacks_[li].emplace(b, std::move(s)).first;
    }
    TORCH_CHECK(it->second.delta == a.delta() &&
                    it->second.blocks.scalar_type() == blk.scalar_type(),
                "adapter blocks in another served form than the cached ones");
    it->second.blocks[slot].copy_(blk.expand({d / b, b, b}));
    ++copies_;
  }
}

int64_t AdapterBatchCache::SlotFor(const std::shared_ptr<const ServingAdapter>& a,
                                   const std::vector<bool>& in_use) {
  auto it = slot_of_.find(a.get());
  if (it != slot_of_.end()) return it->second;
  // A free slot, else the least recently used one no row of this batch needs.
  int64_t slot = -1;
  for (int64_t s = 0; s < capacity_; ++s) {
    if (in_use[s]) continue;
    if (!slots_[s]) {
      slot = s;
      break;
    }
    if (slot < 0 || last_used_[s] < last_used_[slot]) slot = s;
  }
  if (slot < 0) {
    slot = capacity_;
    Grow(std::max<int64_t>(1, 2 * capacity_));
  }
  if (slots_[slot]) slot_of_.erase(slots_[slot].get());
  slots_[slot] = a;
  slot_of_[a.get()] = slot;
  CopyIn(*a, slot);
  return slot;
}

void AdapterBatchCache::Clear() {
  for (auto& per_size : stacks_) per_size.clear();
  slots_.clear();
  last_used_.clear();
  slot_of_.clear();
  capacity_ = 0;
  bytes_ = 0;
}

AdapterBatch AdapterBatchCache::Make(const std::vector<std::shared_ptr<const ServingAdapter>>& rows) {
  const int64_t B = static_cast<int64_t>(rows.size());
  ++tick_;
  // Slots of this batch's adapters (those already cached are pinned first, so a new one
  // cannot take their slot).
  std::vector<bool> in_use(capacity_, false);
  for (const auto& a : rows) {
    if (!a) continue;
    auto it = slot_of_.find(a.get());
    if (it != slot_of_.end()) in_use[it->second] = true;
  }
  // Room for every distinct adapter of the batch at once (one growth, not one per doubling).
  std::vector<const ServingAdapter*> distinct;
  for (const auto& a : rows) {
    if (a && std::find(distinct.begin(), distinct.end(), a.get()) == distinct.end()) distinct.push_back(a.get());
  }
  if (static_cast<int64_t>(distinct.size()) > capacity_) {
    Grow(std::max<int64_t>(static_cast<int64_t>(distinct.size()), 2 * capacity_));
    in_use.resize(capacity_, false);
  }
  std::vector<int64_t> slot(B, -1);
  for (int64_t r = 0; r < B; ++r) {
    if (!rows[r]) continue;
    slot[r] = SlotFor(rows[r], in_use);
    in_use.resize(capacity_, false);
    in_use[slot[r]] = true;
    last_used_[slot[r]] = tick_;
  }
  // One row-index vector per (Linear, block size) with any adapted row; uploaded together.
  std::vector<std::vector<AdapterBatch::Group>> per_linear(in_features_.size());
  std::vector<std::pair<size_t, const Stack*>> groups;
  std::vector<int64_t> index;
  for (size_t li = 0; li < in_features_.size(); ++li) {
    for (const auto& [b, stack] : stacks_[li]) {
      std::vector<int64_t> idx(B, -1);
      bool any = false;
      for (int64_t r = 0; r < B; ++r) {
        if (!rows[r]) continue;
        const at::Tensor& blk = rows[r]->blocks(li);
        if (blk.defined() && blk.size(1) == b) {
          idx[r] = slot[r];
          any = true;
        }
      }
      if (!any) continue;
      groups.emplace_back(li, &stack);
      index.insert(index.end(), idx.begin(), idx.end());
    }
  }
  if (!groups.empty()) {
    const int64_t G = static_cast<int64_t>(groups.size());
    at::Tensor host = at::tensor(index, at::kLong).view({G, B});
    const c10::Device device = model_.device();
    at::Tensor dev = UploadToDevice(host, device);
    for (int64_t g = 0; g < G; ++g) {
      AdapterBatch::Group group;
      group.rotations = groups[g].second->blocks;
      group.delta = groups[g].second->delta;
      group.row_index = dev[g];
      per_linear[groups[g].first].push_back(std::move(group));
    }
  }
  return AdapterBatch::FromGroups(B, std::move(per_linear));
}

}  // namespace oft
