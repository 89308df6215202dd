// Key/value storage shared by the rows of a serving batch, so that a decode step attends
// over all its rows with one attention call per layer instead of one call per row.
//
// Layout: per layer, one keys and one values tensor [slots, kv_heads, capacity, head_dim]
// in the model's dtype on its device. A row holds one slot (Acquire / Release); its KvCache
// names the pool and the slot (llama.h), and LlamaModel::ForwardBatch writes the row's keys
// and values there instead of into KvCache::keys / values.
//
// Memory: the slot count and the capacity (tokens) grow geometrically, for every slot at
// once, so the pool holds about (slots ever held at once) x (the longest row) entries, like
// a static cache; the owner calls Clear() when no row runs. Entries past a row's length are
// finite (zero at allocation, and a slot is zeroed when a new row starts writing it) so the
// batched attention can mask them without a 0 * NaN.
//
// Thread-compatibility: one thread (the serving engine's) uses a pool and the caches that
// name it. Throws c10::Error from the tensor operations (hot path). LlamaModel::ForwardBatch
// uses PlanPooledDecode / PooledDecodeAttention below; callers only Acquire, Release, Clear.
#ifndef OFT_SERVER_MODEL_KV_POOL_H_
#define OFT_SERVER_MODEL_KV_POOL_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "ATen/core/Tensor.h"
#include "c10/core/Device.h"

namespace oft {

class KvPool {
 public:
  KvPool() = default;
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  // The lowest free slot, now held.
  int64_t Acquire();
  // Frees `slot` (no-op for a slot that is not held, e.g. after Clear()).
  void Release(int64_t slot);
  // Slots held now, and the number of slot indices in use (highest held + 1; 0 if none).
  int64_t held() const;
  int64_t span() const;
  // Whether `slot` is held now.
  bool holds(int64_t slot) const;
  // Frees the storage and forgets every slot.
  void Clear();
  // Bytes of key/value storage allocated now (all layers).
  int64_t bytes() const;

  // Writes keys / values [1, kv_heads, t, head_dim] of `slot` at tokens [past, past + t)
  // of layer `layer`, growing the storage when needed. past == 0 starts a new row in the
  // slot: its old entries are zeroed first.
  void Write(int64_t layer, int64_t slot, int64_t past, const at::Tensor& keys,
             const at::Tensor& values);
  // Grows layer `layer`'s storage (keeping its contents) to at least `slots` slots and
  // `tokens` positions, shaped and typed like `like` [n, kv_heads, t, head_dim].
  void Reserve(int64_t layer, int64_t slots, int64_t tokens, const at::Tensor& like);
  // The layer's storage [slots, kv_heads, capacity, head_dim]; undefined before any write.
  const at::Tensor& keys(int64_t layer) const { return keys_[layer]; }
  const at::Tensor& values(int64_t layer) const { return values_[layer]; }
  at::Tensor& mutable_keys(int64_t layer) { return keys_[layer]; }
  at::Tensor& mutable_values(int64_t layer) { return values_[layer]; }

 private:
  std::vector<bool> held_;
  std::vector<at::Tensor> keys_, values_;
};

// One decode step of B rows in slots of one pool, each row one new token after `past`
// cached ones: every layer writes the B new keys/values with one indexed copy each and
// attends once over the first `span` slots (the batch's highest slot + 1) and `keys` key
// positions (the longest row's), under `mask` [span, 1, 1, keys] (true: a key the slot's
// row may see: its own keys, inside the sliding window when there is one; a slot no row
// uses sees its first key only, its output is discarded). `slot_index` [B] names each row's
// slot, `past_index` [B] the position its new token is written at; rows are scattered to
// slots and gathered back unless they are slots 0..B-1 in order (`identity`).
struct PooledDecode {
  KvPool* pool = nullptr;  // null: no pooled decode
  bool identity = false;
  int64_t span = 0, keys = 0;
  std::vector<int64_t> slots, past;         // per row, on the host
  at::Tensor slot_index, past_index, mask;  // on the model's device
};

// The plan for rows in `slots` with `past` cached tokens each (the same length), on
// `device`; `window`: the model's sliding window (keys older than `window` positions behind
// the query are masked), or none. Throws c10::Error for a null pool, no rows, a negative or
// repeated slot, a slot not held, or mismatched lengths.
PooledDecode PlanPooledDecode(KvPool* pool, std::vector<int64_t> slots, std::vector<int64_t> past,
                              std::optional<int64_t> window, const c10::Device& device);

// Layer `layer` of the step: writes k / v [B, kv_heads, 1, head_dim] into the rows' slots
// and returns softmax(q K^T * scale) V over each row's own (unmasked) keys,
// [B, heads, 1, head_dim] for q [B, heads, 1, head_dim] (grouped-query attention when
// heads > kv_heads). `scale` nullopt: 1/sqrt(d); `softcap`: the family's attention logit
// soft-cap (decoder_ops.h Attend). One attention call whatever B is.
at::Tensor PooledDecodeAttention(const PooledDecode& plan, int64_t layer, const at::Tensor& q,
                                 const at::Tensor& k, const at::Tensor& v,
                                 std::optional<double> scale = std::nullopt,
                                 std::optional<double> softcap = std::nullopt);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_KV_POOL_H_
