// Model benchmark: forward and forward+backward tokens/s of a model directory (default:
// the embedded default model) on CPU or CUDA, and the bytes held by its base weights in
// bf16 vs NF4 (QOFT) with and without double quantization.
//
// Prints JSON lines:
//   {"bench":"model","mode":"forward"|"forward_backward","base":"bf16"|"fp32"|"nf4",...,
//    "tokens_per_s":...,"ms_per_step":...,"isa":"avx512"|"avx2"|"generic","cpu":"<model>"}
//   {"bench":"model","mode":"base_weight_bytes","bf16":...,"nf4":...,"nf4_double_quant":...}
// Usage: model_bench [--model_dir=models/default] [--device=cpu] [--batch=4] [--seq=256]
//                    [--reps=5] [--threads=N] [--block=32] [--bases=fp32,bf16,nf4]
// --bases limits the timed bases (the byte counts are always printed); each line also
// names the model's architecture. Several directories (--model_dir=a,b,...; e.g. the
// families of bench/make_family_models.py at equal size) run side by side instead: fp32,
// reps interleaved across the models, JSON lines {"bench":"model_families",...,
// "tokens_per_s_vs_first":...} per model and mode.
#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "ATen/core/grad_mode.h"
#include "bench/machine_info.h"
#include "bench/stats.h"
#include "bench/memory_tracker.h"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/model/llama.h"
#include "torch/autograd.h"

namespace {

// Several model directories side by side (--model_dir=a,b,...): each loaded in fp32 with an
// all-linear adapter of block `block`; every rep times one step of each model in turn, so
// load changes on a shared machine hit all of them alike. One JSON line per model and mode:
// its median and its ratio to the first model's.
int RunInterleaved(const std::vector<std::string>& dirs, const std::string& device, int64_t batch,
                   int64_t seq, int64_t block, int reps, const std::string& machine) {
  struct Entry {
    std::unique_ptr<oft::LlamaModel> model;
    at::Tensor ids;
    std::map<std::string, at::Tensor> params;
  };
  std::vector<Entry> entries;
  for (const auto& dir : dirs) {
    oft::LoadOptions lo;
    lo.device = device;
    auto model = oft::LlamaModel::Load(dir, lo);
    if (!model.ok()) {
      std::fprintf(stderr, "%s: %s\n", dir.c_str(), std::string(model.status().message()).c_str());
      return 1;
    }
    oft::OftConfig cfg;
    cfg.oft_block_size = block;
    oft::TargetSpec t;
    t.target_modules = {"all-linear"};
    auto& m = **model;
    if (auto st = m.AddAdapter("bench", cfg, t); !st.ok()) {
      std::fprintf(stderr, "%s: %s\n", dir.c_str(), std::string(st.message()).c_str());
      return 1;
    }
    (void)m.SetActiveAdapters({"bench"});
    at::manual_seed(0);
    Entry e;
    e.ids = at::randint(0, m.config().vocab_size, {batch, seq}, at::TensorOptions().dtype(at::kLong))
                .to(m.device());
    e.params = m.AdapterParameters("bench").value();
    e.model = std::move(*model);
    entries.push_back(std::move(e));
  }
  for (const char* mode : {"forward", "forward_backward"}) {
    const bool bwd = std::strcmp(mode, "forward_backward") == 0;
    auto step = [&](Entry& e) {
      if (bwd) {
        auto logits = e.model->Forward(e.ids);
        logits.to(at::kFloat).logsumexp(-1).mean().backward();
        for (auto& [n, p] : e.params) p.mutable_grad() = at::Tensor();
      } else {
        at::NoGradGuard ng;
        e.model->Forward(e.ids);
      }
      oft::bench::SyncDevice(e.model->device());
    };
    for (auto& e : entries) step(e);  // warm-up
    std::vector<std::vector<double>> times(entries.size());
    for (int r = 0; r < reps; ++r) {
      for (size_t i = 0; i < entries.size(); ++i) {
        const double t0 = oft::bench::NowMs();
        step(entries[i]);
        times[i].push_back(oft::bench::NowMs() - t0);
      }
    }
    const double first = oft::bench::Median(times[0]);
    for (size_t i = 0; i < entries.size(); ++i) {
      const double ms = oft::bench::Median(times[i]);
      std::printf(
          "{\"bench\":\"model_families\",\"arch\":\"%s\",\"model_dir\":\"%s\",\"mode\":\"%s\","
          "\"base\":\"fp32\",\"device\":\"%s\",\"batch\":%lld,\"seq\":%lld,"
          "\"adapter_block_size\":%lld,\"ms_per_step\":%.2f,\"tokens_per_s\":%.1f,"
          "\"tokens_per_s_vs_first\":%.3f,\"threads\":%d,\"reps\":%d,%s}\n",
          entries[i].model->config().architecture.c_str(), dirs[i].c_str(), mode, device.c_str(),
          (long long)batch, (long long)seq, (long long)block, ms,
          1000.0 * static_cast<double>(batch * seq) / ms, first / ms, at::get_num_threads(), reps,
          machine.c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: model_bench [--model_dir=models/default] [--device=cpu] [--batch=4] [--seq=256]\n"
      "                   [--reps=5] [--threads=N] [--block=32] [--bases=fp32,bf16,nf4]\n"
      "Forward and forward+backward tokens/s of a model, and its base-weight bytes (bf16 vs\n"
      "NF4); JSON lines on stdout. --model_dir=a,b,... times several models side by side\n"
      "(fp32, reps interleaved) and reports each one's tokens/s relative to the first.\n")) {
    return 0;
  }
  std::string model_dir = "models/default", device = "cpu", bases = "fp32,bf16,nf4", v;
  int64_t batch = 4, seq = 256, block = 32;
  int reps = 5, threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (oft::ParseFlag(argv[i], "--model_dir", &v)) model_dir = v;
    else if (oft::ParseFlag(argv[i], "--device", &v)) device = v;
    else if (oft::ParseFlag(argv[i], "--batch", &v)) batch = std::stoll(v);
    else if (oft::ParseFlag(argv[i], "--seq", &v)) seq = std::stoll(v);
    else if (oft::ParseFlag(argv[i], "--reps", &v)) reps = std::max(1, std::stoi(v));
    else if (oft::ParseFlag(argv[i], "--threads", &v)) threads = std::stoi(v);
    else if (oft::ParseFlag(argv[i], "--block", &v)) block = std::stoll(v);
    else if (oft::ParseFlag(argv[i], "--bases", &v)) bases = v;
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!oft::bench::InitCpuIsa("model_bench")) return 2;
  const std::string machine = oft::bench::IsaCpuJsonFields();
  oft::ConfigureCpuRuntime(threads);
  if (model_dir.find(',') != std::string::npos) {
    std::vector<std::string> dirs;
    for (size_t start = 0;;) {
      const size_t comma = model_dir.find(',', start);
      dirs.push_back(model_dir.substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return RunInterleaved(dirs, device, batch, seq, block, reps, machine);
  }

  struct Variant {
    const char* base;
    at::ScalarType dtype;
    bool nf4;
    bool dq;
  };
  const Variant variants[] = {{"fp32", at::kFloat, false, false},
                              {"bf16", at::kBFloat16, false, false},
                              {"nf4", at::kFloat, true, false},
                              {"nf4_double_quant", at::kFloat, true, true}};
  int64_t bytes[4] = {0, 0, 0, 0};
  for (int vi = 0; vi < 4; ++vi) {
    const auto& var = variants[vi];
    oft::LoadOptions lo;
    lo.dtype = var.dtype;
    // NF4 bases dequantize to the dtype they are served in: bf16 on CUDA.
    if (var.nf4 && device != "cpu") lo.dtype = at::kBFloat16;
    lo.device = device;
    lo.quantize_nf4 = var.nf4;
    lo.nf4_double_quant = var.dq;
    auto model = oft::LlamaModel::Load(model_dir, lo);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    auto& m = **model;
    bytes[vi] = m.BaseWeightBytes();
    if (var.dq) continue;  // timing of double quant equals nf4 up to the absmax decode
    if (("," + bases + ",").find(std::string(",") + var.base + ",") == std::string::npos) continue;
    oft::OftConfig cfg;
    cfg.oft_block_size = block;
    oft::TargetSpec t;
    t.target_modules = {"all-linear"};
    if (auto s = m.AddAdapter("bench", cfg, t); !s.ok()) {
      std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
      return 1;
    }
    if (auto s = m.SetActiveAdapters({"bench"}); !s.ok()) {
      std::fprintf(stderr, "SetActiveAdapters: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    at::manual_seed(0);
    const auto dev = m.device();
    auto ids = at::randint(0, m.config().vocab_size, {batch, seq}, at::TensorOptions().dtype(at::kLong)).to(dev);
    auto params = m.AdapterParameters("bench").value();
    for (const char* mode : {"forward", "forward_backward"}) {
      const bool bwd = std::strcmp(mode, "forward_backward") == 0;
      auto step = [&] {
        if (bwd) {
          auto logits = m.Forward(ids);
          logits.to(at::kFloat).logsumexp(-1).mean().backward();
          for (auto& [n, p] : params) p.mutable_grad() = at::Tensor();
        } else {
          at::NoGradGuard ng;
          m.Forward(ids);
        }
      };
      step();  // warm-up
      oft::bench::SyncDevice(dev);
      std::vector<double> times;
      for (int r = 0; r < reps; ++r) {
        const double t0 = oft::bench::NowMs();
        step();
        oft::bench::SyncDevice(dev);  // CUDA work is asynchronous: stop the timer after it
        times.push_back(oft::bench::NowMs() - t0);
      }
      const double ms = oft::bench::Median(times);
      std::printf(
          "{\"bench\":\"model\",\"arch\":\"%s\",\"mode\":\"%s\",\"base\":\"%s\",\"device\":\"%s\",\"batch\":%lld,"
          "\"seq\":%lld,\"adapter_block_size\":%lld,\"ms_per_step\":%.2f,\"tokens_per_s\":%.1f,"
          "\"threads\":%d,\"reps\":%d,%s}\n",
          m.config().architecture.c_str(), mode, var.base, device.c_str(), (long long)batch, (long long)seq, (long long)block, ms,
          1000.0 * static_cast<double>(batch * seq) / ms, at::get_num_threads(), reps, machine.c_str());
      std::fflush(stdout);
    }
  }
  std::printf(
      "{\"bench\":\"model\",\"mode\":\"base_weight_bytes\",\"fp32\":%lld,\"bf16\":%lld,\"nf4\":%lld,"
      "\"nf4_double_quant\":%lld,\"nf4_over_bf16\":%.4f,\"nf4_double_quant_over_bf16\":%.4f}\n",
      (long long)bytes[0], (long long)bytes[1], (long long)bytes[2], (long long)bytes[3],
      static_cast<double>(bytes[2]) / bytes[1], static_cast<double>(bytes[3]) / bytes[1]);
  return 0;
}
