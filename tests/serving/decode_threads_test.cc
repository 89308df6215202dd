// The engine's thread rule (decode_threads.h): one thread for the tiny default model's decode
// steps (where 2 threads decoded 2x slower), more for wide models and long prefills, never
// beyond the cap, monotonic in the work.
#include "server/serving/decode_threads.h"

#include <gtest/gtest.h>

namespace oft {
namespace {

ModelConfig Shape(int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads, int64_t kv,
                  int64_t vocab) {
  ModelConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv;
  c.head_dim = hidden / heads;
  c.vocab_size = vocab;
  return c;
}

TEST(DecodeThreadsTest, CountsEveryLinear) {
  const ModelConfig tiny = Shape(256, 688, 6, 4, 2, 4096);
  // Per layer: q 256x256, k and v 256x128, o 256x256, gate/up/down 256x688 -> 724,992 weights.
  EXPECT_EQ(ForwardLinearFlops(tiny, 1, 1), 2 * (6 * 724992 + 4096 * 256));
  EXPECT_EQ(ForwardLinearFlops(tiny, 10, 0), 10 * 2 * 6 * 724992);
}

TEST(DecodeThreadsTest, TinyModelDecodesOnOneThread) {
  const ModelConfig tiny = Shape(256, 688, 6, 4, 2, 4096);  // models/default
  for (int64_t rows : {1, 8, 16}) EXPECT_EQ(ForwardThreads(tiny, rows, rows, 2), 1) << rows;
  for (int64_t rows : {1, 8, 16}) EXPECT_EQ(ForwardThreads(tiny, rows, rows, 64), 1) << rows;
}

TEST(DecodeThreadsTest, WideModelsAndLongPrefillsGetMoreThreads) {
  const ModelConfig wide = Shape(4096, 11008, 32, 32, 8, 32000);  // Llama-2/3 7-8B shape
  EXPECT_EQ(ForwardThreads(wide, 1, 1, 2), 2);
  EXPECT_EQ(ForwardThreads(wide, 16, 16, 16), 16);
  const ModelConfig tiny = Shape(256, 688, 6, 4, 2, 4096);
  EXPECT_EQ(ForwardThreads(tiny, 512, 8, 2), 2);  // a 512-token prefill
  EXPECT_EQ(ForwardThreads(tiny, 512, 8, 0), 1);  // cap below 1 means 1
}

TEST(DecodeThreadsTest, MonotonicInWorkAndCapped) {
  const ModelConfig mid = Shape(1024, 2816, 12, 16, 4, 32000);
  int last = 1;
  for (int64_t tokens = 1; tokens <= 1024; tokens *= 2) {
    const int t = ForwardThreads(mid, tokens, tokens, 8);
    EXPECT_GE(t, last) << tokens;
    EXPECT_LE(t, 8);
    last = t;
  }
  EXPECT_EQ(last, 8);
  // The threshold is what decides: a tiny threshold gives the cap at once.
  EXPECT_EQ(ForwardThreads(mid, 1, 1, 8, /*min_flops_per_thread=*/1), 8);
}

}  // namespace
}  // namespace oft
