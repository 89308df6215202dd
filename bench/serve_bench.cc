// Serving benchmark (issues 6 and 11): generation throughput and time to first token with
// the base model only, one adapter, and 8 different adapters in one mixed batch (same batch
// size); adapter load latency, cold (files dropped from the page cache first) and warm; and
// alias swap latency under load. JSON lines on stdout; every row names the CPU path ("isa")
// and the CPU model ("cpu").
//
// Usage: serve_bench [--model_dir=models/default] [--device=cpu] [--requests=8]
//                    [--tokens=64] [--threads=0] [--block=32] [--reps=3] [--swaps=10]
//                    [--compare_unpacked] [--compare_fp32_rotations]
//   --threads=0 (default): the engine picks its thread count per Forward (decode_threads.h)
//     up to all hardware threads; N > 0: always N.
//   --compare_unpacked: also runs base and mixed on a second copy of the model without the
//     packed decode weights (at::linear), interleaved with the others.
//   --compare_fp32_rotations: also runs one adapter and mixed with the adapters served as fp32
//     R (ServedRotations::kFp32) instead of the compact fp16 R - I, on the same model through
//     a second registry and engine, interleaved with the others.
// The model is loaded as the server loads it (LoadServingBase: packed decode weights on the
// CPU). Repetitions are interleaved across the scenarios (base, one, mixed, base, ...) so that
// a slow phase of a shared machine hits every scenario alike; each row reports the median.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ATen/ATen.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "bench/machine_info.h"
#include "bench/stats.h"
#include "server/artifacts/peft_format.h"
#include "server/artifacts/store.h"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/model/hf_config.h"
#include "server/model/llama.h"
#include "server/model/tokenizer.h"
#include "server/serving/adapter_registry.h"
#include "server/serving/engine.h"
#include "server/serving/serving.h"

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

// Drops every file under `dir` from the page cache (written back first: dirty pages stay).
bool DropFromPageCache(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    const int fd = ::open(e.path().c_str(), O_RDONLY);
    if (fd < 0) return false;
    ::fdatasync(fd);
    const int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    if (rc != 0) return false;
  }
  return !ec;
}

// Swap under load: the streams generate continuously while a client thread polls the alias
// (every kPollMicros) and sends a one-token request as soon as it resolves to the new
// version; each swap is timed from just before SetAlias on this thread to that request's
// first token (so it includes the poll gap, the wait for the engine's step in progress,
// queueing, and the step that prefills it). The engine needs max_batch > streams.
constexpr int kSwapClients = 1;
constexpr int64_t kPollMicros = 200;
struct SwapResult {
  std::vector<double> swap_ms;
  double decode_step_ms = 0;  // median interval between tokens of the streams meanwhile
  int failures = 0;
};

SwapResult MeasureSwapUnderLoad(oft::Engine& engine, oft::AdapterRegistry& registry,
                                const std::vector<int32_t>& prompt,
                                const std::vector<oft::AdapterHandle>& stream_adapters, int swaps) {
  SwapResult out;
  std::atomic<bool> stop{false};
  absl::Mutex mu;
  std::vector<double> intervals;  // guarded by mu
  std::atomic<int> live{0};  // requests submitted and not done (streams and client)
  // The streams: resubmitted when they finish, until `stop`.
  std::function<void(size_t)> start_stream = [&](size_t i) {
    oft::GenerationRequest r;
    r.prompt = prompt;
    r.sampling.max_tokens = 256;
    r.adapter = stream_adapters[i % stream_adapters.size()];
    auto last = std::make_shared<Clock::time_point>();
    r.on_chunk = [&, last](const oft::GenerationChunk&) {
      const auto now = Clock::now();
      if (last->time_since_epoch().count() != 0) {
        absl::MutexLock lock(&mu);
        intervals.push_back(Ms(*last, now));
      }
      *last = now;
    };
    r.on_done = [&, i](const oft::GenerationOutcome&) {
      if (!stop.load()) start_stream(i);  // on the engine thread: Submit only queues
      live.fetch_sub(1);
    };
    live.fetch_add(1);
    if (!engine.Submit(std::move(r)).ok()) live.fetch_sub(1);
  };
  for (size_t i = 0; i < stream_adapters.size(); ++i) start_stream(i);
  // Let the streams reach a steady state.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // The client: polls the alias every kPollMicros (as a stream of arriving requests would
  // resolve it) and, once it resolves to `want_version`, submits one one-token request
  // through it; each swap ends at that request's first token.
  std::atomic<int64_t> want_version{0};
  std::atomic<int64_t> seen_ns{0};  // steady_clock ns of that first token, 0 = not yet
  std::atomic<bool> client_stop{false};
  std::atomic<int> client_failures{0};
  std::thread client([&] {
    int64_t submitted_for = 0;  // the version a request was already sent for
    while (!client_stop.load()) {
      auto h = registry.AcquireAlias("bench", "prod");
      if (!h.ok()) {
        client_failures.fetch_add(1);
      } else if ((*h)->id.version == want_version.load() && submitted_for != want_version.load()) {
        submitted_for = (*h)->id.version;
        oft::GenerationRequest r;
        r.prompt = prompt;
        r.sampling.max_tokens = 1;
        r.adapter = *h;
        r.on_chunk = [&](const oft::GenerationChunk&) {
          int64_t zero = 0;
          seen_ns.compare_exchange_strong(zero, Clock::now().time_since_epoch().count());
        };
        r.on_done = [&](const oft::GenerationOutcome& o) {
          if (!o.status.ok()) client_failures.fetch_add(1);
          live.fetch_sub(1);
        };
        live.fetch_add(1);
        if (!engine.Submit(std::move(r)).ok()) {
          live.fetch_sub(1);
          client_failures.fetch_add(1);
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(kPollMicros));
    }
  });
  for (int s = 0; s < swaps; ++s) {
    const int64_t target = 2 - (s % 2);  // the alias starts at version 1
    seen_ns.store(0);
    want_version.store(target);
    const auto t0 = Clock::now();
    if (!registry.SetAlias("bench", "prod", "a0", target).ok()) {
      ++out.failures;
      continue;
    }
    const auto deadline = t0 + std::chrono::seconds(5);
    while (seen_ns.load() == 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::microseconds(100));
    const int64_t ns = seen_ns.load();
    if (ns == 0) {
      ++out.failures;  // counted at the 5 s deadline
      out.swap_ms.push_back(5000.0);
    } else {
      out.swap_ms.push_back(Ms(t0, Clock::time_point(Clock::duration(ns))));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // between swaps
  }
  client_stop.store(true);
  client.join();
  stop.store(true);
  while (live.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  out.failures += client_failures.load();
  absl::MutexLock lock(&mu);
  out.decode_step_ms = oft::bench::Median(intervals);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: serve_bench [--model_dir=models/default] [--device=cpu] [--requests=8]\n"
      "                   [--tokens=64] [--threads=0] [--block=32] [--reps=3] [--swaps=10]\n"
      "                   [--compare_unpacked] [--compare_fp32_rotations]\n"
      "Generation tokens/s and time to first token (base, one adapter, 8 adapters mixed; medians\n"
      "of --reps side-by-side repetitions), cold and warm adapter load, alias swap -> first token\n"
      "under load. --threads=0: the engine picks threads per forward. JSON lines on stdout.\n"
      "Exit status: 0 ok, 1 load failure, 2 bad flag or unavailable ISA path.\n")) {
    return 0;
  }
  std::string model_dir = "models/default", device = "cpu", v;
  int64_t requests = 8, tokens = 64, block = 32;
  int threads = 0, reps = 3, swaps = 10;
  bool compare_unpacked = false, compare_fp32 = false;
  for (int i = 1; i < argc; ++i) {
    if (oft::ParseFlag(argv[i], "--model_dir", &v)) model_dir = v;
    else if (oft::ParseFlag(argv[i], "--device", &v)) device = v;
    else if (oft::ParseFlag(argv[i], "--requests", &v)) requests = std::stoll(v);
    else if (oft::ParseFlag(argv[i], "--tokens", &v)) tokens = std::stoll(v);
    else if (oft::ParseFlag(argv[i], "--threads", &v)) threads = std::stoi(v);
    else if (oft::ParseFlag(argv[i], "--block", &v)) block = std::stoll(v);
    else if (oft::ParseFlag(argv[i], "--reps", &v)) reps = std::max(1, std::stoi(v));
    else if (oft::ParseFlag(argv[i], "--swaps", &v)) swaps = std::max(1, std::stoi(v));
    else if (std::string(argv[i]) == "--compare_unpacked") compare_unpacked = true;
    else if (std::string(argv[i]) == "--compare_fp32_rotations") compare_fp32 = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!oft::bench::InitCpuIsa("serve_bench")) return 2;
  const std::string env = oft::bench::IsaCpuJsonFields();
  // threads 0: torch uses every hardware thread and the engine picks per Forward.
  const int max_threads = oft::ConfigureCpuRuntime(threads);
  const std::string threads_field = threads > 0 ? std::to_string(threads) : "\"auto\"";
  auto served = oft::LoadServingBase("default", model_dir, device, std::nullopt, "");
  auto tok = oft::Tokenizer::FromFile(model_dir + "/tokenizer.json");
  oft::LoadOptions lo;
  lo.device = device;
  // The dtype the server serves this model in on this device (serving.cc).
  if (auto cfg = oft::LoadModelConfig(model_dir); cfg.ok()) lo.dtype = oft::DeviceComputeDtype(*cfg, device);
  auto scratch = oft::LlamaModel::Load(model_dir, lo);
  auto unpacked = oft::LlamaModel::Load(model_dir, lo);  // at::linear only (--compare_unpacked)
  if (!served.ok() || !scratch.ok() || !tok.ok() || !unpacked.ok()) {
    std::fprintf(stderr, "cannot load %s: %s\n", model_dir.c_str(),
                 served.ok() ? "" : served.status().ToString().c_str());
    return 1;
  }
  const oft::LlamaModel* model = served->served.model;
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
  ro.bases["default"] = oft::ServingBase{model, ""};
  auto registry = oft::AdapterRegistry::Create(ro);
  if (!registry.ok()) return 1;

  // Adapter load latency (read, sha256 verify, build the rotation blocks): cold with the
  // version's files dropped from the page cache first, warm right after (files cached).
  std::vector<double> cold_ms, warm_ms;
  std::vector<oft::AdapterHandle> handles(8);
  int load_failures = 0;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 8; ++i) {
      const std::string name = "a" + std::to_string(i);
      auto dir = (*store)->VersionDir("bench", name, 1);
      if (!dir.ok() || !DropFromPageCache(*dir)) {
        std::fprintf(stderr, "cannot drop %s from the page cache\n", name.c_str());
        return 1;
      }
      for (bool cold : {true, false}) {
        (void)(*registry)->Unload("bench", name, 1);
        const auto t0 = Clock::now();
        auto h = (*registry)->Load("bench", name, 1);
        (cold ? cold_ms : warm_ms).push_back(Ms(t0, Clock::now()));
        if (!h.ok()) {
          ++load_failures;
          std::fprintf(stderr, "load: %s\n", h.status().ToString().c_str());
          continue;
        }
        handles[i] = *h;
      }
    }
  }
  if (load_failures > 0) return 1;
  std::sort(cold_ms.begin(), cold_ms.end());
  std::sort(warm_ms.begin(), warm_ms.end());
  std::printf("{\"bench\":\"serve_adapter_load\",%s,\"device\":\"%s\",\"block\":%lld,"
              "\"adapter_bytes\":%lld,\"loads\":%zu,\"cold_median_ms\":%.3f,\"cold_max_ms\":%.3f,"
              "\"warm_median_ms\":%.3f,\"warm_max_ms\":%.3f,\"failures\":%d}\n",
              env.c_str(), device.c_str(), static_cast<long long>(block),
              static_cast<long long>(handles[0]->memory_bytes), cold_ms.size(), oft::bench::Median(cold_ms),
              cold_ms.back(), oft::bench::Median(warm_ms), warm_ms.back(), load_failures);
  std::fflush(stdout);

  oft::EngineOptions eo;
  eo.model = model;
  eo.tokenizer = tok->get();
  eo.max_batch = requests;
  eo.threads = threads;
  auto engine = oft::Engine::Create(eo);
  if (!engine.ok()) return 1;
  // A second engine and registry serving the 8 adapters on `m` with registry options `o`:
  // the unpacked model (--compare_unpacked) or fp32 R (--compare_fp32_rotations).
  struct Variant {
    std::unique_ptr<oft::Engine> engine;
    std::unique_ptr<oft::AdapterRegistry> registry;
    std::vector<oft::AdapterHandle> handles;
  };
  auto make_variant = [&](const oft::LlamaModel* m, oft::AdapterRegistryOptions o, Variant* v) {
    oft::EngineOptions veo = eo;
    veo.model = m;
    o.bases["default"] = oft::ServingBase{m, ""};
    auto e = oft::Engine::Create(veo);
    auto r = oft::AdapterRegistry::Create(o);
    if (!e.ok() || !r.ok()) return false;
    v->engine = std::move(*e);
    v->registry = std::move(*r);
    for (int i = 0; i < 8; ++i) {
      std::string name = "a";
      name += std::to_string(i);  // (not "a" + ...: GCC 12's -Wrestrict misfires on it here)
      auto h = v->registry->Load("bench", name, 1);
      if (!h.ok()) return false;
      v->handles.push_back(*h);
    }
    return true;
  };
  Variant unpacked_v, fp32_v;
  if (compare_unpacked && !make_variant(unpacked->get(), ro, &unpacked_v)) return 1;
  oft::AdapterRegistryOptions fro = ro;
  fro.served_rotations = oft::ServedRotations::kFp32;
  if (compare_fp32 && !make_variant(model, fro, &fp32_v)) return 1;
  oft::Engine* unpacked_engine = unpacked_v.engine.get();
  oft::Engine* fp32_engine = fp32_v.engine.get();
  const std::vector<oft::AdapterHandle>& unpacked_handles = unpacked_v.handles;
  const std::vector<oft::AdapterHandle>& fp32_handles = fp32_v.handles;
  const std::vector<int32_t> prompt = (*tok)->Encode("The quick brown fox jumps over the lazy dog.", true);
  struct Scenario {
    const char* name;
    oft::Engine* engine;
    std::vector<oft::AdapterHandle> adapters;
  };
  std::vector<Scenario> scenarios = {
      {"base", engine->get(), std::vector<oft::AdapterHandle>(requests, nullptr)},
      {"one_adapter", engine->get(), std::vector<oft::AdapterHandle>(requests, handles[0])},
      {"mixed_8_adapters", engine->get(), {}}};
  for (int64_t i = 0; i < requests; ++i) scenarios[2].adapters.push_back(handles[i % 8]);
  if (compare_unpacked) {
    scenarios.push_back({"base_unpacked", unpacked_engine,
                         std::vector<oft::AdapterHandle>(requests, nullptr)});
    scenarios.push_back({"mixed_8_adapters_unpacked", unpacked_engine, {}});
    for (int64_t i = 0; i < requests; ++i) scenarios.back().adapters.push_back(unpacked_handles[i % 8]);
  }
  const size_t fp32_first = scenarios.size();
  if (compare_fp32) {
    scenarios.push_back({"one_adapter_fp32_rotations", fp32_engine,
                         std::vector<oft::AdapterHandle>(requests, fp32_handles[0])});
    scenarios.push_back({"mixed_8_adapters_fp32_rotations", fp32_engine, {}});
    for (int64_t i = 0; i < requests; ++i) scenarios.back().adapters.push_back(fp32_handles[i % 8]);
  }
  for (auto& s : scenarios) RunBatch(*s.engine, prompt, s.adapters, 8);  // warm-up
  std::vector<std::vector<Result>> runs(scenarios.size());
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < scenarios.size(); ++i) {
      runs[i].push_back(RunBatch(*scenarios[i].engine, prompt, scenarios[i].adapters, tokens));
    }
  }
  auto median_of = [&](size_t i, double Result::*field) {
    std::vector<double> v;
    for (const Result& r : runs[i]) v.push_back(r.*field);
    return oft::bench::Median(v);
  };
  // Ratios are medians of the per-repetition ratios (each taken side by side).
  auto ratio_to = [&](size_t i, size_t base) {
    std::vector<double> v;
    for (int r = 0; r < reps; ++r) v.push_back(runs[i][r].tokens_per_second / runs[base][r].tokens_per_second);
    return oft::bench::Median(v);
  };
  for (size_t i = 0; i < scenarios.size(); ++i) {
    const bool is_unpacked = std::string(scenarios[i].name).find("unpacked") != std::string::npos;
    const size_t base = is_unpacked ? 3 : 0;
    std::printf("{\"bench\":\"serve_generate\",%s,\"device\":\"%s\",\"threads\":%s,"
                "\"max_threads\":%d,\"scenario\":\"%s\",\"requests\":%lld,\"tokens\":%lld,"
                "\"tokens_per_second\":%.1f,\"vs_base\":%.3f,\"mean_ttft_ms\":%.2f,"
                "\"max_ttft_ms\":%.2f,\"stat\":\"median of %d\"}\n",
                env.c_str(), device.c_str(), threads_field.c_str(), max_threads, scenarios[i].name,
                static_cast<long long>(requests), static_cast<long long>(tokens),
                median_of(i, &Result::tokens_per_second), ratio_to(i, base),
                median_of(i, &Result::mean_ttft_ms), median_of(i, &Result::max_ttft_ms), reps);
    std::fflush(stdout);
  }
  if (compare_unpacked) {
    std::printf("{\"bench\":\"serve_packed_vs_unpacked\",%s,\"threads\":%s,\"base\":%.3f,"
                "\"mixed_8_adapters\":%.3f,\"stat\":\"median of %d side-by-side ratios\"}\n",
                env.c_str(), threads_field.c_str(), ratio_to(0, 3), ratio_to(2, 4), reps);
    unpacked_engine->Stop();
  }
  if (compare_fp32) {
    std::printf("{\"bench\":\"serve_compact_vs_fp32_rotations\",%s,\"threads\":%s,"
                "\"one_adapter\":%.3f,\"mixed_8_adapters\":%.3f,\"adapter_bytes_compact\":%lld,"
                "\"adapter_bytes_fp32\":%lld,\"stat\":\"median of %d side-by-side ratios\"}\n",
                env.c_str(), threads_field.c_str(), ratio_to(1, fp32_first),
                ratio_to(2, fp32_first + 1), static_cast<long long>(handles[0]->memory_bytes),
                static_cast<long long>(fp32_handles[0]->memory_bytes), reps);
    fp32_engine->Stop();
  }

  // Alias swap under load (see MeasureSwapUnderLoad): 8 streams with mixed adapters, on an
  // engine with room for the clients' requests (the server's default max_batch is 16).
  (*engine)->Stop();
  eo.model = model;
  eo.max_batch = static_cast<int64_t>(scenarios[2].adapters.size()) + kSwapClients;
  auto swap_engine_or = oft::Engine::Create(eo);
  if (!swap_engine_or.ok()) return 1;
  std::unique_ptr<oft::Engine> swap_engine = std::move(*swap_engine_or);
  if (!(*registry)->Load("bench", "a0", 2).ok()) return 1;
  if (!(*registry)->SetAlias("bench", "prod", "a0", 1).ok()) return 1;
  SwapResult sw = MeasureSwapUnderLoad(*swap_engine, **registry, prompt, scenarios[2].adapters, swaps);
  std::sort(sw.swap_ms.begin(), sw.swap_ms.end());
  std::printf("{\"bench\":\"serve_swap_under_load\",%s,\"device\":\"%s\",\"threads\":%s,"
              "\"streams\":%zu,\"client_poll_us\":%lld,\"swaps\":%d,"
              "\"swap_to_first_token_median_ms\":%.2f,\"swap_to_first_token_max_ms\":%.2f,"
              "\"decode_step_median_ms\":%.2f,\"failures\":%d}\n",
              env.c_str(), device.c_str(), threads_field.c_str(), scenarios[2].adapters.size(),
              static_cast<long long>(kPollMicros), swaps, oft::bench::Median(sw.swap_ms), sw.swap_ms.empty() ? 0.0 : sw.swap_ms.back(),
              sw.decode_step_ms, sw.failures);
  swap_engine->Stop();
  std::error_code ec;
  for (auto& p : fs::recursive_directory_iterator(root, ec)) {
    fs::permissions(p.path(), fs::perms::owner_all, fs::perm_options::add, ec);
  }
  fs::remove_all(root, ec);
  return 0;
}
