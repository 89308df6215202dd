// Serving benchmark (issue 6): generation throughput and time to first token with the base
// model only, one adapter, and 8 different adapters in one mixed batch (same batch size),
// plus adapter load latency and alias swap visibility. JSON lines on stdout.
//
// Usage: serve_bench [--model_dir=models/default] [--device=cpu] [--requests=8]
//                    [--tokens=64] [--threads=1] [--block=32] [--reps=2]
// Repetitions are interleaved across the scenarios; the best of each is reported.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "absl/synchronization/notification.h"
#include "server/artifacts/peft_format.h"
#include "server/artifacts/store.h"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/model/hf_config.h"
#include "server/model/llama.h"
#include "server/model/tokenizer.h"
#include "server/serving/adapter_registry.h"
#include "server/serving/engine.h"

namespace {

using Clock = std::chrono::steady_clock;
double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Result {
  double tokens_per_second = 0, mean_ttft_ms = 0, max_ttft_ms = 0;
};

Result RunBatch(oft::Engine& engine, const std::vector<int32_t>& prompt,
                const std::vector<oft::AdapterHandle>& adapters, int64_t tokens) {
  const size_t n = adapters.size();
  std::vector<oft::GenerationOutcome> outs(n);
  std::vector<absl::Notification> done(n);
  const auto start = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    oft::GenerationRequest r;
    r.prompt = prompt;
    r.sampling.max_tokens = tokens;
    r.adapter = adapters[i];
    r.on_done = [&outs, &done, i](const oft::GenerationOutcome& o) {
      outs[i] = o;
      done[i].Notify();
    };
    if (!engine.Submit(std::move(r)).ok()) std::abort();
  }
  for (auto& d : done) d.WaitForNotification();
  const double ms = Ms(start, Clock::now());
  Result res;
  int64_t generated = 0;
  for (const auto& o : outs) {
    if (!o.status.ok()) {
      std::fprintf(stderr, "generation failed: %s\n", o.status.ToString().c_str());
      std::abort();
    }
    generated += static_cast<int64_t>(o.tokens.size());
    res.mean_ttft_ms += o.time_to_first_token_seconds * 1e3 / n;
    res.max_ttft_ms = std::max(res.max_ttft_ms, o.time_to_first_token_seconds * 1e3);
  }
  res.tokens_per_second = generated / (ms / 1e3);
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: serve_bench [--model_dir=models/default] [--device=cpu] [--requests=8]\n"
      "                   [--tokens=64] [--threads=1] [--block=32] [--reps=2]\n"
      "Generation tokens/s and time to first token: base only, one adapter, 8 adapters mixed;\n"
      "adapter load and swap latency. JSON lines on stdout.\n")) {
    return 0;
  }
  std::string model_dir = "models/default", device = "cpu", v;
  int64_t requests = 8, tokens = 64, block = 32;
  int threads = 1, reps = 2;
  for (int i = 1; i < argc; ++i) {
    if (oft::ParseFlag(argv[i], "--model_dir", &v)) model_dir = v;
    else if (oft::ParseFlag(argv[i], "--device", &v)) device = v;
    else if (oft::ParseFlag(argv[i], "--requests", &v)) requests = std::stoll(v);
    else if (oft::ParseFlag(argv[i], "--tokens", &v)) tokens = std::stoll(v);
    else if (oft::ParseFlag(argv[i], "--threads", &v)) threads = std::stoi(v);
    else if (oft::ParseFlag(argv[i], "--block", &v)) block = std::stoll(v);
    else if (oft::ParseFlag(argv[i], "--reps", &v)) reps = std::max(1, std::stoi(v));
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  threads = oft::ConfigureCpuRuntime(threads);
  oft::LoadOptions lo;
  lo.device = device;
  // The dtype the server serves this model in on this device (serving.cc).
  if (auto cfg = oft::LoadModelConfig(model_dir); cfg.ok()) lo.dtype = oft::DeviceComputeDtype(*cfg, device);
  auto model = oft::LlamaModel::Load(model_dir, lo);
  auto scratch = oft::LlamaModel::Load(model_dir, lo);
  auto tok = oft::Tokenizer::FromFile(model_dir + "/tokenizer.json");
  if (!model.ok() || !scratch.ok() || !tok.ok()) {
    std::fprintf(stderr, "cannot load %s\n", model_dir.c_str());
    return 1;
  }
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("serve_bench-" + std::to_string(::getpid()));
  auto store = oft::AdapterStore::Open(root.string());
  if (!store.ok()) return 1;
  // 8 random adapters (+ a second version of the first, for the swap).
  oft::TargetSpec targets;
  targets.target_modules = {"all-linear"};
  oft::OftConfig cfg;
  cfg.oft_block_size = block;
  cfg.init_weights = false;
  for (int i = 0; i < 9; ++i) {
    at::manual_seed(100 + i);
    const std::string name = i < 8 ? "a" + std::to_string(i) : "a0";
    if (!(*scratch)->AddAdapter("tmp", cfg, targets).ok()) return 1;
    const fs::path staging = root / ("staging" + std::to_string(i));
    if (!oft::SavePeftAdapter(**scratch, "tmp", targets, "default", staging.string()).ok()) return 1;
    (*scratch)->RemoveAdapter("tmp").IgnoreError();
    oft::PublishInfo info;
    info.base_model = "default";
    if (!(*store)->Publish("bench", name, staging.string(), info).ok()) return 1;
  }
  oft::AdapterRegistryOptions ro;
  ro.store = store->get();
  ro.bases["default"] = oft::ServingBase{model->get(), ""};
  auto registry = oft::AdapterRegistry::Create(ro);
  if (!registry.ok()) return 1;

  // Adapter load latency: cold loads (read, verify, build rotations).
  double load_ms = 0;
  std::vector<oft::AdapterHandle> handles;
  for (int i = 0; i < 8; ++i) {
    const auto t0 = Clock::now();
    auto h = (*registry)->Load("bench", "a" + std::to_string(i), 1);
    load_ms += Ms(t0, Clock::now()) / 8;
    if (!h.ok()) {
      std::fprintf(stderr, "load: %s\n", h.status().ToString().c_str());
      return 1;
    }
    handles.push_back(*h);
  }
  std::printf("{\"bench\":\"serve_adapter_load\",\"device\":\"%s\",\"block\":%lld,\"adapter_bytes\":%lld,"
              "\"mean_load_ms\":%.3f}\n",
              device.c_str(), static_cast<long long>(block),
              static_cast<long long>(handles[0]->memory_bytes), load_ms);

  oft::EngineOptions eo;
  eo.model = model->get();
  eo.tokenizer = tok->get();
  eo.max_batch = requests;
  eo.threads = threads;
  auto engine = oft::Engine::Create(eo);
  if (!engine.ok()) return 1;
  const std::vector<int32_t> prompt = (*tok)->Encode("The quick brown fox jumps over the lazy dog.", true);
  struct Scenario {
    const char* name;
    std::vector<oft::AdapterHandle> adapters;
  };
  std::vector<Scenario> scenarios = {
      {"base", std::vector<oft::AdapterHandle>(requests, nullptr)},
      {"one_adapter", std::vector<oft::AdapterHandle>(requests, handles[0])},
      {"mixed_8_adapters", {}}};
  for (int64_t i = 0; i < requests; ++i) scenarios[2].adapters.push_back(handles[i % 8]);
  RunBatch(**engine, prompt, scenarios[0].adapters, 8);  // warm-up
  // Repetitions are interleaved across scenarios (base, one, mixed, base, ...) so that a
  // slow phase of a shared machine hits every scenario alike; the best of each is kept.
  std::vector<Result> best(scenarios.size());
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < scenarios.size(); ++i) {
      Result res = RunBatch(**engine, prompt, scenarios[i].adapters, tokens);
      if (res.tokens_per_second > best[i].tokens_per_second) best[i] = res;
    }
  }
  const double base_tps = best[0].tokens_per_second;
  for (size_t i = 0; i < scenarios.size(); ++i) {
    std::printf("{\"bench\":\"serve_generate\",\"device\":\"%s\",\"threads\":%d,\"scenario\":\"%s\","
                "\"requests\":%lld,\"tokens\":%lld,\"tokens_per_second\":%.1f,\"vs_base\":%.3f,"
                "\"mean_ttft_ms\":%.2f,\"max_ttft_ms\":%.2f}\n",
                device.c_str(), threads, scenarios[i].name, static_cast<long long>(requests),
                static_cast<long long>(tokens), best[i].tokens_per_second,
                base_tps > 0 ? best[i].tokens_per_second / base_tps : 0.0, best[i].mean_ttft_ms,
                best[i].max_ttft_ms);
    std::fflush(stdout);
  }

  // Swap visibility: from SetAlias returning (target already loaded) to a new request being
  // resolved to, and producing its first token with, the new version.
  double visible_ms = 0, first_token_ms = 0;
  const int swaps = 10;
  if (!(*registry)->Load("bench", "a0", 2).ok()) return 1;
  for (int i = 0; i < swaps; ++i) {
    const int64_t target = 1 + (i % 2);
    if (!(*registry)->SetAlias("bench", "prod", "a0", target).ok()) return 1;
    const auto t0 = Clock::now();
    auto h = (*registry)->AcquireAlias("bench", "prod");
    if (!h.ok() || (*h)->id.version != target) return 1;
    visible_ms += Ms(t0, Clock::now()) / swaps;
    absl::Notification first;
    oft::GenerationRequest r;
    r.prompt = prompt;
    r.sampling.max_tokens = 1;
    r.adapter = *h;
    r.on_done = [&](const oft::GenerationOutcome&) { first.Notify(); };
    if (!(*engine)->Submit(std::move(r)).ok()) return 1;
    first.WaitForNotification();
    first_token_ms += Ms(t0, Clock::now()) / swaps;
  }
  std::printf("{\"bench\":\"serve_swap\",\"device\":\"%s\",\"swap_visible_ms\":%.4f,"
              "\"swap_to_first_token_ms\":%.2f}\n",
              device.c_str(), visible_ms, first_token_ms);
  (*engine)->Stop();
  std::error_code ec;
  for (auto& p : fs::recursive_directory_iterator(root, ec)) {
    fs::permissions(p.path(), fs::perms::owner_all, fs::perm_options::add, ec);
  }
  fs::remove_all(root, ec);
  return 0;
}
