// Continuous-batching generation over one shared base LlamaModel with per-row OFT adapters.
//
// Requests (prompt ids, sampling options, an adapter handle or none, callbacks) join a
// running batch: the engine thread prefills the requests admitted in one step in one
// LlamaModel::ForwardBatch, their prompts (of any lengths) packed into one sequence
// (ServingBatch::lengths), then every decode step runs ONE ForwardBatch over all active rows;
// either way each row has its own adapter (ServingBatch::adapters, assembled from a cache of
// stacked blocks: an adapter's blocks are copied once when it joins, not on every batch
// change) and KV cache (ServingBatch::caches): a slot of the engine's one KvPool, taken at
// admission and freed when the row ends, so a decode step attends once per layer over all
// rows (kv_pool.h); the pool's storage is freed whenever no row runs. Tokens are sampled on the model's device. Sampling is
// SampleNextToken with a per-request generator seeded by SamplingOptions::seed, so a
// request's tokens do not depend on what else is in the batch, and greedy output equals
// Generate() on the same model. Cancellation takes effect before the next token.
//
// Threads: Submit/Cancel/Stop from any thread. Callbacks run on the engine thread and must
// not block (queue the work and return). Without start_thread, tests drive Step().
#ifndef OFT_SERVER_SERVING_ENGINE_H_
#define OFT_SERVER_SERVING_ENGINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/model/generate.h"
#include "server/model/kv_pool.h"
#include "server/model/llama.h"
#include "server/model/tokenizer.h"
#include "server/serving/adapter_batch_cache.h"
#include "server/serving/adapter_registry.h"
#include "server/serving/generation_types.h"

namespace oft {

struct EngineOptions {
  const LlamaModel* model = nullptr;      // not owned; required; no adapters attached/active
  const Tokenizer* tokenizer = nullptr;   // not owned; null: no text and no stop strings
  int64_t max_batch = 16;                 // rows decoded together
  int64_t max_waiting = 1024;             // queued requests beyond this: RESOURCE_EXHAUSTED
  // Torch intra-op threads per Forward on the CPU: N > 0 = always N; 0 = chosen per Forward
  // from its work (ForwardThreads, decode_threads.h), at most the torch thread count in
  // effect when Create() runs.
  int threads = 0;
  bool start_thread = true;               // false: the caller drives Step() (tests)
  std::function<void(int64_t tokens)> on_tokens;         // tokens produced by a step
  std::function<void(double seconds)> on_first_token;    // time from Submit to first token
  // Bytes of the engine's stacked adapter blocks (AdapterBatchCache) after each change, on
  // the engine thread (e.g. AdapterRegistry::SetHolderBytes, so the budget counts them).
  std::function<void(int64_t bytes)> on_cache_bytes;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;          // not empty
  SamplingOptions sampling;             // stop_ids: e.g. EOS; stop_strings need a tokenizer
  AdapterHandle adapter;                // null: the base model; must be prepared on `model`
  std::function<void(const GenerationChunk&)> on_chunk;     // optional
  std::function<void(const GenerationOutcome&)> on_done;    // called exactly once
};

class Engine {
 public:
  // INVALID_ARGUMENT without a model or with max_batch < 1.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(EngineOptions options);
  // Stop() first.
  ~Engine();

  // Queues a request; returns its id. Errors: INVALID_ARGUMENT (empty prompt, bad sampling
  // options, prompt + max_tokens beyond the context — the field named), RESOURCE_EXHAUSTED
  // (queue full), UNAVAILABLE (stopped). On error no callback is called.
  absl::StatusOr<uint64_t> Submit(GenerationRequest request);
  // The request ends with CANCELLED before its next token. Unknown ids are ignored.
  void Cancel(uint64_t id);
  // Ends every request with UNAVAILABLE and joins the thread. Idempotent.
  void Stop();

  // One iteration: admit waiting requests (prefill), then one decode step over the batch.
  // Returns false when there was nothing to do. Only without start_thread.
  bool Step();

  // Requests queued or running.
  int64_t pending() const;

 private:
  struct Row;
  explicit Engine(EngineOptions options);
  void Loop();
  bool StepLocked() ABSL_LOCKS_EXCLUDED(mu_);
  void Finish(Row& row, absl::Status status);
  // Records `token` for `row`, streams it, and returns whether the row is finished.
  bool Accept(Row& row, int32_t token);
  // The batch for `rows` from batch_cache_, reporting its bytes when they change.
  AdapterBatch MakeBatch(const std::vector<std::shared_ptr<const ServingAdapter>>& rows);
  void ReportCacheBytes();
  // Sets the torch thread count for a Forward over `tokens` new tokens (CPU only).
  void SetThreadsFor(int64_t tokens, int64_t logit_rows);

  const EngineOptions options_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // signalled when waiting_ grows, a cancel arrives or Stop() runs
  std::deque<std::unique_ptr<Row>> waiting_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> cancelled_ ABSL_GUARDED_BY(mu_);
  int64_t running_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // Engine-thread state.
  std::vector<std::unique_ptr<Row>> running_;
  std::unique_ptr<AdapterBatch> batch_;  // for running_, rebuilt when it changes or when a
                                         // prefill's MakeBatch may have reused its slots
  AdapterBatchCache batch_cache_;        // the stacks batch_ is built from
  KvPool kv_pool_;                       // every running row's KV cache, one slot each
  int64_t reported_cache_bytes_ = 0;
  bool batch_dirty_ = true;
  int max_threads_ = 1;  // cap of the automatic thread count
  int threads_ = 0;      // torch threads set for the last Forward; 0 = none set
  std::thread thread_;
};

}  // namespace oft

#endif  // OFT_SERVER_SERVING_ENGINE_H_
