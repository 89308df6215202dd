// KvPool (server/model/kv_pool.h): slots are reused lowest first, storage grows keeping what
// was written, a new row in a slot sees no stale entries, Clear frees everything; the decode
// plan masks each slot to its own row's keys (and sliding window), and PooledDecodeAttention
// equals attention written out by hand per row (grouped-query heads, rows out of slot order).
// The pooled decode through LlamaModel::ForwardBatch and the engine is tested in
// tests/serving/engine_test.cc (PooledDecodeTest, EngineTest.DecodeStepAttendsOncePerLayer).
#include "server/model/kv_pool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"

namespace oft {
namespace {

TEST(KvPoolTest, SlotsAreReusedLowestFirstAndClearFreesEverything) {
  KvPool pool;
  EXPECT_EQ(pool.Acquire(), 0);
  EXPECT_EQ(pool.Acquire(), 1);
  EXPECT_EQ(pool.Acquire(), 2);
  pool.Release(1);
  EXPECT_EQ(pool.held(), 2);
  EXPECT_EQ(pool.span(), 3);
  EXPECT_FALSE(pool.holds(1));
  EXPECT_EQ(pool.Acquire(), 1);
  pool.Release(2);
  pool.Release(1);
  EXPECT_EQ(pool.span(), 1);
  const at::Tensor kv = at::ones({1, 2, 3, 4});
  pool.Write(0, 0, 0, kv, kv);
  EXPECT_EQ(pool.keys(0).size(2), 3);
  pool.Write(0, 0, 3, kv, kv);  // grows the capacity, keeps what was written
  EXPECT_GE(pool.keys(0).size(2), 6);
  EXPECT_TRUE(at::equal(pool.keys(0).narrow(0, 0, 1).narrow(2, 0, 6), at::ones({1, 2, 6, 4})));
  EXPECT_EQ(pool.bytes(), 2 * pool.keys(0).numel() * 4);
  pool.Write(0, 0, 0, kv * 2, kv * 2);  // a new row in the slot: no stale entries behind it
  EXPECT_EQ(pool.values(0).narrow(0, 0, 1).narrow(2, 3, 3).abs().sum().item<double>(), 0.0);
  EXPECT_THROW(pool.Write(0, 5, 0, kv, kv), c10::Error);  // not held
  EXPECT_THROW(pool.Write(0, 0, 0, at::ones({1, 3, 1, 4}), at::ones({1, 3, 1, 4})),
               c10::Error);  // another head count than the layer holds
  pool.Clear();
  EXPECT_EQ(pool.held(), 0);
  EXPECT_EQ(pool.span(), 0);
  EXPECT_EQ(pool.bytes(), 0);
}

TEST(KvPoolTest, ReserveGrowsSlotsAndTokensGeometricallyKeepingContents) {
  KvPool pool;
  pool.Acquire();
  const at::Tensor kv = at::arange(8, at::kFloat).view({1, 1, 2, 4});
  pool.Write(0, 0, 0, kv, kv);
  pool.Reserve(0, 3, 5, kv);
  EXPECT_EQ(pool.keys(0).size(0), 3);  // max(3, 2 * 1)
  EXPECT_EQ(pool.keys(0).size(2), 5);  // max(5, 2 * 2)
  pool.Reserve(0, 4, 6, kv);
  EXPECT_EQ(pool.keys(0).size(0), 6);
  EXPECT_EQ(pool.keys(0).size(2), 10);
  EXPECT_TRUE(at::equal(pool.keys(0).narrow(0, 0, 1).narrow(2, 0, 2), kv));
  EXPECT_EQ(pool.keys(0).narrow(0, 1, 5).abs().sum().item<double>(), 0.0);  // finite zeros
}

TEST(KvPoolTest, PlanMasksEachSlotToItsRowsKeys) {
  KvPool pool;
  for (int i = 0; i < 3; ++i) pool.Acquire();
  // Rows 0 and 1 in slots 2 and 0 with 3 and 1 cached tokens; slot 1 unused in this step.
  const PooledDecode plan = PlanPooledDecode(&pool, {2, 0}, {3, 1}, std::nullopt, c10::kCPU);
  EXPECT_FALSE(plan.identity);
  EXPECT_EQ(plan.span, 3);
  EXPECT_EQ(plan.keys, 4);
  EXPECT_TRUE(at::equal(plan.slot_index, at::tensor(std::vector<int64_t>{2, 0}, at::kLong)));
  EXPECT_TRUE(at::equal(plan.past_index, at::tensor(std::vector<int64_t>{3, 1}, at::kLong)));
  const at::Tensor want = at::tensor(std::vector<uint8_t>{1, 1, 0, 0,   // slot 0: 1 + 1 keys
                                                          1, 0, 0, 0,   // slot 1: unused
                                                          1, 1, 1, 1})  // slot 2: 3 + 1
                              .to(at::kBool)
                              .view({3, 1, 1, 4});
  EXPECT_TRUE(at::equal(plan.mask, want));
  // A sliding window of 2: each query sees itself and one key before it.
  const PooledDecode windowed = PlanPooledDecode(&pool, {2, 0}, {3, 1}, 2, c10::kCPU);
  const at::Tensor want_window = at::tensor(std::vector<uint8_t>{1, 1, 0, 0,   //
                                                                 1, 0, 0, 0,   //
                                                                 0, 0, 1, 1})  //
                                     .to(at::kBool)
                                     .view({3, 1, 1, 4});
  EXPECT_TRUE(at::equal(windowed.mask, want_window));
  EXPECT_TRUE(PlanPooledDecode(&pool, {0, 1}, {0, 5}, std::nullopt, c10::kCPU).identity);
  EXPECT_THROW(PlanPooledDecode(&pool, {1, 1}, {0, 0}, std::nullopt, c10::kCPU), c10::Error);
  EXPECT_THROW(PlanPooledDecode(&pool, {-1}, {0}, std::nullopt, c10::kCPU), c10::Error);
  EXPECT_THROW(PlanPooledDecode(&pool, {7}, {0}, std::nullopt, c10::kCPU), c10::Error);  // not held
  EXPECT_THROW(PlanPooledDecode(&pool, {0, 1}, {0}, std::nullopt, c10::kCPU), c10::Error);
  EXPECT_THROW(PlanPooledDecode(nullptr, {0}, {0}, std::nullopt, c10::kCPU), c10::Error);
}

// softmax(q k^T / sqrt(d)) v over keys [lo, n) of one row, heads grouped onto kv heads.
at::Tensor ReferenceAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              int64_t lo) {
  const int64_t heads = q.size(0), kv_heads = k.size(0), d = q.size(2);
  std::vector<at::Tensor> outs;
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t g = h / (heads / kv_heads);
    const at::Tensor kk = k[g].narrow(0, lo, k.size(1) - lo), vv = v[g].narrow(0, lo, k.size(1) - lo);
    const at::Tensor w = at::softmax(at::matmul(q[h], kk.t()) / std::sqrt(static_cast<double>(d)), -1);
    outs.push_back(at::matmul(w, vv));  // [1, d]
  }
  return at::stack(outs, 0);  // [heads, 1, d]
}

TEST(KvPoolTest, PooledAttentionEqualsEachRowAlone) {
  at::NoGradGuard no_grad;
  for (std::optional<int64_t> window : {std::optional<int64_t>(), std::optional<int64_t>(3)}) {
    KvPool pool;
    for (int i = 0; i < 4; ++i) pool.Acquire();
    pool.Release(2);
    const std::vector<int64_t> slots = {3, 0, 1}, past = {5, 0, 2};  // slot 2 free
    const int64_t heads = 4, kv_heads = 2, d = 8, B = 3;
    at::Generator gen = at::detail::createCPUGenerator(3);
    std::vector<at::Tensor> hist_k, hist_v;
    for (int64_t r = 0; r < B; ++r) {  // cached keys written as a prefill would
      hist_k.push_back(at::randn({1, kv_heads, past[r], d}, gen));
      hist_v.push_back(at::randn({1, kv_heads, past[r], d}, gen));
      if (past[r] > 0) pool.Write(0, slots[r], 0, hist_k[r], hist_v[r]);
    }
    // A stale non-finite entry in the slot of the row that starts now must not leak in.
    pool.Write(0, 0, 0, at::full({1, kv_heads, 3, d}, NAN), at::full({1, kv_heads, 3, d}, NAN));
    const at::Tensor q = at::randn({B, heads, 1, d}, gen), k = at::randn({B, kv_heads, 1, d}, gen),
                     v = at::randn({B, kv_heads, 1, d}, gen);
    const PooledDecode plan = PlanPooledDecode(&pool, slots, past, window, c10::kCPU);
    const at::Tensor out = PooledDecodeAttention(plan, 0, q, k, v);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{B, heads, 1, d}));
    for (int64_t r = 0; r < B; ++r) {
      const at::Tensor kr = at::cat({hist_k[r], k.narrow(0, r, 1)}, 2)[0];  // [kv, past + 1, d]
      const at::Tensor vr = at::cat({hist_v[r], v.narrow(0, r, 1)}, 2)[0];
      const int64_t lo = window ? std::max<int64_t>(0, past[r] + 1 - *window) : 0;
      const at::Tensor want = ReferenceAttention(q[r], kr, vr, lo);
      EXPECT_TRUE(at::allclose(out[r], want, 1e-5, 1e-6))
          << "row " << r << " window " << window.value_or(0) << " max diff "
          << (out[r] - want).abs().max().item<double>();
      // The new key and value are in the row's slot at its position.
      EXPECT_TRUE(at::equal(pool.keys(0)[slots[r]].narrow(1, past[r], 1), k[r]));
      EXPECT_TRUE(at::equal(pool.values(0)[slots[r]].narrow(1, past[r], 1), v[r]));
    }
  }
}

}  // namespace
}  // namespace oft
