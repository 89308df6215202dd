// How LlamaModel attends (no fixtures needed: the tiny random model of tests/train):
// the mask-free causal path equals the dense-mask path, one-token decoding over a KV cache
// that grows in place equals a full forward, and chunked prefill after cached tokens
// (which needs the mask) does too. The tiny model has grouped-query attention (4 heads,
// 2 key/value heads), so SDPA's enable_gqa is exercised throughout.
#include <set>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "gtest/gtest.h"
#include "server/model/llama.h"
#include "tests/train/tiny_model.h"

namespace oft {
namespace {

at::Tensor RandomIds(int64_t rows, int64_t tokens, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randint(0, testing::kTinyVocab, {rows, tokens}, gen, at::kLong);
}

double MaxDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(LlamaAttentionTest, CausalPathEqualsMaskPathAndIsCausal) {
  auto model = testing::MakeTinyModel();
  at::NoGradGuard no_grad;
  const at::Tensor ids = RandomIds(2, 11, 3);
  const at::Tensor causal = model->Forward(ids);  // nothing padded or packed: no mask
  ForwardOptions masked;
  masked.attention_mask = at::ones({2, 11}, at::kLong);  // all tokens: the dense-mask path
  EXPECT_LT(MaxDiff(causal, model->Forward(ids, masked)), 1e-5);
  // Changing the last token changes no earlier position.
  at::Tensor changed = ids.clone();
  changed.select(1, 10).fill_(7);
  const at::Tensor other = model->Forward(changed);
  EXPECT_LT(MaxDiff(causal.narrow(1, 0, 10), other.narrow(1, 0, 10)), 1e-6);
  EXPECT_GT(MaxDiff(causal.narrow(1, 10, 1), other.narrow(1, 10, 1)), 1e-4);
}

TEST(LlamaAttentionTest, KvCacheGrowsInPlaceAndDecodingEqualsFullForward) {
  auto model = testing::MakeTinyModel();
  at::NoGradGuard no_grad;
  const int64_t n = 40;
  const at::Tensor ids = RandomIds(1, n, 5);
  const at::Tensor full = model->Forward(ids);
  KvCache cache;
  ForwardOptions fo;
  fo.cache = &cache;
  std::vector<at::Tensor> parts{model->Forward(ids.narrow(1, 0, 3), fo)};
  std::set<const void*> storages{cache.keys[0].data_ptr()};
  for (int64_t t = 3; t < n; ++t) {
    parts.push_back(model->Forward(ids.narrow(1, t, 1), fo));
    storages.insert(cache.keys[0].data_ptr());
  }
  EXPECT_EQ(cache.length, n);
  EXPECT_GE(cache.keys[0].size(2), n);
  // Capacity doubles: 3, 6, 12, 24, 48 -- not one allocation per token.
  EXPECT_LE(storages.size(), 5u);
  EXPECT_LT(MaxDiff(at::cat(parts, 1), full), 1e-4);
}

TEST(LlamaAttentionTest, ChunkedPrefillAfterCachedTokensEqualsFullForward) {
  auto model = testing::MakeTinyModel();
  at::NoGradGuard no_grad;
  const at::Tensor ids = RandomIds(1, 12, 9);
  const at::Tensor full = model->Forward(ids);
  KvCache cache;
  ForwardOptions fo;
  fo.cache = &cache;
  const at::Tensor first = model->Forward(ids.narrow(1, 0, 5), fo);
  const at::Tensor rest = model->Forward(ids.narrow(1, 5, 7), fo);  // 7 queries after 5 cached
  EXPECT_LT(MaxDiff(at::cat({first, rest}, 1), full), 1e-4);
}

TEST(LlamaAttentionTest, SlidingWindowStillMasks) {
  ModelConfig c = testing::TinyConfig();
  c.sliding_window = 4;
  auto tensors = testing::RandomLlamaTensors(c, 7);
  auto model = LlamaModel::FromSource(
      c, [&](const std::string& n) -> absl::StatusOr<at::Tensor> { return tensors.at(n); }, {});
  ASSERT_TRUE(model.ok()) << model.status();
  at::NoGradGuard no_grad;
  const at::Tensor ids = RandomIds(1, 10, 11);
  const at::Tensor out = (*model)->Forward(ids);
  // Position 9 sees 6..9, which saw 3..9 in the layer below (two layers): tokens 0..2 do
  // not matter, token 3 does.
  at::Tensor changed = ids.clone();
  changed.narrow(1, 0, 3).fill_(1);
  at::Tensor changed3 = ids.clone();
  changed3.select(1, 3).fill_(1);
  ASSERT_NE(ids[0][3].item<int64_t>(), 1);
  EXPECT_GT(MaxDiff(out.narrow(1, 9, 1), (*model)->Forward(changed3).narrow(1, 9, 1)), 1e-4);
  EXPECT_LT(MaxDiff(out.narrow(1, 9, 1), (*model)->Forward(changed).narrow(1, 9, 1)), 1e-6);
  // One-token decoding with a window that bites equals the full forward.
  KvCache cache;
  ForwardOptions fo;
  fo.cache = &cache;
  std::vector<at::Tensor> parts;
  for (int64_t t = 0; t < 10; ++t) parts.push_back((*model)->Forward(ids.narrow(1, t, 1), fo));
  EXPECT_LT(MaxDiff(at::cat(parts, 1), out), 1e-4);
}

TEST(LlamaAttentionTest, HostIdsOutOfRangeAreRejected) {
  auto model = testing::MakeTinyModel();
  at::NoGradGuard no_grad;
  EXPECT_THROW(model->Forward(at::full({1, 3}, testing::kTinyVocab, at::kLong)), c10::Error);
  EXPECT_THROW(model->Forward(at::full({1, 3}, -1, at::kLong)), c10::Error);
}

}  // namespace
}  // namespace oft
