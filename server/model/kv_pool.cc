#include "server/model/kv_pool.h"

#include <algorithm>
#include <utility>

#include "ATen/ATen.h"
#include "ATen/TensorIndexing.h"
#include "server/model/decoder_ops.h"
#include "server/model/host_upload.h"

namespace oft {

int64_t KvPool::Acquire() {
  for (size_t s = 0; s < held_.size(); ++s) {
    if (!held_[s]) {
      held_[s] = true;
      return static_cast<int64_t>(s);
    }
  }
  held_.push_back(true);
  return static_cast<int64_t>(held_.size()) - 1;
}

void KvPool::Release(int64_t slot) {
  if (slot >= 0 && slot < static_cast<int64_t>(held_.size())) held_[slot] = false;
  while (!held_.empty() && !held_.back()) held_.pop_back();
}

int64_t KvPool::held() const { return std::count(held_.begin(), held_.end(), true); }

int64_t KvPool::span() const { return static_cast<int64_t>(held_.size()); }

bool KvPool::holds(int64_t slot) const { return slot >= 0 && slot < span() && held_[slot]; }

void KvPool::Clear() {
  held_.clear();
  keys_.clear();
  values_.clear();
}

int64_t KvPool::bytes() const {
  int64_t n = 0;
  for (const auto* store : {&keys_, &values_}) {
    for (const at::Tensor& t : *store) {
      if (t.defined()) n += t.numel() * static_cast<int64_t>(t.element_size());
    }
  }
  return n;
}

void KvPool::Reserve(int64_t layer, int64_t slots, int64_t tokens, const at::Tensor& like) {
  TORCH_CHECK(layer >= 0 && like.dim() == 4, "KvPool: layer ", layer,
              " with keys [n, kv_heads, t, head_dim], got ", like.sizes());
  if (static_cast<int64_t>(keys_.size()) <= layer) {
    keys_.resize(layer + 1);
    values_.resize(layer + 1);
  }
  for (at::Tensor* store : {&keys_[layer], &values_[layer]}) {
    const int64_t have_slots = store->defined() ? store->size(0) : 0;
    const int64_t have_tokens = store->defined() ? store->size(2) : 0;
    if (store->defined()) {
      TORCH_CHECK(store->size(1) == like.size(1) && store->size(3) == like.size(3) &&
                      store->scalar_type() == like.scalar_type() && store->device() == like.device(),
                  "KvPool: layer ", layer, " holds ", store->sizes(), " ", store->scalar_type(),
                  " on ", store->device(), ", got ", like.sizes(), " ", like.scalar_type(), " on ",
                  like.device());
    }
    if (have_slots >= slots && have_tokens >= tokens) continue;
    auto sizes = like.sizes().vec();
    sizes[0] = have_slots >= slots ? have_slots : std::max(slots, 2 * have_slots);
    sizes[2] = have_tokens >= tokens ? have_tokens : std::max(tokens, 2 * have_tokens);
    at::Tensor grown = at::zeros(sizes, like.options());  // finite everywhere (see the header)
    if (have_slots > 0 && have_tokens > 0) {
      grown.narrow(0, 0, have_slots).narrow(2, 0, have_tokens).copy_(*store);
    }
    *store = std::move(grown);
  }
}

void KvPool::Write(int64_t layer, int64_t slot, int64_t past, const at::Tensor& keys,
                   const at::Tensor& values) {
  TORCH_CHECK(holds(slot), "KvPool: slot ", slot, " is not held");
  TORCH_CHECK(keys.dim() == 4 && keys.size(0) == 1 && keys.sizes() == values.sizes(),
              "KvPool: keys and values must be [1, kv_heads, t, head_dim], got ", keys.sizes(),
              " and ", values.sizes());
  const int64_t t = keys.size(2);
  Reserve(layer, slot + 1, past + t, keys);
  for (auto [store, fresh] : {std::pair<at::Tensor*, const at::Tensor*>{&keys_[layer], &keys},
                              std::pair<at::Tensor*, const at::Tensor*>{&values_[layer], &values}}) {
    if (past == 0) store->narrow(0, slot, 1).zero_();  // a new row: no stale entries behind it
    store->narrow(0, slot, 1).narrow(2, past, t).copy_(*fresh);
  }
}

PooledDecode PlanPooledDecode(KvPool* pool, std::vector<int64_t> slots, std::vector<int64_t> past,
                              std::optional<int64_t> window, const c10::Device& device) {
  TORCH_CHECK(pool != nullptr && !slots.empty() && slots.size() == past.size(),
              "PlanPooledDecode: a pool and one past length per slot are required, got ",
              slots.size(), " slots and ", past.size(), " lengths");
  TORCH_CHECK(!window.has_value() || *window > 0, "PlanPooledDecode: window must be positive");
  PooledDecode plan;
  plan.pool = pool;
  const int64_t B = static_cast<int64_t>(slots.size());
  for (int64_t r = 0; r < B; ++r) {
    TORCH_CHECK(pool->holds(slots[r]), "PlanPooledDecode: row ", r, "'s KvPool slot ", slots[r],
                " is not held");
    TORCH_CHECK(past[r] >= 0, "PlanPooledDecode: row ", r, " has a negative length");
    plan.span = std::max(plan.span, slots[r] + 1);
    plan.keys = std::max(plan.keys, past[r] + 1);
  }
  // One upload: each row's slot and write position, each slot's visible keys [lo, hi).
  std::vector<int64_t> host(2 * B + 2 * plan.span, 0);
  int64_t* lo = host.data() + 2 * B;
  int64_t* hi = lo + plan.span;
  plan.identity = plan.span == B;
  for (int64_t r = 0; r < B; ++r) {
    const int64_t s = slots[r];
    TORCH_CHECK(hi[s] == 0, "PlanPooledDecode: two rows name KvPool slot ", s);
    host[r] = s;
    host[B + r] = past[r];
    hi[s] = past[r] + 1;  // the row's cached keys and its new one
    lo[s] = window ? std::max<int64_t>(0, past[r] + 1 - *window) : 0;
    plan.identity &= s == r;
  }
  for (int64_t s = 0; s < plan.span; ++s) {
    if (hi[s] == 0) hi[s] = 1;  // unused slot: its first key, so no row of the softmax is empty
  }
  const at::Tensor up = UploadToDevice(host, at::kLong, device);
  plan.slot_index = up.narrow(0, 0, B);
  plan.past_index = up.narrow(0, B, B);
  const at::Tensor key_pos =
      at::arange(plan.keys, at::TensorOptions().dtype(at::kLong).device(device)).view({1, plan.keys});
  plan.mask = ((key_pos >= up.narrow(0, 2 * B, plan.span).view({plan.span, 1})) &
               (key_pos < up.narrow(0, 2 * B + plan.span, plan.span).view({plan.span, 1})))
                  .view({plan.span, 1, 1, plan.keys});
  plan.slots = std::move(slots);
  plan.past = std::move(past);
  return plan;
}

at::Tensor PooledDecodeAttention(const PooledDecode& plan, int64_t layer, const at::Tensor& q,
                                 const at::Tensor& k, const at::Tensor& v,
                                 std::optional<double> scale, std::optional<double> softcap) {
  using at::indexing::Slice;
  const int64_t B = static_cast<int64_t>(plan.slots.size());
  TORCH_CHECK(plan.pool != nullptr && q.dim() == 4 && q.size(0) == B && q.size(2) == 1 &&
                  k.dim() == 4 && k.size(0) == B && k.size(2) == 1 && k.sizes() == v.sizes(),
              "PooledDecodeAttention: q, k, v must be [", B, ", heads, 1, head_dim], got ",
              q.sizes(), ", ", k.sizes(), " and ", v.sizes());
  KvPool& pool = *plan.pool;
  pool.Reserve(layer, plan.span, plan.keys, k);
  at::Tensor& keys = pool.mutable_keys(layer);
  at::Tensor& values = pool.mutable_values(layer);
  for (int64_t r = 0; r < B; ++r) {
    if (plan.past[r] == 0) {  // a row starting in this step: no stale entries behind it
      keys.narrow(0, plan.slots[r], 1).zero_();
      values.narrow(0, plan.slots[r], 1).zero_();
    }
  }
  // Every row's new key and value in one indexed write each: [B, kv_heads, head_dim] at
  // (slot, :, past).
  keys.index_put_({plan.slot_index, Slice(), plan.past_index}, k.squeeze(2));
  values.index_put_({plan.slot_index, Slice(), plan.past_index}, v.squeeze(2));
  const at::Tensor kk = keys.narrow(0, 0, plan.span).narrow(2, 0, plan.keys);
  const at::Tensor vv = values.narrow(0, 0, plan.span).narrow(2, 0, plan.keys);
  const at::Tensor qq =
      plan.identity ? q
                    : at::zeros({plan.span, q.size(1), 1, q.size(3)}, q.options())
                          .index_copy_(0, plan.slot_index, q);
  at::Tensor out = Attend(qq, kk, vv, plan.mask, /*causal=*/false, scale, softcap);
  return plan.identity ? out : out.index_select(0, plan.slot_index);
}

}  // namespace oft
