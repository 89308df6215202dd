// Train-step benchmark: one optimizer step (forward + CE loss + backward + AdamW)
// of a Llama-shaped model with an OFTv2 adapter on every decoder Linear, against the frozen
// model alone (forward + backward through all layers, no adapter, no optimizer). Impls (the
// model's OftCompute, llama.h): oft = kAuto, what the trainer runs; input_centric; folded;
// weight_centric; frozen.
//
// Prints one JSON object per line per implementation:
//   {"impl", "device", "dtype", "hidden", "intermediate", "layers", "vocab", "params",
//    "batch", "seq", "block_size", "step_ms", "tokens_per_second", "peak_bytes", "reps",
//    "threads", "isa", "cpu", "gemm"}  ("isa": the CPU kernel path, forced with OFT_CPU_ISA;
//    "gemm": the frozen Linears' GEMM library, mkl|onednn, forced with OFT_CPU_GEMM)
// step_ms is the median of `reps` timed steps; peak_bytes is the
// step's peak tensor memory above what was live before it (bench/memory_tracker.h).
// Repetitions are interleaved across implementations (one warm-up step each first).
// --blocks (or --block) takes a list: one adapter per block size, one row per (impl, block).
// Then one {"summary": true, ...} line per block size with the ratios and the targets:
//   input-centric within 1.25x of the frozen step; weight-centric >= 3x input-centric; and
//   oft / frozen, folded / input-centric where those ran.
//
// Usage: train_step_bench [--model_dir=DIR] [--device=cpu|cuda] [--dtype=fp32|bf16]
//          [--hidden=4096] [--intermediate=11008] [--layers=1] [--heads=32] [--kv_heads=8]
//          [--vocab=32000] [--batch=1] [--seq=256] [--blocks=32[,128,256]] [--reps=3]
//          [--threads=N]
//          [--impls=frozen,oft,input_centric,folded,weight_centric]
// Without --model_dir a random Llama is built in memory. Defaults: CPU, fp32, one 4096-wide
// layer; with --device=cuda, a ~1.1B-parameter TinyLlama-shaped model (2048 wide, 22
// layers, 32 heads / 4 kv heads, MLP 5632) in bf16, batch 4, seq 1024.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/machine_info.h"
#include "bench/stats.h"
#include "bench/memory_tracker.h"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/model/cpu_linear.h"
#include "server/model/llama.h"
#include "server/oft/ops.h"
#include "torch/optim/adamw.h"
#ifdef OFT_WITH_CUDA
#include "ATen/cuda/CUDAContext.h"
#endif

namespace {

struct Args {
  std::string model_dir, device = "cpu", dtype, impls = "frozen,input_centric,weight_centric";
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 32000;
  int64_t batch = 0, seq = 0;
  std::vector<int64_t> blocks = {32};
  int reps = 3, threads = 0;
};

// Shapes of every base tensor of a Llama with `c` (untied head).
std::map<std::string, std::vector<int64_t>> LlamaShapes(const oft::ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  std::map<std::string, std::vector<int64_t>> s;
  s["model.embed_tokens.weight"] = {c.vocab_size, H};
  s["model.norm.weight"] = {H};
  s["lm_head.weight"] = {c.vocab_size, H};
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    s[p + "input_layernorm.weight"] = {H};
    s[p + "post_attention_layernorm.weight"] = {H};
    s[p + "self_attn.q_proj.weight"] = {q, H};
    s[p + "self_attn.k_proj.weight"] = {kv, H};
    s[p + "self_attn.v_proj.weight"] = {kv, H};
    s[p + "self_attn.o_proj.weight"] = {H, q};
    s[p + "mlp.gate_proj.weight"] = {I, H};
    s[p + "mlp.up_proj.weight"] = {I, H};
    s[p + "mlp.down_proj.weight"] = {H, I};
  }
  return s;
}

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "train_step_bench: %s\n", st.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: train_step_bench [--model_dir=DIR] [--device=cpu|cuda] [--dtype=fp32|bf16]\n"
      "         [--hidden=4096] [--intermediate=11008] [--layers=1] [--heads=32] [--kv_heads=8]\n"
      "         [--vocab=32000] [--batch=1] [--seq=256] [--block=32] [--reps=3] [--threads=N]\n"
      "         [--impls=frozen,oft,input_centric,folded,weight_centric]\n"
      "One optimizer step: OFTv2 input-centric vs weight-centric vs the frozen model (time and\n"
      "peak memory); JSON lines on stdout.\n")) {
    return 0;
  }
  Args a;
  for (int i = 1; i < argc; ++i) {
    const char* v;
    if (oft::ParseFlag(argv[i], "--model_dir", &v)) a.model_dir = v;
    else if (oft::ParseFlag(argv[i], "--device", &v)) a.device = v;
    else if (oft::ParseFlag(argv[i], "--dtype", &v)) a.dtype = v;
    else if (oft::ParseFlag(argv[i], "--impls", &v)) a.impls = v;
    else if (oft::ParseFlag(argv[i], "--hidden", &v)) a.hidden = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--intermediate", &v)) a.intermediate = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--layers", &v)) a.layers = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--heads", &v)) a.heads = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--kv_heads", &v)) a.kv_heads = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--vocab", &v)) a.vocab = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--batch", &v)) a.batch = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--seq", &v)) a.seq = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--block", &v) || oft::ParseFlag(argv[i], "--blocks", &v)) {
      a.blocks.clear();
      for (const auto& part : absl::StrSplit(v, ',')) a.blocks.push_back(std::atoll(std::string(part).c_str()));
    }
    else if (oft::ParseFlag(argv[i], "--reps", &v)) a.reps = std::max(1, std::atoi(v));
    else if (oft::ParseFlag(argv[i], "--threads", &v)) a.threads = std::atoi(v);
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  const bool cuda = a.device == "cuda";
  if (cuda && !(at::hasCUDA() && oft::CudaKernelsBuilt())) {
    std::fprintf(stderr, "--device=cuda: no CUDA device or CUDA kernels not built\n");
    return 2;
  }
  auto pick = [](int64_t v, int64_t cpu_default, int64_t cuda_default, bool on_cuda) {
    return v > 0 ? v : (on_cuda ? cuda_default : cpu_default);
  };
  if (a.dtype.empty()) a.dtype = cuda ? "bf16" : "fp32";
  a.hidden = pick(a.hidden, 4096, 2048, cuda);
  a.intermediate = pick(a.intermediate, 11008, 5632, cuda);
  a.layers = pick(a.layers, 1, 22, cuda);
  a.heads = pick(a.heads, 32, 32, cuda);
  a.kv_heads = pick(a.kv_heads, 8, 4, cuda);
  a.batch = pick(a.batch, 1, 4, cuda);
  a.seq = pick(a.seq, 256, 1024, cuda);
  const at::ScalarType dt = a.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  if (!oft::bench::InitCpuIsa("train_step_bench")) return 2;
  // "gemm": the library the frozen fp32 CPU Linears use (server/model/cpu_linear.h).
  const std::string machine = oft::bench::IsaCpuJsonFields() + ",\"gemm\":\"" +
                              (a.device == "cuda" ? "cublas" : oft::CpuGemmName(oft::ActiveCpuGemm())) + "\"";
  oft::ConfigureCpuRuntime(a.threads);
  if (!cuda) oft::bench::InstallCpuMemoryTracker();
  const c10::Device dev(cuda ? c10::kCUDA : c10::kCPU, cuda ? 0 : -1);

  oft::LoadOptions lo;
  lo.dtype = dt;
  lo.device = cuda ? "cuda:0" : "cpu";
  absl::StatusOr<std::unique_ptr<oft::LlamaModel>> loaded;
  if (!a.model_dir.empty()) {
    loaded = oft::LlamaModel::Load(a.model_dir, lo);
  } else {
    oft::ModelConfig c;
    c.vocab_size = a.vocab;
    c.hidden_size = a.hidden;
    c.intermediate_size = a.intermediate;
    c.num_hidden_layers = a.layers;
    c.num_attention_heads = a.heads;
    c.num_key_value_heads = a.kv_heads;
    c.head_dim = a.hidden / a.heads;
    c.max_position_embeddings = std::max<int64_t>(4096, a.seq);
    const auto shapes = LlamaShapes(c);
    at::manual_seed(0);
    loaded = oft::LlamaModel::FromSource(
        c,
        [&](const std::string& n) -> absl::StatusOr<at::Tensor> {
          const auto& s = shapes.at(n);
          auto opts = at::TensorOptions().device(dev).dtype(dt);
          if (s.size() == 1) return at::ones(s, opts);
          return at::randn(s, opts) * 0.02;
        },
        lo);
  }
  if (!loaded.ok()) return Fail(loaded.status());
  oft::LlamaModel& model = **loaded;
  const auto& mc = model.config();
  int64_t params = 0;
  for (const auto& [n, t] : model.BaseTensors()) params += t.numel();

  // One adapter (and one AdamW) per block size.
  std::map<int64_t, std::unique_ptr<torch::optim::AdamW>> optimizers;
  for (int64_t b : a.blocks) {
    oft::OftConfig cfg;
    cfg.oft_block_size = b;
    cfg.init_weights = false;  // a trained-looking adapter, not the identity
    oft::TargetSpec targets;
    targets.target_modules = {"all-linear"};
    const std::string name = absl::StrCat("bench_b", b);
    if (auto st = model.AddAdapter(name, cfg, targets); !st.ok()) return Fail(st);
    std::vector<at::Tensor> adapter;
    auto adapter_params = model.AdapterParameters(name);
    for (auto& [n, t] : *adapter_params) adapter.push_back(t);
    optimizers[b] = std::make_unique<torch::optim::AdamW>(adapter, torch::optim::AdamWOptions(1e-4));
  }
  // The frozen step backpropagates to layer 0's input norm so that backward runs through
  // every layer, as it does to reach the adapters of layer 0.
  at::Tensor first_norm = model.BaseTensors().at("model.layers.0.input_layernorm.weight");

  const auto ids = at::randint(0, mc.vocab_size, {a.batch, a.seq + 1},
                               at::TensorOptions().dtype(at::kLong).device(dev));
  const auto inputs = ids.narrow(1, 0, a.seq), labels = ids.narrow(1, 1, a.seq);

  struct Row {
    std::string impl;
    int64_t block = 0;  // 0: frozen (no adapter)
    std::vector<double> times = {};  // seconds per step
    int64_t peak = 0;
    double ms = 0;
  };
  std::vector<Row> rows;
  for (const auto& impl_sv : absl::StrSplit(a.impls, ',')) {
    const std::string impl(impl_sv);
    if (impl != "frozen" && impl != "oft" && impl != "input_centric" && impl != "folded" &&
        impl != "weight_centric") {
      std::fprintf(stderr, "unknown impl %s\n", impl.c_str());
      return 2;
    }
    if (impl == "frozen") {
      rows.push_back({impl});
    } else {
      for (int64_t b : a.blocks) rows.push_back({impl, b});
    }
  }
  auto step = [&](const Row& row) {
    const std::string& impl = row.impl;
    const bool frozen = impl == "frozen";
    // A failed switch would time the wrong adapter (or none): stop the benchmark instead.
    if (absl::Status s = model.SetActiveAdapters(
            frozen ? std::vector<std::string>{}
                   : std::vector<std::string>{absl::StrCat("bench_b", row.block)});
        !s.ok()) {
      std::fprintf(stderr, "train_step_bench: SetActiveAdapters: %s\n", std::string(s.message()).c_str());
      std::exit(1);
    }
    model.set_oft_compute(impl == "weight_centric"  ? oft::OftCompute::kWeightCentric
                          : impl == "input_centric" ? oft::OftCompute::kInputCentric
                          : impl == "folded"        ? oft::OftCompute::kFolded
                                                    : oft::OftCompute::kAuto);
    first_norm.requires_grad_(frozen);
    // The trainer's loss (SumMaskedLoss): the head and the cross-entropy fused, no logits.
    auto loss = model.CausalLmLoss(inputs, labels) / static_cast<double>(labels.numel());
    loss.backward();
    if (frozen) {
      first_norm.mutable_grad() = at::Tensor();
    } else {
      optimizers.at(row.block)->step();
      optimizers.at(row.block)->zero_grad(true);
    }
  };
  for (auto& row : rows) step(row);  // warm-up
  oft::bench::SyncDevice(dev);
  // Repetitions are interleaved across implementations so that drift in machine load
  // (shared CI hosts) affects all of them alike.
  for (int r = 0; r < a.reps; ++r) {
    for (auto& row : rows) {
      oft::bench::SyncDevice(dev);
      const int64_t base = oft::bench::CurrentBytes(dev);
      oft::bench::ResetPeak(dev);
      const double t0 = oft::bench::NowMs();
      step(row);
      oft::bench::SyncDevice(dev);
      row.times.push_back(oft::bench::NowMs() - t0);
      row.peak = std::max(row.peak, oft::bench::PeakBytes(dev) - base);
    }
  }
  for (auto& row : rows) {
    row.ms = oft::bench::Median(row.times);
    std::printf(
        "{\"impl\":\"%s\",\"device\":\"%s\",\"dtype\":\"%s\",\"hidden\":%lld,"
        "\"intermediate\":%lld,\"layers\":%lld,\"vocab\":%lld,\"params\":%lld,\"batch\":%lld,"
        "\"seq\":%lld,\"block_size\":%lld,\"step_ms\":%.1f,\"tokens_per_second\":%.1f,"
        "\"peak_bytes\":%lld,\"reps\":%d,\"threads\":%d,%s}\n",
        row.impl.c_str(), a.device.c_str(), a.dtype.c_str(), (long long)mc.hidden_size,
        (long long)mc.intermediate_size, (long long)mc.num_hidden_layers, (long long)mc.vocab_size,
        (long long)params, (long long)a.batch, (long long)a.seq, (long long)row.block, row.ms,
        1000.0 * static_cast<double>(a.batch * a.seq) / row.ms, (long long)row.peak, a.reps,
        at::get_num_threads(), machine.c_str());
    std::fflush(stdout);
  }
  auto find = [&](const char* name, int64_t block) -> const Row* {
    for (const auto& r : rows) {
      if (r.impl == name && r.block == block) return &r;
    }
    return nullptr;
  };
  // One summary per block size: the ratios present among the implementations run.
  const Row* fr = find("frozen", 0);
  for (int64_t b : a.blocks) {
    const Row *ic = find("input_centric", b), *wc = find("weight_centric", b);
    const Row *auto_row = find("oft", b), *folded = find("folded", b);
    std::string fields;
    if (fr && auto_row) {
      absl::StrAppend(&fields, ",\"oft_over_frozen_time\":",
                      absl::StrFormat("%.3f", auto_row->ms / fr->ms),
                      ",\"oft_extra_peak_bytes\":", auto_row->peak - fr->peak);
    }
    if (ic && folded) {
      absl::StrAppend(&fields, ",\"folded_over_input_centric_time\":",
                      absl::StrFormat("%.3f", folded->ms / ic->ms));
    }
    if (ic && fr) {
      const double r = ic->ms / fr->ms;
      absl::StrAppend(&fields, ",\"input_centric_over_frozen_time\":", absl::StrFormat("%.3f", r),
                      ",\"input_centric_extra_peak_bytes\":", ic->peak - fr->peak,
                      ",\"target_input_centric_within_1_25x\":", r <= 1.25 ? "true" : "false");
    }
    if (wc && ic) {
      const double r = wc->ms / ic->ms;
      absl::StrAppend(&fields, ",\"weight_centric_over_input_centric_time\":",
                      absl::StrFormat("%.2f", r),
                      ",\"target_weight_centric_3x_slower\":", r >= 3.0 ? "true" : "false");
      if (fr) absl::StrAppend(&fields, ",\"weight_centric_extra_peak_bytes\":", wc->peak - fr->peak);
    }
    if (fields.empty()) continue;
    std::printf("{\"summary\":true,\"device\":\"%s\",\"dtype\":\"%s\",\"hidden\":%lld,"
                "\"block_size\":%lld%s,%s}\n",
                a.device.c_str(), a.dtype.c_str(), (long long)mc.hidden_size, (long long)b,
                fields.c_str(), machine.c_str());
  }
  return 0;
}
