// Autoregressive generation for one request over a LlamaModel (KV cache, greedy or
// sampled with temperature / top-k / top-p, a per-request seed, stop tokens and strings).
//
// Same model, adapters, prompt, options and seed -> the same tokens. Runs on the calling
// thread; the model must not change adapters meanwhile (see LlamaModel's contract).
#ifndef OFT_SERVER_MODEL_GENERATE_H_
#define OFT_SERVER_MODEL_GENERATE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ATen/core/Generator.h"
#include "absl/status/statusor.h"
#include "server/model/llama.h"
#include "server/model/tokenizer.h"

namespace oft {

struct SamplingOptions {
  int64_t max_tokens = 64;          // new tokens, in [1, kMaxGenerateTokens]
  double temperature = 0.0;         // 0: greedy; else in (0, 5]
  double top_p = 1.0;               // nucleus mass in (0, 1]
  int64_t top_k = 0;                // 0: off
  uint64_t seed = 0;                // sampling RNG seed
  std::vector<int32_t> stop_ids;    // generation ends after any of these (e.g. EOS)
  std::vector<std::string> stop_strings;  // ends when the decoded text contains one
};

inline constexpr int64_t kMaxGenerateTokens = 8192;

// Validates ranges; errors name the field.
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (prompt excluded, stop id included)
  std::string text;             // decoded generated text (stop string removed)
  std::string finish_reason;    // "stop" or "length"
};

// Picks the next token from fp32 logits [vocab] per `options` (greedy when temperature
// is 0, else temperature / top-k / top-p sampling drawing from `generator`, which must be a
// generator of the logits' device: SamplingGenerator). Generate() and the serving engine
// share it, so the same seed gives the same tokens on one device. Throws c10::Error.
int64_t SampleNextToken(const at::Tensor& logits, const SamplingOptions& options,
                        at::Generator& generator);
// As SampleNextToken, but the id stays on the logits' device (an int64 scalar tensor), so
// no full-vocab logits and no per-row sync cross to the host.
at::Tensor SampleNextTokenTensor(const at::Tensor& logits, const SamplingOptions& options,
                                 at::Generator& generator);
// A sampling generator on `device` seeded with `seed` (CPU: the same stream as
// at::detail::createCPUGenerator(seed)).
at::Generator SamplingGenerator(c10::Device device, uint64_t seed);

// Logits are sampled on the model's device (only the token id is copied to the host). With
// exactly one active adapter, its rotations are built once before
// the first token (as serving does), not at every step. Calls `on_token(id)` as each token
// is produced; returning false stops early.
// `tokenizer` may be null: then stop_strings are ignored and `text` stays empty.
absl::StatusOr<GenerateResult> Generate(const LlamaModel& model, const Tokenizer* tokenizer,
                                        const std::vector<int32_t>& prompt,
                                        const SamplingOptions& options,
                                        const std::function<bool(int32_t)>& on_token = {});

}  // namespace oft

#endif  // OFT_SERVER_MODEL_GENERATE_H_
