#include "server/serving/decode_threads.h"

#include <algorithm>

namespace oft {

int64_t ForwardLinearFlops(const ModelConfig& c, int64_t tokens, int64_t logit_rows) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t q_out = c.num_attention_heads * c.head_dim;
  const int64_t kv_out = c.num_key_value_heads * c.head_dim;
  const int64_t per_layer = H * q_out + 2 * H * kv_out + q_out * H + 3 * H * I;
  return 2 * tokens * per_layer * c.num_hidden_layers + 2 * logit_rows * c.vocab_size * H;
}

int ForwardThreads(const ModelConfig& c, int64_t tokens, int64_t logit_rows, int max_threads,
                   int64_t min_flops_per_thread) {
  const int cap = std::max(1, max_threads);
  const int64_t calls = c.family.linears_per_layer() * c.num_hidden_layers + 1;
  const int64_t mean = ForwardLinearFlops(c, tokens, logit_rows) / calls;
  const int64_t want = mean / std::max<int64_t>(1, min_flops_per_thread);
  return static_cast<int>(std::clamp<int64_t>(want, 1, cap));
}

}  // namespace oft
