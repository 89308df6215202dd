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
// names the model's architecture, so one run per family directory
// (bench/make_family_models.py) compares families at equal size.
#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <cstring>
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

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: model_bench [--model_dir=models/default] [--device=cpu] [--batch=4] [--seq=256]\n"
      "                   [--reps=5] [--threads=N] [--block=32] [--bases=fp32,bf16,nf4]\n"
      "Forward and forward+backward tokens/s of a model, and its base-weight bytes (bf16 vs\n"
      "NF4); JSON lines on stdout.\n")) {
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
