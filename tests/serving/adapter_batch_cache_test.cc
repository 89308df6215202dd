// AdapterBatchCache: batches it assembles rotate each row exactly as LlamaModel's own
// MakeAdapterBatch does; an adapter's blocks are copied once, not on every batch change;
// slots are reused least recently used first; Clear() frees everything.
#include "server/serving/adapter_batch_cache.h"

#include <gtest/gtest.h>

#include <map>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "server/oft/cpu_isa.h"
#include "tests/serving/serving_fixtures.h"

namespace oft {
namespace {

using testing::AddRandomAdapter;
using testing::AllLinear;
using testing::MakeTinyModel;
using testing::RandomOftConfig;

class AdapterBatchCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = MakeTinyModel();
    auto source = MakeTinyModel();
    // Block sizes 8 and 16, and one shared-block adapter.
    ASSERT_TRUE(AddRandomAdapter(*source, "a", 11).ok());
    ASSERT_TRUE(AddRandomAdapter(*source, "b", 12, RandomOftConfig(16)).ok());
    ASSERT_TRUE(AddRandomAdapter(*source, "c", 13, RandomOftConfig(8, /*share=*/true)).ok());
    ASSERT_TRUE(AddRandomAdapter(*source, "d", 14).ok());
    for (const char* n : {"a", "b", "c", "d"}) {
      auto params = source->AdapterParameters(n);
      auto cfg = source->AdapterConfig(n);
      auto p = model_->PrepareServingAdapter(*cfg, AllLinear(), *params);
      ASSERT_TRUE(p.ok()) << p.status();
      adapters_[n] = *p;
    }
  }

  // Per-row logits of one decode-free forward over `ids` with `batch`.
  at::Tensor Run(const AdapterBatch& batch, const at::Tensor& ids) {
    at::NoGradGuard ng;
    std::vector<KvCache> caches(ids.size(0));
    ServingBatch sb;
    for (auto& c : caches) sb.caches.push_back(&c);
    sb.adapters = &batch;
    return model_->ForwardBatch(ids, sb);
  }

  int64_t Targeted(const std::string& n) {
    int64_t k = 0;
    for (size_t i = 0; i < adapters_[n]->num_linears(); ++i) k += adapters_[n]->blocks(i).defined();
    return k;
  }

  std::unique_ptr<LlamaModel> model_;
  std::map<std::string, std::shared_ptr<const ServingAdapter>> adapters_;
};

TEST_F(AdapterBatchCacheTest, RotatesEachRowAsMakeAdapterBatchDoes) {
  AdapterBatchCache cache(*model_);
  at::manual_seed(3);
  const std::vector<std::string> rows = {"", "a", "b", "c", "a", "d"};
  auto ids = at::randint(0, testing::kTinyVocab, {static_cast<int64_t>(rows.size()), 5}, at::kLong);
  std::vector<std::shared_ptr<const ServingAdapter>> shared;
  std::vector<const ServingAdapter*> raw;
  for (const auto& r : rows) {
    shared.push_back(r.empty() ? nullptr : adapters_[r]);
    raw.push_back(r.empty() ? nullptr : adapters_[r].get());
  }
  const at::Tensor expected = Run(model_->MakeAdapterBatch(raw), ids);
  const at::Tensor got = Run(cache.Make(shared), ids);
  EXPECT_TRUE(at::allclose(got, expected, 1e-5, 1e-6)) << (got - expected).abs().max().item<float>();
  // Reordered rows (slots stay, indices change) still match.
  std::reverse(shared.begin(), shared.end());
  std::reverse(raw.begin(), raw.end());
  EXPECT_TRUE(at::allclose(Run(cache.Make(shared), ids), Run(model_->MakeAdapterBatch(raw), ids), 1e-5, 1e-6));
  // The adapters do change the rows (else a missing rotation would go unnoticed).
  EXPECT_FALSE(at::allclose(got.narrow(0, 1, 1), Run(model_->MakeAdapterBatch({nullptr}), ids.narrow(0, 1, 1)),
                            1e-3, 1e-3));
}

// On the CPU an fp32 model serves R - I in fp16 (serving_batch.h): half the bytes of fp32 R,
// the same logits as the training path's fp32 R within fp16's rounding of R - I, and an
// adapter whose R - I leaves fp16's range is refused with the module named.
TEST_F(AdapterBatchCacheTest, CpuServedFormIsHalfPrecisionDeltaAndStaysClose) {
  const auto& a = adapters_["a"];
  if (!cpu::ConvertsHalfInHardware(cpu::ActiveIsa())) {
    EXPECT_FALSE(a->delta());
    GTEST_SKIP() << "the " << cpu::IsaName(cpu::ActiveIsa()) << " path serves fp32 R";
  }
  ASSERT_TRUE(a->delta());
  int64_t fp32_bytes = 0;
  for (size_t i = 0; i < a->num_linears(); ++i) {
    if (!a->blocks(i).defined()) continue;
    EXPECT_EQ(a->blocks(i).scalar_type(), at::kHalf);
    fp32_bytes += a->blocks(i).numel() * 4;
  }
  EXPECT_EQ(a->bytes() * 2, fp32_bytes);
  // Served logits vs the attached adapter's own forward (fp32 R).
  auto source = MakeTinyModel();
  ASSERT_TRUE(AddRandomAdapter(*source, "a", 11).ok());
  ASSERT_TRUE(source->SetActiveAdapters({"a"}).ok());
  at::manual_seed(4);
  auto ids = at::randint(0, testing::kTinyVocab, {1, 7}, at::kLong);
  at::Tensor attached;
  {
    at::NoGradGuard ng;
    attached = source->Forward(ids, ForwardOptions());
  }
  AdapterBatchCache cache(*model_);
  const at::Tensor served = Run(cache.Make({a}), ids);
  const double diff = (served - attached).abs().max().item<double>();
  EXPECT_LT(diff, 1e-3);
  EXPECT_GT(cache.bytes(), 0);
  // The two forms do not share a batch (their stacks would mix R and R - I).
  auto exact = model_->PrepareServingAdapter(*source->AdapterConfig("a"), AllLinear(),
                                             *source->AdapterParameters("a"), ServedRotations::kFp32);
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_THROW(model_->MakeAdapterBatch({a.get(), exact->get()}), c10::Error);
  // Parameters so large that R - I leaves fp16's range (a diverged adapter).
  auto params = source->AdapterParameters("a");
  ASSERT_TRUE(params.ok());
  {
    at::NoGradGuard ng;
    for (auto& [n, p] : *params) p.fill_(1e3);
  }
  auto refused = model_->PrepareServingAdapter(*source->AdapterConfig("a"), AllLinear(), *params);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("module "), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("fp16 range"), std::string::npos) << refused.status();
}

TEST_F(AdapterBatchCacheTest, CopiesAnAdapterOnceAndReusesLeastRecentlyUsedSlots) {
  AdapterBatchCache cache(*model_);
  auto a = adapters_["a"], b = adapters_["b"], c = adapters_["c"], d = adapters_["d"];
  cache.Make({a, nullptr, b});
  const int64_t after_ab = Targeted("a") + Targeted("b");
  EXPECT_EQ(cache.copies(), after_ab);
  EXPECT_GT(cache.bytes(), 0);
  // Rows join, leave and reorder: no copies.
  cache.Make({b, a, a, nullptr});
  cache.Make({a});
  cache.Make({b});
  EXPECT_EQ(cache.copies(), after_ab);
  EXPECT_EQ(cache.cached_adapters(), 2);
  // Capacity is 2: c takes the slot of a (used before b's last use).
  cache.Make({c});
  EXPECT_EQ(cache.copies(), after_ab + Targeted("c"));
  cache.Make({b, c});
  EXPECT_EQ(cache.copies(), after_ab + Targeted("c"));  // b kept its slot
  // Three adapters in one batch: the stacks grow, only d is copied.
  const int64_t before_grow = cache.bytes();
  cache.Make({b, c, d});
  EXPECT_EQ(cache.copies(), after_ab + Targeted("c") + Targeted("d"));
  EXPECT_GT(cache.bytes(), before_grow);
  cache.Clear();
  EXPECT_EQ(cache.bytes(), 0);
  EXPECT_EQ(cache.cached_adapters(), 0);
}

}  // namespace
}  // namespace oft
