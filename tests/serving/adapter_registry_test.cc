// AdapterRegistry and InferenceBackend: load-first-then-swap, aliases, in-flight versions,
// memory return, LRU budget, restore after restart, integrity and base checks, hot swap
// under load, unmerged == merged, request validation.
#include "server/serving/adapter_registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/artifacts/peft_format.h"
#include "server/artifacts/store.h"
#include "server/model/generate.h"
#include "server/oft/cpu_isa.h"
#include "server/serving/engine.h"
#include "server/serving/serving.h"
#include "tests/serving/serving_fixtures.h"

namespace oft {
namespace {

namespace fs = std::filesystem;
using testing::MakeTempDir;
using testing::MakeTinyModel;
using testing::PublishRandomAdapter;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeTempDir("oft-serving");
    auto store = AdapterStore::Open(root_);
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    model_ = MakeTinyModel();
    scratch_ = MakeTinyModel();
    tokenizer_ = testing::MakeByteTokenizer();
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(root_, fs::perms::owner_all, fs::perm_options::add, ec);
    for (auto& p : fs::recursive_directory_iterator(root_, ec)) {
      fs::permissions(p.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
    fs::remove_all(root_, ec);
  }

  AdapterRegistryOptions Options(int64_t budget = int64_t{1} << 30, std::string state_dir = "") {
    AdapterRegistryOptions o;
    o.store = store_.get();
    o.bases["tiny"] = ServingBase{model_.get(), ""};
    o.memory_budget_bytes = budget;
    o.state_dir = std::move(state_dir);
    return o;
  }

  void Publish(const std::string& name, uint64_t seed, const std::string& base = "tiny") {
    auto m = PublishRandomAdapter(*store_, *scratch_, "t", name, seed, base);
    ASSERT_TRUE(m.ok()) << m.status();
  }

  std::unique_ptr<AdapterRegistry> Make(const AdapterRegistryOptions& o) {
    auto r = AdapterRegistry::Create(o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(*r) : nullptr;
  }

  std::string root_;
  std::unique_ptr<AdapterStore> store_;
  std::unique_ptr<LlamaModel> model_, scratch_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(RegistryTest, LoadsLatestAndAliasSwapKeepsInFlightVersion) {
  Publish("bot", 1);
  Publish("bot", 2);
  double load_seconds = -1;
  int64_t loaded = -1;
  auto o = Options();
  o.on_load = [&](double s) { load_seconds = s; };
  o.loaded_count = [&](int64_t n) { loaded = n; };
  auto r = Make(o);
  auto latest = r->Load("t", "bot", 0);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ((*latest)->id.version, 2);
  EXPECT_GE(load_seconds, 0);
  EXPECT_EQ(loaded, 1);
  EXPECT_GT((*latest)->memory_bytes, 0);

  auto set = r->SetAlias("t", "prod", "bot", 1);
  ASSERT_TRUE(set.ok());
  EXPECT_FALSE(set->previous_target.has_value());
  auto in_flight = r->AcquireAlias("t", "prod");
  ASSERT_TRUE(in_flight.ok());
  EXPECT_EQ((*in_flight)->id.version, 1);
  set = r->SetAlias("t", "prod", "bot", 2);
  ASSERT_TRUE(set.ok());
  ASSERT_TRUE(set->previous_target.has_value());
  EXPECT_EQ(set->previous_target->version, 1);
  auto now = r->AcquireAlias("t", "prod");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ((*now)->id.version, 2);
  EXPECT_EQ((*in_flight)->id.version, 1);  // the old request keeps its version
  // Version 0 in a request: the highest loaded version.
  auto v0 = r->Acquire("t", "bot", 0);
  ASSERT_TRUE(v0.ok());
  EXPECT_EQ((*v0)->id.version, 2);

  auto list = r->List("t");
  ASSERT_EQ(list.adapters.size(), 2u);
  ASSERT_EQ(list.aliases.size(), 1u);
  EXPECT_EQ(list.aliases[0].target.version, 2);
  EXPECT_EQ(list.adapters[1].aliases, std::vector<std::string>{"prod"});
  EXPECT_TRUE(r->List("other").adapters.empty());  // tenants are separate
  EXPECT_EQ(r->AcquireAlias("other", "prod").status().code(), absl::StatusCode::kNotFound);
}

// The served form follows the registry's option: the compact form (fp16 R - I on the AVX
// paths) holds half the bytes of fp32 R, and the memory accounting counts what is held.
TEST_F(RegistryTest, ServedRotationsOptionPicksTheForm) {
  Publish("bot", 1);
  auto compact_registry = Make(Options());
  auto compact = compact_registry->Load("t", "bot", 1);
  ASSERT_TRUE(compact.ok()) << compact.status();
  auto o = Options();
  o.served_rotations = ServedRotations::kFp32;
  auto fp32_registry = Make(o);
  auto fp32 = fp32_registry->Load("t", "bot", 1);
  ASSERT_TRUE(fp32.ok()) << fp32.status();
  EXPECT_FALSE((*fp32)->weights->delta());
  if (cpu::ConvertsHalfInHardware(cpu::ActiveIsa())) {
    EXPECT_TRUE((*compact)->weights->delta());
    EXPECT_EQ((*compact)->memory_bytes * 2, (*fp32)->memory_bytes);
  } else {
    EXPECT_FALSE((*compact)->weights->delta());
  }
}

TEST_F(RegistryTest, FailedLoadLeavesAliasServing) {
  Publish("bot", 1);
  Publish("bot", 2);
  auto r = Make(Options());
  ASSERT_TRUE(r->SetAlias("t", "prod", "bot", 1).ok());
  EXPECT_EQ(r->SetAlias("t", "prod", "missing", 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->SetAlias("t", "prod", "bot", 7).status().code(), absl::StatusCode::kNotFound);
  // Damage version 2's weights: DATA_LOSS, alias unchanged.
  auto dir = store_->VersionDir("t", "bot", 2);
  ASSERT_TRUE(dir.ok());
  const fs::path w = fs::path(*dir) / kAdapterWeightsFile;
  fs::permissions(*dir, fs::perms::owner_all, fs::perm_options::add);
  fs::permissions(w, fs::perms::owner_write, fs::perm_options::add);
  {
    std::fstream f(w, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-4, std::ios::end);
    f.write("XXXX", 4);
  }
  EXPECT_EQ(r->SetAlias("t", "prod", "bot", 2).status().code(), absl::StatusCode::kDataLoss);
  auto h = r->AcquireAlias("t", "prod");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ((*h)->id.version, 1);
}

TEST_F(RegistryTest, RejectsAdapterOfAnotherBaseAndBadNames) {
  Publish("foreign", 3, "other-base");
  auto r = Make(Options());
  auto s = r->Load("t", "foreign", 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("other-base"), std::string::npos);
  EXPECT_EQ(r->Load("t", "../x", 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->Load("t", "nope", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->SetAlias("t", "bad alias", "foreign", 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->DeleteAlias("t", "none").code(), absl::StatusCode::kNotFound);
  // A config hash mismatch is refused too.
  Publish("bot", 4);
  auto o = Options();
  o.bases["tiny"].config_sha256 = "abc";
  auto sha_store_manifest = store_->Get("t", "bot", 1);
  ASSERT_TRUE(sha_store_manifest.ok());
  // The fixture publishes without a config hash: nothing to compare, so it loads.
  EXPECT_TRUE(Make(o)->Load("t", "bot", 1).ok());
}

TEST_F(RegistryTest, MemoryReturnsWhenTheLastHandleDrops) {
  Publish("bot", 1);
  auto r = Make(Options());
  auto h = r->Acquire("t", "bot", 1);
  ASSERT_TRUE(h.ok());
  std::weak_ptr<const ServingAdapter> weights = (*h)->weights;
  const int64_t bytes = (*h)->memory_bytes;
  EXPECT_EQ(r->live_bytes(), bytes);
  ASSERT_TRUE(r->SetAlias("t", "prod", "bot", 1).ok());
  EXPECT_EQ(r->Unload("t", "bot", 1).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(r->DeleteAlias("t", "prod").ok());
  ASSERT_TRUE(r->Unload("t", "bot", 1).ok());
  EXPECT_EQ(r->Unload("t", "bot", 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->memory_used_bytes(), 0);
  EXPECT_EQ(r->live_bytes(), bytes);  // a request still holds it
  EXPECT_FALSE(weights.expired());
  h->reset();
  EXPECT_TRUE(weights.expired());
  EXPECT_EQ(r->live_bytes(), 0);
}

TEST_F(RegistryTest, LeastRecentlyUsedIsEvictedBeyondTheBudget) {
  for (int i = 0; i < 4; ++i) Publish("a" + std::to_string(i), 10 + i);
  int64_t one = 0;
  {
    auto probe = Make(Options());
    one = (*probe->Load("t", "a0", 1))->memory_bytes;
  }
  auto r = Make(Options(one * 5 / 2));  // room for two
  auto too_big = Make(Options(one - 1));
  EXPECT_EQ(too_big->Load("t", "a0", 1).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(r->Load("t", "a0", 1).ok());
  ASSERT_TRUE(r->Load("t", "a1", 1).ok());
  ASSERT_TRUE(r->Acquire("t", "a0", 1).ok());  // a0 used more recently than a1
  ASSERT_TRUE(r->Load("t", "a2", 1).ok());     // evicts a1
  auto names = [&] {
    std::vector<std::string> n;
    for (const auto& a : r->List("t").adapters) n.push_back(a.id.name);
    return n;
  };
  EXPECT_EQ(names(), (std::vector<std::string>{"a0", "a2"}));
  EXPECT_LE(r->memory_used_bytes(), one * 5 / 2);
  // In use by a request: evicted only after idle ones.
  auto held = r->Acquire("t", "a0", 1);
  (*held)->active_requests.fetch_add(1);
  ASSERT_TRUE(r->Acquire("t", "a2", 1).ok());  // a2 most recent, a0 in use
  ASSERT_TRUE(r->Load("t", "a3", 1).ok());     // a0 is LRU but in use: a2 goes
  EXPECT_EQ(names(), (std::vector<std::string>{"a0", "a3"}));
  (*held)->active_requests.fetch_sub(1);
  // On demand: an evicted adapter named by a request loads again.
  auto again = r->Acquire("t", "a1", 1);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->id.name, "a1");
}

// An engine's stacked blocks (SetHolderBytes) count in the budget: they push out the least
// recently used version, show in memory_used_bytes, and free room when they drop.
TEST_F(RegistryTest, HolderBytesCountInTheBudget) {
  for (int i = 0; i < 3; ++i) Publish("a" + std::to_string(i), 20 + i);
  int64_t one = 0;
  {
    auto probe = Make(Options());
    one = (*probe->Load("t", "a0", 1))->memory_bytes;
  }
  auto r = Make(Options(one * 5 / 2));  // room for two versions
  ASSERT_TRUE(r->Load("t", "a0", 1).ok());
  ASSERT_TRUE(r->Load("t", "a1", 1).ok());
  EXPECT_EQ(r->memory_used_bytes(), 2 * one);
  r->SetHolderBytes("engine:default", one);  // 3 > 2.5: a0 (least recently used) goes
  std::vector<std::string> names;
  for (const auto& a : r->List("t").adapters) names.push_back(a.id.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a1"}));
  EXPECT_EQ(r->memory_used_bytes(), 2 * one);
  EXPECT_EQ(r->List("t").memory_used_bytes, 2 * one);
  r->SetHolderBytes("engine:default", 0);
  EXPECT_EQ(r->memory_used_bytes(), one);
  ASSERT_TRUE(r->Load("t", "a2", 1).ok());  // fits again next to a1
  EXPECT_EQ(r->List("t").adapters.size(), 2u);
}

TEST_F(RegistryTest, RestoresLoadedSetAndAliasesAfterRestart) {
  Publish("a", 1);
  Publish("b", 2);
  Publish("b", 3);
  const std::string state = root_ + "/state";
  {
    auto r = Make(Options(int64_t{1} << 30, state));
    ASSERT_TRUE(r->Load("t", "a", 1).ok());
    ASSERT_TRUE(r->SetAlias("t", "prod", "b", 2).ok());
    ASSERT_TRUE(r->Load("t", "b", 1).ok());
    ASSERT_TRUE(r->Unload("t", "b", 1).ok());
  }
  EXPECT_TRUE(fs::exists(state + "/serving_state.json"));
  auto r = Make(Options(int64_t{1} << 30, state));
  auto list = r->List("t");
  ASSERT_EQ(list.adapters.size(), 2u);
  EXPECT_EQ(list.adapters[0].id.name, "a");
  EXPECT_EQ(list.adapters[1].id.name, "b");
  EXPECT_EQ(list.adapters[1].id.version, 2);
  ASSERT_EQ(list.aliases.size(), 1u);
  EXPECT_EQ(list.aliases[0].alias, "prod");
  EXPECT_EQ(list.aliases[0].target.version, 2);
}

// Greedy output with an unmerged adapter equals the merged model's output.
TEST_F(RegistryTest, UnmergedAdapterEqualsMergedModel) {
  at::NoGradGuard ng;
  ASSERT_TRUE(testing::AddRandomAdapter(*scratch_, "m", 77).ok());
  const std::string staging = MakeTempDir("oft-staging"), merged_dir = MakeTempDir("oft-merged");
  ASSERT_TRUE(SavePeftAdapter(*scratch_, "m", testing::AllLinear(), "tiny", staging).ok());
  ASSERT_TRUE(ExportMergedModel(*scratch_, "m", merged_dir, at::kFloat).ok());
  PublishInfo info;
  info.base_model = "tiny";
  ASSERT_TRUE(store_->Publish("t", "m", staging, info).ok());
  auto merged = LlamaModel::Load(merged_dir, {});
  ASSERT_TRUE(merged.ok()) << merged.status();
  auto r = Make(Options());
  auto h = r->Acquire("t", "m", 1);
  ASSERT_TRUE(h.ok()) << h.status();

  std::vector<int32_t> prompt = {104, 101, 108, 108, 111};
  SamplingOptions s;
  s.max_tokens = 16;
  auto expected = Generate(**merged, nullptr, prompt, s);
  ASSERT_TRUE(expected.ok());
  EngineOptions eo;
  eo.model = model_.get();
  eo.start_thread = false;
  auto engine = Engine::Create(eo);
  ASSERT_TRUE(engine.ok());
  GenerationOutcome out;
  GenerationRequest req;
  req.prompt = prompt;
  req.sampling = s;
  req.adapter = *h;
  req.on_done = [&](const GenerationOutcome& o) { out = o; };
  ASSERT_TRUE((*engine)->Submit(std::move(req)).ok());
  while ((*engine)->pending() > 0) (*engine)->Step();
  ASSERT_TRUE(out.status.ok());
  EXPECT_EQ(out.tokens, expected->tokens);

  // Logits within tolerance, and different from the base model's.
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  auto x = at::tensor(ids, at::kLong).unsqueeze(0);
  AdapterBatch batch = model_->MakeAdapterBatch({(*h)->weights.get()});
  KvCache cache;
  ServingBatch sb;
  sb.caches = {&cache};
  sb.adapters = &batch;
  auto unmerged_logits = model_->ForwardBatch(x, sb);
  auto merged_logits = (*merged)->Forward(x);
  EXPECT_LT((unmerged_logits - merged_logits).abs().max().item<double>(), 1e-3);
  EXPECT_GT((model_->Forward(x) - merged_logits).abs().max().item<double>(), 1e-2);
  fs::remove_all(staging);
  fs::remove_all(merged_dir);
}

class BackendTest : public RegistryTest {
 protected:
  std::unique_ptr<InferenceBackend> MakeBackend() {
    InferenceOptions o;
    o.store = store_.get();
    ServedBaseModel b;
    b.name = "tiny";
    b.model = model_.get();
    b.tokenizer = tokenizer_.get();
    o.bases.push_back(b);
    o.engine_threads = 1;
    auto r = InferenceBackend::Create(o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(*r) : nullptr;
  }

  struct Result {
    absl::Status start;
    GenerateStart info;
    GenerationOutcome outcome;
  };

  // Runs one request to completion.
  Result Run(InferenceBackend& backend, const GenerateParams& p) {
    Result res;
    absl::Notification done;
    auto started = backend.StartGenerate("t", p, nullptr, [&](const GenerationOutcome& o) {
      res.outcome = o;
      done.Notify();
    });
    res.start = started.status();
    if (!started.ok()) return res;
    res.info = *started;
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    return res;
  }
};

TEST_F(BackendTest, BadInputsGetClearErrorsAndTheServerKeepsServing) {
  Publish("bot", 1);
  Publish("foreign", 2, "other-base");
  auto backend = MakeBackend();
  GenerateParams ok;
  ok.text = "hello";
  ok.max_tokens = 4;
  ok.temperature = 0.0;
  struct Case {
    std::function<void(GenerateParams&)> edit;
    absl::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases = {
      {[](GenerateParams& p) { p.text = ""; }, absl::StatusCode::kInvalidArgument, "text"},
      {[](GenerateParams& p) { p.text.reset(); }, absl::StatusCode::kInvalidArgument, "prompt"},
      {[](GenerateParams& p) { p.max_tokens = 5000; }, absl::StatusCode::kInvalidArgument, "max_tokens"},
      {[](GenerateParams& p) { p.max_tokens = -1; }, absl::StatusCode::kInvalidArgument, "max_tokens"},
      {[](GenerateParams& p) { p.max_tokens = 600; }, absl::StatusCode::kInvalidArgument, "context"},
      {[](GenerateParams& p) { p.temperature = 3.0; }, absl::StatusCode::kInvalidArgument, "temperature"},
      {[](GenerateParams& p) { p.top_p = 0.0; }, absl::StatusCode::kInvalidArgument, "top_p"},
      {[](GenerateParams& p) { p.top_k = -2; }, absl::StatusCode::kInvalidArgument, "top_k"},
      {[](GenerateParams& p) { p.stop = {""}; }, absl::StatusCode::kInvalidArgument, "stop[0]"},
      {[](GenerateParams& p) { p.stop = std::vector<std::string>(9, "x"); }, absl::StatusCode::kInvalidArgument, "stop"},
      {[](GenerateParams& p) { p.adapter = AdapterId{"", "nope", 0}; }, absl::StatusCode::kNotFound, "nope"},
      {[](GenerateParams& p) { p.alias = "nope"; }, absl::StatusCode::kNotFound, "alias"},
      {[](GenerateParams& p) { p.adapter = AdapterId{"", "foreign", 1}; }, absl::StatusCode::kFailedPrecondition, "other-base"},
      {[](GenerateParams& p) { p.base_model = "nope"; }, absl::StatusCode::kNotFound, "base_model"},
      {[](GenerateParams& p) {
         p.text.reset();
         p.chat = std::vector<Message>{{"user", "hi"}};
       }, absl::StatusCode::kFailedPrecondition, "chat template"},
      {[](GenerateParams& p) {
         p.text.reset();
         p.chat = std::vector<Message>{{"robot", "hi"}};
       }, absl::StatusCode::kInvalidArgument, "chat.messages[0].role"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    GenerateParams p = ok;
    cases[i].edit(p);
    auto r = Run(*backend, p);
    EXPECT_EQ(r.start.code(), cases[i].code) << "case " << i << ": " << r.start;
    EXPECT_NE(r.start.message().find(cases[i].needle), std::string::npos) << "case " << i << ": " << r.start;
  }
  GenerateParams good = ok;
  good.adapter = AdapterId{"", "bot", 0};
  auto r = Run(*backend, good);
  ASSERT_TRUE(r.start.ok()) << r.start;
  EXPECT_TRUE(r.outcome.status.ok());
  EXPECT_EQ(r.outcome.tokens.size(), 4u);
  ASSERT_TRUE(r.info.served_by.has_value());
  EXPECT_EQ(r.info.served_by->version, 1);
  // Same seed, same output; the seed is reported.
  GenerateParams sampled = ok;
  sampled.temperature = 1.0;
  sampled.seed = 42;
  sampled.max_tokens = 12;
  auto s1 = Run(*backend, sampled), s2 = Run(*backend, sampled);
  EXPECT_EQ(s1.info.seed, 42u);
  EXPECT_EQ(s1.outcome.tokens, s2.outcome.tokens);
}

// Clients generate continuously while the alias is swapped between versions and another
// adapter is unloaded and reloaded: no failure, each response entirely from one version.
TEST_F(BackendTest, HotSwapUnderLoad) {
  Publish("bot", 1);
  Publish("bot", 2);
  Publish("side", 3);
  auto backend = MakeBackend();
  ASSERT_TRUE(backend->SetAlias("t", "prod", "bot", 1).ok());
  GenerateParams p;
  p.text = "swap";
  p.max_tokens = 6;
  p.temperature = 0.0;
  std::map<int64_t, std::vector<int32_t>> expected;
  for (int v : {1, 2}) {
    GenerateParams q = p;
    q.adapter = AdapterId{"", "bot", v};
    auto r = Run(*backend, q);
    ASSERT_TRUE(r.start.ok());
    expected[v] = r.outcome.tokens;
  }
  ASSERT_NE(expected[1], expected[2]);
  GenerateParams side = p;
  side.adapter = AdapterId{"", "side", 1};
  const auto side_expected = Run(*backend, side).outcome.tokens;

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, wrong{0}, served{0};
  std::map<int64_t, int> by_version;
  absl::Mutex by_mu;
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      while (!stop.load()) {
        GenerateParams q = c == 2 ? side : p;
        if (c != 2) q.alias = "prod";
        auto r = Run(*backend, q);
        if (!r.start.ok() || !r.outcome.status.ok()) {
          ++failures;
          ADD_FAILURE() << r.start << " / " << r.outcome.status;
          continue;
        }
        ++served;
        if (c == 2) {
          if (r.outcome.tokens != side_expected) ++wrong;
          continue;
        }
        const int64_t v = r.info.served_by->version;
        if (r.outcome.tokens != expected[v]) ++wrong;
        absl::MutexLock l(&by_mu);
        ++by_version[v];
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(backend->SetAlias("t", "prod", "bot", 1 + (i % 2)).ok());
    auto un = backend->UnloadAdapter("t", "side", 1);
    EXPECT_TRUE(un.ok() || un.code() == absl::StatusCode::kNotFound) << un;
    if (i % 3 == 0) {
      ASSERT_TRUE(backend->LoadAdapter("t", "side", 1).ok());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
  }
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(served.load(), 10);
  EXPECT_GT(by_version[1], 0);
  EXPECT_GT(by_version[2], 0);
}

}  // namespace
}  // namespace oft
