// The serving engine's cache of stacked adapter blocks, from which it assembles the
// AdapterBatch of each Forward.
//
// Why: LlamaModel::MakeAdapterBatch stacks (copies) every adapter's blocks of every Linear
// and uploads one row index per Linear each time the batch changes, i.e. on every admission
// and every finished request. Here each adapter gets a slot in per-(Linear, block size)
// stacks and its blocks are copied into them once, when it first appears; later batches
// only rebuild the row indices (one upload for all Linears). Adapters no row uses stay in
// their slots (so a returning adapter costs nothing) until a new adapter needs the slot,
// least recently used first; the stacks grow (doubling from 1) only when every slot is in
// use. Clear() drops everything (the engine calls it when no request runs).
//
// Memory: bytes() is what the stacks hold (all slots); the engine reports it to the adapter
// registry, whose memory budget counts it. A cached adapter is kept alive by the cache.
//
// Thread-compatible: one engine thread uses it.
#ifndef OFT_SERVER_SERVING_ADAPTER_BATCH_CACHE_H_
#define OFT_SERVER_SERVING_ADAPTER_BATCH_CACHE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "ATen/core/Tensor.h"
#include "server/model/llama.h"

namespace oft {

class AdapterBatchCache {
 public:
  // `model` is not owned and must outlive the cache.
  explicit AdapterBatchCache(const LlamaModel& model);

  // The batch for `rows` (row i rotated by rows[i]; null = the base model). Every adapter
  // must come from `model`'s PrepareServingAdapter. Throws c10::Error.
  // A batch is valid only until the next Make() or Clear(): Make() may give a slot that
  // only earlier batches use to another adapter, overwriting its blocks in place, so an
  // earlier batch's rows would be rotated by the wrong adapter.
  AdapterBatch Make(const std::vector<std::shared_ptr<const ServingAdapter>>& rows);

  // Drops every slot and stack (an idle engine holds nothing); bytes() becomes 0.
  void Clear();

  // Bytes held by the stacks.
  int64_t bytes() const { return bytes_; }
  // Adapters in slots now.
  int64_t cached_adapters() const { return static_cast<int64_t>(slot_of_.size()); }
  // Block copies made so far (one per adapter per Linear it targets): for tests.
  int64_t copies() const { return copies_; }

 private:
  struct Stack {
    at::Tensor blocks;  // [capacity, d / b, b, b], ServingAdapter::blocks()' form
    bool delta = false;  // ServingAdapter::delta() of every adapter in it
  };
  // Gives `a` a slot (copying its blocks) unless it has one; `in_use` slots are not taken.
  int64_t SlotFor(const std::shared_ptr<const ServingAdapter>& a, const std::vector<bool>& in_use);
  void Grow(int64_t capacity);
  void CopyIn(const ServingAdapter& a, int64_t slot);

  const LlamaModel& model_;
  std::vector<int64_t> in_features_;  // per Linear
  int64_t capacity_ = 0;
  uint64_t tick_ = 0;
  // Per slot: the adapter in it (null = free) and when it was last used.
  std::vector<std::shared_ptr<const ServingAdapter>> slots_;
  std::vector<uint64_t> last_used_;
  std::map<const ServingAdapter*, int64_t> slot_of_;
  // Per Linear: block size -> its stack.
  std::vector<std::map<int64_t, Stack>> stacks_;
  int64_t bytes_ = 0;
  int64_t copies_ = 0;
};

}  // namespace oft

#endif  // OFT_SERVER_SERVING_ADAPTER_BATCH_CACHE_H_
