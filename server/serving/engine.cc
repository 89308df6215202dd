#include "server/serving/engine.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "ATen/core/grad_mode.h"
#include "c10/core/DeviceGuard.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/model/host_upload.h"
#include "server/serving/decode_threads.h"

namespace oft {

struct Engine::Row {
  uint64_t id = 0;
  GenerationRequest request;
  KvCache cache;
  at::Generator generator;
  std::vector<int32_t> tokens;
  size_t streamed_tokens = 0;
  std::string streamed_text;  // bytes already sent
  std::string text;           // decoded so far (cut at a stop string)
  std::chrono::steady_clock::time_point submitted;
  double ttft = 0;
  FinishReason reason = FinishReason::kLength;
};

namespace {

// Length of `s` without a trailing incomplete UTF-8 character or replacement character.
size_t CompleteUtf8Prefix(const std::string& s) {
  size_t end = s.size();
  static const std::string kReplacement = "\xEF\xBF\xBD";
  while (end >= 3 && s.compare(end - 3, 3, kReplacement) == 0) end -= 3;
  if (end == 0) return 0;
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80 && end - i < 4) --i;
  const unsigned char lead = static_cast<unsigned char>(s[i]);
  const size_t need = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3
                                      : (lead >> 3) == 0x1E ? 4 : 1;
  return end - i < need ? i : end;
}

// ids as an int64 tensor [rows, cols] on `device`, uploaded without blocking the host
// (host_upload.h).
at::Tensor UploadIds(const std::vector<int64_t>& ids, int64_t rows, int64_t cols, c10::Device device) {
  return UploadToDevice(ids, at::kLong, device).view({rows, cols});
}

// The next token of every row of `logits` [rows, vocab] (fp32, on the model's device),
// sampled on that device; only the ids cross to the host, in one copy.
std::vector<int32_t> SampleRows(const at::Tensor& logits, const std::vector<const SamplingOptions*>& o,
                                std::vector<at::Generator*>& generators) {
  const int64_t rows = logits.size(0);
  bool all_greedy = true;
  for (const SamplingOptions* s : o) all_greedy &= s->temperature == 0.0;
  at::Tensor ids;
  if (all_greedy) {
    ids = logits.argmax(-1);
  } else {
    std::vector<at::Tensor> each;
    for (int64_t i = 0; i < rows; ++i) each.push_back(SampleNextTokenTensor(logits[i], *o[i], *generators[i]));
    ids = at::stack(each);
  }
  ids = ids.to(at::kInt).cpu();
  const int32_t* p = ids.data_ptr<int32_t>();
  return std::vector<int32_t>(p, p + rows);
}

}  // namespace

Engine::Engine(EngineOptions options)
    : options_(std::move(options)), batch_cache_(*options_.model) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineOptions options) {
  if (options.model == nullptr) return absl::InvalidArgumentError("EngineOptions.model is required");
  if (options.max_batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch must be >= 1, got ", options.max_batch));
  }
  std::unique_ptr<Engine> e(new Engine(std::move(options)));
  e->max_threads_ = std::max(1, at::get_num_threads());
  if (e->options_.start_thread) e->thread_ = std::thread([p = e.get()] { p->Loop(); });
  return e;
}

Engine::~Engine() { Stop(); }

absl::StatusOr<uint64_t> Engine::Submit(GenerationRequest request) {
  if (request.prompt.empty()) return absl::InvalidArgumentError("prompt must not be empty");
  OFT_RETURN_IF_ERROR(ValidateSamplingOptions(request.sampling));
  const ModelConfig& c = options_.model->config();
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt + request.sampling.max_tokens > c.ContextLength()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt, " tokens) + max_tokens (", request.sampling.max_tokens,
        ") exceeds the model's context of ", c.ContextLength(), " tokens"));
  }
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id, " is outside [0, ", c.vocab_size, ")"));
    }
  }
  auto row = std::make_unique<Row>();
  row->submitted = std::chrono::steady_clock::now();
  row->generator = SamplingGenerator(options_.model->device(), request.sampling.seed);
  row->request = std::move(request);
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return absl::UnavailableError("the generation engine is stopped");
    if (static_cast<int64_t>(waiting_.size()) >= options_.max_waiting) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the generation queue is full (", options_.max_waiting, " waiting); retry with backoff"));
    }
    id = next_id_++;
    row->id = id;
    if (row->request.adapter) row->request.adapter->active_requests.fetch_add(1);
    waiting_.push_back(std::move(row));
  }
  cv_.SignalAll();
  return id;
}

void Engine::Cancel(uint64_t id) {
  std::unique_ptr<Row> queued;
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& r) { return r->id == id; });
    if (it != waiting_.end()) {
      queued = std::move(*it);
      waiting_.erase(it);
    } else {
      cancelled_.insert(id);
    }
  }
  if (queued) Finish(*queued, absl::CancelledError("generation cancelled"));
  cv_.SignalAll();
}

void Engine::Stop() {
  std::deque<std::unique_ptr<Row>> waiting;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_ && !thread_.joinable() && waiting_.empty() && running_.empty()) return;
    stopped_ = true;
    waiting.swap(waiting_);
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
  for (auto& r : waiting) Finish(*r, absl::UnavailableError("the generation engine stopped"));
  for (auto& r : running_) Finish(*r, absl::UnavailableError("the generation engine stopped"));
  running_.clear();
  absl::MutexLock lock(&mu_);
  running_count_ = 0;
}

int64_t Engine::pending() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(waiting_.size()) + running_count_;
}

void Engine::SetThreadsFor(int64_t tokens, int64_t logit_rows) {
  if (!options_.model->device().is_cpu()) return;
  const int want = options_.threads > 0
                       ? options_.threads
                       : ForwardThreads(options_.model->config(), tokens, logit_rows, max_threads_);
  if (want != threads_) {
    at::set_num_threads(want);
    threads_ = want;
  }
}

void Engine::Loop() {
  // This thread targets the model's GPU for every op and allocation that does not name a
  // device (the current stream, cuBLAS handles, pinned staging), as a job thread targets
  // its job's GPU: with --serving_device=cuda:N the thread would otherwise default to cuda:0.
  std::optional<c10::DeviceGuard> device_guard;
  if (options_.model->device().is_cuda()) device_guard.emplace(options_.model->device());
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      // running_ is engine-thread state: only this thread changes it, so reading it here is safe.
      while (!stopped_ && waiting_.empty() && running_.empty()) cv_.Wait(&mu_);
      if (stopped_) return;
    }
    StepLocked();
  }
}

bool Engine::Step() { return StepLocked(); }

void Engine::Finish(Row& row, absl::Status status) {
  if (row.cache.pool != nullptr) row.cache.pool->Release(row.cache.slot);
  row.cache.pool = nullptr;
  GenerationOutcome out;
  out.status = std::move(status);
  out.finish_reason = row.reason;
  out.tokens = row.tokens;
  out.text = row.text;
  out.prompt_tokens = static_cast<int64_t>(row.request.prompt.size());
  out.time_to_first_token_seconds = row.ttft;
  if (row.request.adapter) row.request.adapter->active_requests.fetch_sub(1);
  auto done = std::move(row.request.on_done);
  row.request.adapter.reset();  // the version may be freed now
  if (done) done(out);
}

bool Engine::Accept(Row& row, int32_t token) {
  const SamplingOptions& o = row.request.sampling;
  row.tokens.push_back(token);
  if (row.tokens.size() == 1) {
    row.ttft = std::chrono::duration<double>(std::chrono::steady_clock::now() - row.submitted).count();
    if (options_.on_first_token) options_.on_first_token(row.ttft);
  }
  bool finished = false;
  if (std::find(o.stop_ids.begin(), o.stop_ids.end(), token) != o.stop_ids.end()) {
    finished = true;
    row.reason = FinishReason::kEos;
  }
  size_t safe = 0;
  if (options_.tokenizer != nullptr) {
    row.text = options_.tokenizer->Decode(row.tokens, /*skip_special_tokens=*/true);
    size_t stop_at = std::string::npos;
    for (const auto& s : o.stop_strings) {
      if (!s.empty()) stop_at = std::min(stop_at, row.text.find(s));
    }
    if (stop_at != std::string::npos) {
      row.text.resize(stop_at);
      finished = true;
      row.reason = FinishReason::kStop;
    }
  }
  if (!finished && static_cast<int64_t>(row.tokens.size()) >= o.max_tokens) {
    finished = true;
    row.reason = FinishReason::kLength;
  }
  if (!finished && static_cast<int64_t>(row.request.prompt.size() + row.tokens.size()) >=
                       options_.model->config().ContextLength()) {
    finished = true;
    row.reason = FinishReason::kContext;
  }
  if (options_.tokenizer != nullptr) {
    safe = row.text.size();
    if (!finished) {
      safe = CompleteUtf8Prefix(row.text);
      // Hold back a tail that may be the start of a stop string.
      size_t hold = 0;
      for (const auto& s : o.stop_strings) {
        for (size_t l = std::min(s.size() - (s.empty() ? 0 : 1), safe); l > hold; --l) {
          if (row.text.compare(safe - l, l, s, 0, l) == 0) {
            hold = l;
            break;
          }
        }
      }
      safe -= hold;
    }
  }
  GenerationChunk chunk;
  chunk.token_ids.assign(row.tokens.begin() + row.streamed_tokens, row.tokens.end());
  row.streamed_tokens = row.tokens.size();
  const std::string& sent = row.streamed_text;
  if (safe > sent.size() && row.text.compare(0, sent.size(), sent) == 0) {
    chunk.text_delta = row.text.substr(sent.size(), safe - sent.size());
    row.streamed_text = row.text.substr(0, safe);
  }
  if (row.request.on_chunk) row.request.on_chunk(chunk);
  return finished;
}

AdapterBatch Engine::MakeBatch(const std::vector<std::shared_ptr<const ServingAdapter>>& rows) {
  AdapterBatch batch = batch_cache_.Make(rows);
  ReportCacheBytes();
  return batch;
}

void Engine::ReportCacheBytes() {
  if (batch_cache_.bytes() == reported_cache_bytes_) return;
  reported_cache_bytes_ = batch_cache_.bytes();
  if (options_.on_cache_bytes) options_.on_cache_bytes(reported_cache_bytes_);
}

bool Engine::StepLocked() {
  std::vector<std::unique_ptr<Row>> admitted;
  std::set<uint64_t> cancelled;
  {
    absl::MutexLock lock(&mu_);
    cancelled.swap(cancelled_);
    while (!waiting_.empty() &&
           static_cast<int64_t>(running_.size() + admitted.size()) < options_.max_batch) {
      admitted.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
  }
  bool worked = !admitted.empty();
  int64_t produced = 0;
  // Rows that end in this step; their callbacks run at its end, after the engine's own state
  // (the adapter block cache) reflects them.
  std::vector<std::pair<std::unique_ptr<Row>, absl::Status>> finished;
  // Cancellations take effect before the next token.
  for (auto it = running_.begin(); it != running_.end();) {
    if (cancelled.count((*it)->id)) {
      finished.emplace_back(std::move(*it), absl::CancelledError("generation cancelled"));
      it = running_.erase(it);
      batch_dirty_ = true;
      worked = true;
    } else {
      ++it;
    }
  }
  const LlamaModel& model = *options_.model;
  // Prefill the new requests in one forward pass: their prompts are packed into one
  // sequence (no padding), each row with its own adapter, cache and positions.
  std::vector<std::unique_ptr<Row>> to_prefill;
  for (auto& row : admitted) {
    if (cancelled.count(row->id)) {
      finished.emplace_back(std::move(row), absl::CancelledError("generation cancelled"));
    } else {
      to_prefill.push_back(std::move(row));
    }
  }
  if (!to_prefill.empty()) {
    auto tokens = TorchCall("prefill", [&]() -> std::vector<int32_t> {
      c10::InferenceMode inference_mode;  // cheaper than NoGradGuard: no autograd bookkeeping
      std::vector<std::shared_ptr<const ServingAdapter>> adapters;
      std::vector<int64_t> ids;
      ServingBatch sb;
      for (const auto& row_ptr : to_prefill) {
        Row& row = *row_ptr;
        row.cache.pool = &kv_pool_;  // decode attends over all rows at once (kv_pool.h)
        row.cache.slot = kv_pool_.Acquire();
        adapters.push_back(row.request.adapter ? row.request.adapter->weights : nullptr);
        ids.insert(ids.end(), row.request.prompt.begin(), row.request.prompt.end());
        sb.caches.push_back(&row.cache);
        sb.lengths.push_back(static_cast<int64_t>(row.request.prompt.size()));
      }
      const AdapterBatch batch = MakeBatch(adapters);
      // Make() may have copied a new adapter's blocks, in place, into a slot the cached
      // decode batch still points at (a running row's adapter): that batch is stale now,
      // even when every prefilled row ends here and none joins the running rows.
      batch_dirty_ = true;
      sb.adapters = &batch;
      sb.logits_for_last_only = true;
      const int64_t total = static_cast<int64_t>(ids.size());
      const int64_t n = static_cast<int64_t>(to_prefill.size());
      SetThreadsFor(total, n);
      const at::Tensor logits =
          model.ForwardBatch(UploadIds(ids, 1, total, model.device()), sb).to(at::kFloat).view({n, -1});
      std::vector<const SamplingOptions*> sampling;
      std::vector<at::Generator*> generators;
      for (auto& row : to_prefill) {
        sampling.push_back(&row->request.sampling);
        generators.push_back(&row->generator);
      }
      return SampleRows(logits, sampling, generators);
    });
    for (size_t i = 0; i < to_prefill.size(); ++i) {
      std::unique_ptr<Row>& row = to_prefill[i];
      if (!tokens.ok()) {
        finished.emplace_back(std::move(row), tokens.status());
        continue;
      }
      ++produced;
      if (Accept(*row, (*tokens)[i])) {
        finished.emplace_back(std::move(row), absl::OkStatus());
      } else {
        running_.push_back(std::move(row));
        batch_dirty_ = true;
      }
    }
  }
  // One decode step over every running row, including those just prefilled.
  if (!running_.empty()) {
    worked = true;
    const int64_t B = static_cast<int64_t>(running_.size());
    auto tokens = TorchCall("decode", [&]() -> std::vector<int32_t> {
      c10::InferenceMode inference_mode;  // cheaper than NoGradGuard: no autograd bookkeeping
      if (batch_dirty_ || !batch_) {
        std::vector<std::shared_ptr<const ServingAdapter>> rows;
        for (const auto& r : running_) {
          rows.push_back(r->request.adapter ? r->request.adapter->weights : nullptr);
        }
        batch_ = std::make_unique<AdapterBatch>(MakeBatch(rows));
        batch_dirty_ = false;
      }
      std::vector<int64_t> last;
      ServingBatch sb;
      for (const auto& r : running_) {
        last.push_back(r->tokens.back());
        sb.caches.push_back(&r->cache);
      }
      sb.adapters = batch_.get();
      sb.logits_for_last_only = true;
      SetThreadsFor(B, B);
      const at::Tensor logits =
          model.ForwardBatch(UploadIds(last, B, 1, model.device()), sb).to(at::kFloat).view({B, -1});
      std::vector<const SamplingOptions*> sampling;
      std::vector<at::Generator*> generators;
      for (auto& r : running_) {
        sampling.push_back(&r->request.sampling);
        generators.push_back(&r->generator);
      }
      return SampleRows(logits, sampling, generators);
    });
    if (!tokens.ok()) {
      for (auto& r : running_) finished.emplace_back(std::move(r), tokens.status());
      running_.clear();
      batch_dirty_ = true;
    } else {
      produced += B;
      std::vector<std::unique_ptr<Row>> keep;
      for (int64_t i = 0; i < B; ++i) {
        if (Accept(*running_[i], (*tokens)[i])) {
          finished.emplace_back(std::move(running_[i]), absl::OkStatus());
          batch_dirty_ = true;
        } else {
          keep.push_back(std::move(running_[i]));
        }
      }
      running_.swap(keep);
    }
  }
  if (running_.empty() && batch_cache_.bytes() > 0) {
    // Idle: hold no stacked blocks (and no adapter through them).
    batch_.reset();
    batch_dirty_ = true;
    batch_cache_.Clear();
    ReportCacheBytes();
  }
  for (auto& [row, status] : finished) Finish(*row, std::move(status));
  if (running_.empty() && kv_pool_.held() == 0) kv_pool_.Clear();  // idle: hold no KV memory
  if (produced > 0 && options_.on_tokens) options_.on_tokens(produced);
  {
    absl::MutexLock lock(&mu_);
    running_count_ = static_cast<int64_t>(running_.size());
  }
  return worked;
}

}  // namespace oft
