// Per-row adapters in LlamaModel::Forward and the continuous-batching Engine: unmerged ==
// attached == merged; a mixed batch gives each request what it gets alone; streaming,
// stop strings, cancellation, bad input.
#include "server/serving/engine.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "absl/synchronization/notification.h"
#include "server/artifacts/peft_format.h"
#include "server/artifacts/store.h"
#include "server/model/generate.h"
#include "server/model/kv_pool.h"
#include "server/serving/adapter_registry.h"
#include "tests/serving/sdpa_counter.h"
#include "tests/serving/serving_fixtures.h"

namespace oft {
namespace {

using testing::AddRandomAdapter;
using testing::AllLinear;
using testing::MakeTinyModel;
using testing::RandomOftConfig;

using testing::Handle;
using testing::Prepare;

TEST(PerRowForwardTest, MixedBatchRowsEqualAttachedAdapterAlone) {
  at::NoGradGuard ng;
  auto attached = MakeTinyModel();
  auto serving = MakeTinyModel();
  ASSERT_TRUE(AddRandomAdapter(*attached, "a", 11).ok());
  ASSERT_TRUE(AddRandomAdapter(*attached, "b", 12, RandomOftConfig(16)).ok());
  ASSERT_TRUE(AddRandomAdapter(*attached, "c", 13, RandomOftConfig(8, /*share=*/true)).ok());
  const std::vector<std::string> rows = {"", "a", "b", "c", "a"};
  const int64_t T = 6;
  auto ids = at::randint(0, testing::kTinyVocab, {static_cast<int64_t>(rows.size()), T}, at::kLong);
  std::map<std::string, std::shared_ptr<const ServingAdapter>> prepared;
  // fp32 R: the attached adapter's values. The compact fp16 R - I: within its rounding; these
  // random adapters move the logits by up to 2.7 and the compact form by about 1e-3 of that.
  at::Tensor mixed;
  for (ServedRotations form : {ServedRotations::kFp32, ServedRotations::kCompact}) {
    const bool exact = form == ServedRotations::kFp32;
    for (const char* n : {"a", "b", "c"}) prepared[n] = Prepare(*serving, *attached, n, AllLinear(), form);
    std::vector<const ServingAdapter*> sel;
    for (const auto& r : rows) sel.push_back(r.empty() ? nullptr : prepared[r].get());
    AdapterBatch batch = serving->MakeAdapterBatch(sel);
    std::vector<KvCache> caches(rows.size());
    ServingBatch sb;
    for (auto& c : caches) sb.caches.push_back(&c);
    sb.adapters = &batch;
    mixed = serving->ForwardBatch(ids, sb);  // [B, T, V]
    for (size_t i = 0; i < rows.size(); ++i) {
      ASSERT_TRUE(attached->SetActiveAdapters(rows[i].empty() ? std::vector<std::string>{}
                                                              : std::vector<std::string>{rows[i]}).ok());
      auto expected = attached->Forward(ids.narrow(0, i, 1));
      EXPECT_TRUE(at::allclose(mixed.narrow(0, i, 1), expected, exact ? 1e-4 : 1e-3, exact ? 1e-5 : 1e-3))
          << "row " << i << " (" << rows[i] << ") exact=" << exact;
      EXPECT_EQ(caches[i].length, T);
    }
  }
  // The adapters change the output (else a missing rotation would go unnoticed).
  ASSERT_TRUE(attached->SetActiveAdapters({}).ok());
  auto base_row1 = attached->Forward(ids.narrow(0, 1, 1));
  EXPECT_FALSE(at::allclose(mixed.narrow(0, 1, 1), base_row1, 1e-3, 1e-3));
}

TEST(PerRowForwardTest, RowCachesContinueAtTheirOwnLengths) {
  at::NoGradGuard ng;
  auto model = MakeTinyModel();
  // Row 0 has 5 cached tokens, row 1 has 2; decoding one token each must equal full forwards.
  std::vector<int64_t> p0 = {1, 2, 3, 4, 5}, p1 = {9, 8};
  KvCache c0, c1;
  ServingBatch f0;
  f0.caches = {&c0};
  model->ForwardBatch(at::tensor(p0, at::kLong).unsqueeze(0), f0);
  ServingBatch f1;
  f1.caches = {&c1};
  model->ForwardBatch(at::tensor(p1, at::kLong).unsqueeze(0), f1);
  ServingBatch both;
  both.caches = {&c0, &c1};
  both.logits_for_last_only = true;
  auto step = model->ForwardBatch(at::tensor(std::vector<int64_t>{7, 6}, at::kLong).view({2, 1}), both);
  p0.push_back(7);
  p1.push_back(6);
  auto full0 = model->Forward(at::tensor(p0, at::kLong).unsqueeze(0)).select(1, 5);
  auto full1 = model->Forward(at::tensor(p1, at::kLong).unsqueeze(0)).select(1, 2);
  EXPECT_TRUE(at::allclose(step.select(1, 0)[0], full0[0], 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(step.select(1, 0)[1], full1[0], 1e-4, 1e-5));
  EXPECT_EQ(c0.length, 6);
  EXPECT_EQ(c1.length, 3);
}

// ForwardBatch is the serving pass: the model's active (training-side) adapters never apply
// to it, only the batch's own; Forward applies them.
TEST(PerRowForwardTest, ForwardBatchIgnoresTheActiveAdapters) {
  at::NoGradGuard ng;
  auto model = MakeTinyModel();
  const auto ids = at::randint(0, testing::kTinyVocab, {2, 5}, at::kLong);
  const auto base = model->Forward(ids);
  ASSERT_TRUE(AddRandomAdapter(*model, "a", 31).ok());
  ASSERT_TRUE(model->SetActiveAdapters({"a"}).ok());
  EXPECT_FALSE(at::allclose(model->Forward(ids), base, 1e-3, 1e-3));  // the adapter matters
  std::vector<KvCache> caches(2);
  ServingBatch sb;
  for (auto& c : caches) sb.caches.push_back(&c);
  EXPECT_TRUE(at::allclose(model->ForwardBatch(ids, sb), base, 1e-4, 1e-5));
}

// Rows whose caches live in one KvPool decode with one attention call per layer (not one
// per row) and give what per-row caches give. The rows sit in slots out of batch order with
// a free slot between them, are prefilled packed (into their slots) and then decode 12
// steps, outgrowing the pool's first capacity; with a sliding window (4) that bites early.
class PooledDecodeTest : public ::testing::TestWithParam<int> {};

TEST_P(PooledDecodeTest, OneAttentionCallPerLayerAndPerRowResults) {
  at::NoGradGuard ng;
  ModelConfig c = testing::TinyConfig();
  if (GetParam() > 0) c.sliding_window = GetParam();
  auto tensors = testing::RandomLlamaTensors(c, 7);
  auto loaded = LlamaModel::FromSource(
      c, [&](const std::string& n) -> absl::StatusOr<at::Tensor> { return tensors.at(n); }, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const LlamaModel& model = **loaded;
  const int64_t layers = c.num_hidden_layers;
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3, 4, 5}, {9, 8}, {7, 7, 7, 6}};
  const int64_t B = static_cast<int64_t>(prompts.size());
  KvPool pool;
  const int64_t s0 = pool.Acquire(), s1 = pool.Acquire(), s2 = pool.Acquire(), s3 = pool.Acquire();
  pool.Release(s1);  // rows 0, 1, 2 in slots 3, 0, 2; slot 1 free
  const int64_t slot_of[] = {s3, s0, s2};
  std::vector<KvCache> pooled(B), plain(B);
  for (int64_t r = 0; r < B; ++r) {
    pooled[r].pool = &pool;
    pooled[r].slot = slot_of[r];
  }
  ServingBatch prefill_pooled, prefill_plain;
  std::vector<int64_t> packed;
  for (int64_t r = 0; r < B; ++r) {
    packed.insert(packed.end(), prompts[r].begin(), prompts[r].end());
    prefill_pooled.caches.push_back(&pooled[r]);
    prefill_plain.caches.push_back(&plain[r]);
    prefill_pooled.lengths.push_back(static_cast<int64_t>(prompts[r].size()));
  }
  prefill_plain.lengths = prefill_pooled.lengths;
  prefill_pooled.logits_for_last_only = prefill_plain.logits_for_last_only = true;
  const at::Tensor ids = at::tensor(packed, at::kLong).unsqueeze(0);
  EXPECT_TRUE(at::allclose(model.ForwardBatch(ids, prefill_pooled),
                           model.ForwardBatch(ids, prefill_plain), 1e-5, 1e-6));
  at::Generator gen = at::detail::createCPUGenerator(5);
  for (int step = 0; step < 12; ++step) {
    ServingBatch fp, fq;
    for (int64_t r = 0; r < B; ++r) {
      fp.caches.push_back(&pooled[r]);
      fq.caches.push_back(&plain[r]);
    }
    fp.logits_for_last_only = fq.logits_for_last_only = true;
    const at::Tensor next = at::randint(0, testing::kTinyVocab, {B, 1}, gen, at::kLong);
    at::Tensor got, want;
    {
      testing::SdpaCounter counter;
      got = model.ForwardBatch(next, fp);
      EXPECT_EQ(counter.calls(), layers) << "step " << step;
    }
    {
      testing::SdpaCounter counter;
      want = model.ForwardBatch(next, fq);
      EXPECT_EQ(counter.calls(), B * layers);
    }
    ASSERT_TRUE(at::allclose(got, want, 1e-4, 1e-5))
        << "step " << step << " max diff " << (got - want).abs().max().item<double>();
  }
  for (int64_t r = 0; r < B; ++r) EXPECT_EQ(pooled[r].length, plain[r].length);
  EXPECT_GE(pool.keys(0).size(2), 5 + 12);
  EXPECT_EQ(pool.held(), 3);
  EXPECT_EQ(pool.span(), 4);
  // A pooled cache is not the training pass's single cache.
  ForwardOptions single;
  single.cache = &pooled[0];
  EXPECT_THROW(model.Forward(at::tensor(std::vector<int64_t>{1}, at::kLong).view({1, 1}), single),
               c10::Error);
  // A row whose slot was released is refused, naming the slot.
  pool.Release(slot_of[1]);
  ServingBatch stale;
  for (int64_t r = 0; r < B; ++r) stale.caches.push_back(&pooled[r]);
  EXPECT_THROW(model.ForwardBatch(at::zeros({B, 1}, at::kLong), stale), c10::Error);
}

INSTANTIATE_TEST_SUITE_P(Window, PooledDecodeTest, ::testing::Values(0, 4));

// Rows of different lengths packed into one sequence (how the engine prefills): each row's
// logits equal its own forward with its adapter attached, a row with a cache continues it,
// and every cache grows by its own row's length.
TEST(PerRowForwardTest, PackedRowsOfDifferentLengthsEqualEachRowAlone) {
  at::NoGradGuard ng;
  auto attached = MakeTinyModel();
  auto serving = MakeTinyModel();
  ASSERT_TRUE(AddRandomAdapter(*attached, "a", 21).ok());
  ASSERT_TRUE(AddRandomAdapter(*attached, "c", 23, RandomOftConfig(8, /*share=*/true)).ok());
  std::map<std::string, std::shared_ptr<const ServingAdapter>> prepared;
  // fp32 R, so that the packing is checked at fp32 precision (the compact form's rounding is
  // bounded in MixedBatchRowsEqualAttachedAdapterAlone).
  for (const char* n : {"a", "c"}) {
    prepared[n] = Prepare(*serving, *attached, n, AllLinear(), ServedRotations::kFp32);
  }

  const std::vector<std::string> rows = {"a", "", "c", "a"};
  const std::vector<int64_t> lengths = {3, 7, 1, 5};
  std::vector<at::Tensor> prompts;
  for (int64_t len : lengths) prompts.push_back(at::randint(0, testing::kTinyVocab, {len}, at::kLong));
  // Row 3 already holds 4 cached tokens of its own.
  const auto history = at::randint(0, testing::kTinyVocab, {4}, at::kLong);
  std::vector<KvCache> caches(rows.size());
  {
    ServingBatch sb;
    sb.caches = {&caches[3]};
    AdapterBatch one = serving->MakeAdapterBatch({prepared["a"].get()});
    sb.adapters = &one;
    serving->ForwardBatch(history.unsqueeze(0), sb);
  }
  std::vector<const ServingAdapter*> sel;
  for (const auto& r : rows) sel.push_back(r.empty() ? nullptr : prepared[r].get());
  AdapterBatch batch = serving->MakeAdapterBatch(sel);
  for (bool last_only : {true, false}) {
    std::vector<KvCache> work = caches;
    ServingBatch sb;
    for (auto& c : work) sb.caches.push_back(&c);
    sb.lengths = lengths;
    sb.adapters = &batch;
    sb.logits_for_last_only = last_only;
    auto out = serving->ForwardBatch(at::cat(prompts).unsqueeze(0), sb);
    if (last_only) {
      ASSERT_EQ(out.sizes(), (std::vector<int64_t>{4, 1, testing::kTinyVocab}));
    } else {
      ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 16, testing::kTinyVocab}));
    }
    int64_t offset = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      ASSERT_TRUE(attached->SetActiveAdapters(rows[i].empty() ? std::vector<std::string>{}
                                                              : std::vector<std::string>{rows[i]}).ok());
      const auto full_ids = i == 3 ? at::cat({history, prompts[i]}) : prompts[i];
      auto expected = attached->Forward(full_ids.unsqueeze(0));  // [1, L, V]
      expected = expected.narrow(1, expected.size(1) - lengths[i], lengths[i]);
      auto got = last_only ? out.narrow(0, i, 1) : out.narrow(1, offset, lengths[i]);
      if (last_only) expected = expected.narrow(1, lengths[i] - 1, 1);
      EXPECT_TRUE(at::allclose(got, expected, 1e-4, 1e-5)) << "row " << i << " last_only=" << last_only;
      EXPECT_EQ(work[i].length, (i == 3 ? 4 : 0) + lengths[i]);
      offset += lengths[i];
    }
  }
  ServingBatch bad;
  KvCache c0;
  bad.caches = {&c0};
  bad.lengths = {2};
  EXPECT_THROW(serving->ForwardBatch(at::cat(prompts).unsqueeze(0), bad), c10::Error);  // 16 != 2
  ServingBatch none;  // no caches: no rows
  EXPECT_THROW(serving->ForwardBatch(at::cat(prompts).unsqueeze(0), none), c10::Error);
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = MakeTinyModel();
    attached_ = MakeTinyModel();
    tokenizer_ = testing::MakeByteTokenizer();
    for (int i = 0; i < 3; ++i) {
      const std::string n = "ad" + std::to_string(i);
      ASSERT_TRUE(AddRandomAdapter(*attached_, n, 100 + i).ok());
      handles_.push_back(Handle(Prepare(*model_, *attached_, n), n));
    }
  }

  std::unique_ptr<Engine> MakeEngine(int64_t max_batch = 8) {
    EngineOptions o;
    o.model = model_.get();
    o.tokenizer = tokenizer_.get();
    o.max_batch = max_batch;
    o.start_thread = false;
    auto e = Engine::Create(o);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }

  struct Run {
    GenerationOutcome outcome;
    std::string streamed;
    std::vector<int32_t> streamed_ids;
    bool done = false;
  };

  GenerationRequest Request(const std::string& prompt, const SamplingOptions& s, AdapterHandle a,
                            Run* run) {
    GenerationRequest r;
    for (unsigned char ch : prompt) r.prompt.push_back(ch);
    r.sampling = s;
    r.adapter = std::move(a);
    r.on_chunk = [run](const GenerationChunk& c) {
      run->streamed += c.text_delta;
      run->streamed_ids.insert(run->streamed_ids.end(), c.token_ids.begin(), c.token_ids.end());
    };
    r.on_done = [run](const GenerationOutcome& o) {
      run->outcome = o;
      run->done = true;
    };
    return r;
  }

  static void Drain(Engine& e) {
    for (int i = 0; i < 10000 && e.pending() > 0; ++i) e.Step();
  }

  std::unique_ptr<LlamaModel> model_, attached_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<AdapterHandle> handles_;
};

TEST_F(EngineTest, GreedyEqualsGenerateForBaseAndAdapter) {
  SamplingOptions s;
  s.max_tokens = 12;
  for (int which = -1; which < 3; ++which) {
    auto engine = MakeEngine();
    Run run;
    ASSERT_TRUE(engine->Submit(Request("hello world", s, which < 0 ? nullptr : handles_[which], &run)).ok());
    Drain(*engine);
    ASSERT_TRUE(run.done);
    ASSERT_TRUE(run.outcome.status.ok()) << run.outcome.status;
    ASSERT_TRUE(attached_->SetActiveAdapters(which < 0 ? std::vector<std::string>{}
                                                       : std::vector<std::string>{"ad" + std::to_string(which)}).ok());
    std::vector<int32_t> prompt;
    for (unsigned char ch : std::string("hello world")) prompt.push_back(ch);
    auto ref = Generate(*attached_, tokenizer_.get(), prompt, s);
    ASSERT_TRUE(ref.ok());
    EXPECT_EQ(run.outcome.tokens, ref->tokens) << "adapter " << which;
    EXPECT_EQ(run.streamed_ids, ref->tokens);
    EXPECT_EQ(run.outcome.finish_reason, FinishReason::kLength);
  }
  ASSERT_TRUE(attached_->SetActiveAdapters({}).ok());
}

// The engine keeps its rows in one KvPool: after the prefill step, a decode step over three
// running rows calls attention once per layer.
TEST_F(EngineTest, DecodeStepAttendsOncePerLayer) {
  auto engine = MakeEngine();
  SamplingOptions s;
  s.max_tokens = 6;
  std::vector<Run> runs(3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(engine->Submit(Request(std::string(3 + 2 * i, 'a' + i), s, i == 0 ? nullptr : handles_[i], &runs[i])).ok());
  }
  engine->Step();  // prefill (once per row and layer) and the first decode step
  {
    testing::SdpaCounter counter;
    engine->Step();
    EXPECT_EQ(counter.calls(), model_->config().num_hidden_layers);
  }
  Drain(*engine);
  for (const Run& r : runs) {
    ASSERT_TRUE(r.done);
    EXPECT_TRUE(r.outcome.status.ok()) << r.outcome.status;
    EXPECT_EQ(r.outcome.tokens.size(), 6u);
  }
}

TEST_F(EngineTest, MixedBatchGivesEachRequestWhatItGetsAlone) {
  for (bool sampled : {false, true}) {
    std::vector<SamplingOptions> opts(4);
    for (int i = 0; i < 4; ++i) {
      opts[i].max_tokens = 10 + 3 * i;  // rows leave the batch at different steps
      if (sampled) {
        opts[i].temperature = 0.9;
        opts[i].top_k = 40;
        opts[i].top_p = 0.95;
        opts[i].seed = 1000 + i;
      }
    }
    const std::vector<std::string> prompts = {"abc", "the cat", "x", "hello there"};
    std::vector<AdapterHandle> adapters = {nullptr, handles_[0], handles_[1], handles_[2]};
    std::vector<Run> alone(4), together(4);
    for (int i = 0; i < 4; ++i) {
      auto e = MakeEngine();
      ASSERT_TRUE(e->Submit(Request(prompts[i], opts[i], adapters[i], &alone[i])).ok());
      Drain(*e);
    }
    auto e = MakeEngine();
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(e->Submit(Request(prompts[i], opts[i], adapters[i], &together[i])).ok());
    // One more request joins while the others run (continuous batching).
    e->Step();
    Run late;
    ASSERT_TRUE(e->Submit(Request(prompts[0], opts[0], adapters[1], &late)).ok());
    Drain(*e);
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(together[i].outcome.status.ok());
      EXPECT_EQ(together[i].outcome.tokens, alone[i].outcome.tokens) << "request " << i << " sampled=" << sampled;
      EXPECT_EQ(together[i].outcome.text, alone[i].outcome.text);
    }
    // The late joiner gets what it gets alone, too (prompt 0 with adapter 1).
    Run late_alone;
    {
      auto solo = MakeEngine();
      ASSERT_TRUE(solo->Submit(Request(prompts[0], opts[0], adapters[1], &late_alone)).ok());
      Drain(*solo);
    }
    ASSERT_TRUE(late.done);
    ASSERT_TRUE(late.outcome.status.ok()) << late.outcome.status;
    ASSERT_FALSE(late_alone.outcome.tokens.empty());
    EXPECT_EQ(late.outcome.tokens, late_alone.outcome.tokens) << "late request, sampled=" << sampled;
    EXPECT_EQ(late.streamed_ids, late_alone.outcome.tokens);
    // Different adapters give different outputs on the same prompt.
    Run base_run, ad_run;
    auto e2 = MakeEngine();
    ASSERT_TRUE(e2->Submit(Request("hello there", opts[0], nullptr, &base_run)).ok());
    ASSERT_TRUE(e2->Submit(Request("hello there", opts[0], handles_[2], &ad_run)).ok());
    Drain(*e2);
    EXPECT_NE(base_run.outcome.tokens, ad_run.outcome.tokens);
  }
}

// Requests admitted in the same step are prefilled in one forward pass, their prompts (of
// equal or different lengths) packed, each row with its own adapter: each still gets
// exactly its solo output.
TEST_F(EngineTest, BatchedPrefillGivesSoloOutputs) {
  for (bool sampled : {false, true}) {
    SamplingOptions opts;
    opts.max_tokens = 12;
    if (sampled) {
      opts.temperature = 0.9;
      opts.seed = 77;
    }
    std::vector<AdapterHandle> adapters = {nullptr, handles_[0], handles_[1], handles_[2],
                                           handles_[0], handles_[1]};
    const std::vector<std::string> prompts = {"the same prompt", "the same prompt", "a",
                                              "a much longer prompt than the others",
                                              "the same prompt", "mid length"};
    std::vector<Run> alone(adapters.size()), together(adapters.size());
    for (size_t i = 0; i < adapters.size(); ++i) {
      auto e = MakeEngine();
      ASSERT_TRUE(e->Submit(Request(prompts[i], opts, adapters[i], &alone[i])).ok());
      Drain(*e);
    }
    auto e = MakeEngine();
    for (size_t i = 0; i < adapters.size(); ++i) {
      ASSERT_TRUE(e->Submit(Request(prompts[i], opts, adapters[i], &together[i])).ok());
    }
    Drain(*e);
    for (size_t i = 0; i < adapters.size(); ++i) {
      ASSERT_TRUE(together[i].outcome.status.ok());
      EXPECT_EQ(together[i].outcome.tokens, alone[i].outcome.tokens)
          << "request " << i << " sampled=" << sampled;
    }
    EXPECT_NE(alone[0].outcome.tokens, alone[1].outcome.tokens);  // adapters do differ
  }
}

// A request that ends in its prefill step (here max_tokens 1; in it_inference_test an adapter
// whose first token is EOS) with an adapter the engine has not cached yet takes a slot of the
// adapter block cache, possibly the one of a running row's adapter, copying its own blocks
// over it in place. The running rows' next decode step must not use a batch assembled before
// that copy: each row keeps its solo output.
TEST_F(EngineTest, RequestEndingAtPrefillDoesNotChangeRunningRows) {
  SamplingOptions s;
  s.max_tokens = 12;
  Run alone;
  {
    auto solo = MakeEngine();
    ASSERT_TRUE(solo->Submit(Request("the cat", s, handles_[0], &alone)).ok());
    Drain(*solo);
  }
  auto e = MakeEngine();
  Run running;
  ASSERT_TRUE(e->Submit(Request("the cat", s, handles_[0], &running)).ok());
  e->Step();  // prefill and one decode step: the block cache holds ad0 in its only slot
  SamplingOptions one = s;
  one.max_tokens = 1;
  std::vector<Run> short_runs(2);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(e->Submit(Request("x", one, handles_[1 + i], &short_runs[i])).ok());
    e->Step();  // its prefill ends it; ad0's row decodes on
    ASSERT_TRUE(short_runs[i].done);
    EXPECT_EQ(short_runs[i].outcome.tokens.size(), 1u);
  }
  Drain(*e);
  ASSERT_TRUE(running.done);
  ASSERT_TRUE(running.outcome.status.ok()) << running.outcome.status;
  EXPECT_EQ(running.outcome.tokens, alone.outcome.tokens);
}

TEST_F(EngineTest, StreamsTextAndStopsBeforeStopString) {
  SamplingOptions s;
  s.max_tokens = 24;
  auto e = MakeEngine();
  Run first;
  ASSERT_TRUE(e->Submit(Request("once upon", s, handles_[0], &first)).ok());
  Drain(*e);
  ASSERT_GE(first.outcome.text.size(), 8u);
  EXPECT_EQ(first.streamed, first.outcome.text);
  const std::string stop = first.outcome.text.substr(4, 2);
  s.stop_strings = {stop};
  Run stopped;
  ASSERT_TRUE(e->Submit(Request("once upon", s, handles_[0], &stopped)).ok());
  Drain(*e);
  EXPECT_EQ(stopped.outcome.finish_reason, FinishReason::kStop);
  EXPECT_EQ(stopped.outcome.text, first.outcome.text.substr(0, first.outcome.text.find(stop)));
  EXPECT_EQ(stopped.streamed, stopped.outcome.text);
}

TEST_F(EngineTest, EosEndsGeneration) {
  SamplingOptions s;
  s.max_tokens = 20;
  auto e = MakeEngine();
  Run first;
  ASSERT_TRUE(e->Submit(Request("zz", s, nullptr, &first)).ok());
  Drain(*e);
  s.stop_ids = {first.outcome.tokens[3]};
  Run eos;
  ASSERT_TRUE(e->Submit(Request("zz", s, nullptr, &eos)).ok());
  Drain(*e);
  EXPECT_EQ(eos.outcome.finish_reason, FinishReason::kEos);
  const auto pos = std::find(first.outcome.tokens.begin(), first.outcome.tokens.end(), s.stop_ids[0]);
  EXPECT_EQ(eos.outcome.tokens, std::vector<int32_t>(first.outcome.tokens.begin(), pos + 1));
}

TEST_F(EngineTest, CancelStopsWithinOneToken) {
  SamplingOptions s;
  s.max_tokens = 50;
  auto e = MakeEngine();
  Run a, b;
  auto id = e->Submit(Request("abc", s, handles_[0], &a));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(e->Submit(Request("abc", s, nullptr, &b)).ok());
  e->Step();
  e->Step();
  const size_t before = a.streamed_ids.size();
  e->Cancel(*id);
  e->Step();
  EXPECT_TRUE(a.done);
  EXPECT_EQ(a.outcome.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(a.streamed_ids.size(), before);
  EXPECT_EQ(handles_[0]->active_requests.load(), 0);
  Drain(*e);
  EXPECT_TRUE(b.outcome.status.ok());
  EXPECT_EQ(b.outcome.tokens.size(), 50u);
}

TEST_F(EngineTest, StopEndsRequestsWithUnavailable) {
  auto e = MakeEngine();
  Run a;
  SamplingOptions s;
  ASSERT_TRUE(e->Submit(Request("abc", s, nullptr, &a)).ok());
  e->Stop();
  EXPECT_EQ(a.outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(e->Submit(Request("abc", s, nullptr, &a)).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, RejectsBadRequests) {
  auto e = MakeEngine();
  Run r;
  SamplingOptions s;
  EXPECT_EQ(e->Submit(Request("", s, nullptr, &r)).status().code(), absl::StatusCode::kInvalidArgument);
  s.max_tokens = 0;
  auto st = e->Submit(Request("a", s, nullptr, &r)).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("max_tokens"), std::string::npos);
  s.max_tokens = 500;  // + prompt > 512 context
  st = e->Submit(Request(std::string(20, 'a'), s, nullptr, &r)).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("context"), std::string::npos);
  EXPECT_FALSE(r.done);
}

TEST_F(EngineTest, BackgroundThreadServesConcurrentRequests) {
  EngineOptions o;
  o.model = model_.get();
  o.tokenizer = tokenizer_.get();
  o.threads = 1;
  int64_t tokens = 0;
  int first = 0;
  o.on_tokens = [&](int64_t n) { tokens += n; };
  o.on_first_token = [&](double) { ++first; };
  auto e = Engine::Create(o);
  ASSERT_TRUE(e.ok());
  std::vector<Run> runs(6);
  std::vector<absl::Notification> done(6);
  SamplingOptions s;
  s.max_tokens = 8;
  for (int i = 0; i < 6; ++i) {
    auto r = Request("abc", s, i % 2 ? handles_[i % 3] : nullptr, &runs[i]);
    auto inner = r.on_done;
    r.on_done = [inner, &done, i](const GenerationOutcome& out) {
      inner(out);
      done[i].Notify();
    };
    ASSERT_TRUE((*e)->Submit(std::move(r)).ok());
  }
  for (auto& d : done) ASSERT_TRUE(d.WaitForNotificationWithTimeout(absl::Seconds(60)));
  (*e)->Stop();
  for (auto& r : runs) EXPECT_EQ(r.outcome.tokens.size(), 8u);
  EXPECT_EQ(tokens, 48);
  EXPECT_EQ(first, 6);
}

}  // namespace
}  // namespace oft
