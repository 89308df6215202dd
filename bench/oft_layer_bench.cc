// OFTv2 layer benchmark: input-centric vs weight-centric vs the frozen base alone.
//
// Prints one JSON object per line per case:
//   {"impl", "device", "dtype", "d_in", "d_out", "block_size", "tokens", "fwd_bwd_ms",
//    "extra_peak_bytes", "peak_bytes", "reps", "threads", "isa", "cpu"}
// ("isa": the CPU kernel path, OFT_CPU_ISA=avx512|avx2|generic forces one; "cpu": the model)
// fwd_bwd_ms is the median of `reps` timed forward+backward steps (after warm-up);
// extra_peak_bytes is the step's peak tensor memory minus the base_only step's peak.
// The three are timed round-robin (base, input-centric, weight-centric, base, ...), so a slow
// phase of a shared machine hits all alike. Then one {"summary": ...} line per (device,
// dtype, tokens) with the ratios: medians of the per-round side-by-side ratios.
//
// Usage: oft_layer_bench [--device=cpu|cuda] [--dtype=fp32|bf16|fp16] [--tokens=512,2048]
//                        [--d=4096] [--blocks=32[,128,256]] [--reps=5] [--threads=N]
// Defaults follow the issue: CPU fp32 tokens 512,2048; CUDA bf16 tokens 512,2048,8192.
#include <algorithm>
#include <functional>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "bench/machine_info.h"
#include "bench/stats.h"
#include "bench/memory_tracker.h"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/oft/oft_linear.h"
#include "server/oft/ops.h"
#include "torch/autograd.h"
#ifdef OFT_WITH_CUDA
#include "ATen/cuda/CUDAContext.h"
#endif

namespace {

struct Args {
  std::string device = "cpu";
  std::string dtype;          // default per device
  std::vector<int64_t> tokens;
  int64_t d = 4096;
  std::vector<int64_t> blocks = {32};
  int reps = 5;
  int threads = 0;
};

struct Result {
  double median_ms;
  int64_t peak_bytes;  // above the pre-step baseline
};

// One timed step: its time and its peak memory above the pre-step baseline.
template <typename Step>
std::pair<double, int64_t> TimeOnce(const c10::Device& dev, Step& step) {
  oft::bench::SyncDevice(dev);
  const int64_t base = oft::bench::CurrentBytes(dev);
  oft::bench::ResetPeak(dev);
  const double t0 = oft::bench::NowMs();
  step();
  oft::bench::SyncDevice(dev);
  return {oft::bench::NowMs() - t0, oft::bench::PeakBytes(dev) - base};
}

const char* DtypeName(at::ScalarType t) {
  return t == at::kFloat ? "fp32" : t == at::kBFloat16 ? "bf16" : "fp16";
}

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: oft_layer_bench [--device=cpu|cuda] [--dtype=fp32|bf16|fp16] [--tokens=512,2048]\n"
      "                       [--d=4096] [--block=32] [--reps=5] [--threads=N]\n"
      "One OFTv2 layer: input-centric vs weight-centric vs the frozen base (time and extra\n"
      "memory); JSON lines on stdout.\n")) {
    return 0;
  }
  Args a;
  for (int i = 1; i < argc; ++i) {
    const char* v;
    if (oft::ParseFlag(argv[i], "--device", &v)) a.device = v;
    else if (oft::ParseFlag(argv[i], "--dtype", &v)) a.dtype = v;
    else if (oft::ParseFlag(argv[i], "--tokens", &v)) a.tokens = oft::ParseIntList(v);
    else if (oft::ParseFlag(argv[i], "--d", &v)) a.d = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--block", &v) || oft::ParseFlag(argv[i], "--blocks", &v)) a.blocks = oft::ParseIntList(v);
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
  if (a.dtype.empty()) a.dtype = cuda ? "bf16" : "fp32";
  if (a.tokens.empty()) a.tokens = cuda ? std::vector<int64_t>{512, 2048, 8192}
                                        : std::vector<int64_t>{512, 2048};
  const at::ScalarType dt = a.dtype == "bf16" ? at::kBFloat16
                            : a.dtype == "fp16" ? at::kHalf
                                                : at::kFloat;
  if (!oft::bench::InitCpuIsa("oft_layer_bench")) return 2;
  const std::string machine = oft::bench::IsaCpuJsonFields();
  // Thread count is set explicitly (all cores by default).
  oft::ConfigureCpuRuntime(a.threads);
  if (!cuda) oft::bench::InstallCpuMemoryTracker();
  const c10::Device dev(cuda ? c10::kCUDA : c10::kCPU, cuda ? 0 : -1);
  const auto opts = at::TensorOptions().device(dev).dtype(dt);

  for (int64_t block : a.blocks) {
    oft::OftConfig cfg;
    cfg.oft_block_size = block;
    at::manual_seed(0);
    auto layer = oft::OftLinear::Create(at::randn({a.d, a.d}, opts) * 0.02, at::Tensor(), cfg);
    if (!layer.ok()) {
      std::fprintf(stderr, "%s\n", std::string(layer.status().message()).c_str());
      return 1;
    }
    auto& l = **layer;
    {
      at::NoGradGuard g;
      l.oft_r().normal_(0.0, 0.01);  // a trained-looking adapter, not the identity
    }

    for (int64_t t : a.tokens) {
      auto x = at::randn({t, a.d}, opts).requires_grad_(true);
      auto gy = at::randn({t, a.d}, opts);
      struct Impl {
        const char* name;
        std::function<at::Tensor(const at::Tensor&)> fwd;
      };
      const Impl impls[] = {
          {"base_only", [&](const at::Tensor& v) { return l.ForwardBase(v); }},
          {"input_centric", [&](const at::Tensor& v) { return l.Forward(v); }},
          {"weight_centric", [&](const at::Tensor& v) { return l.ForwardWeightCentric(v); }},
      };
      // Round-robin: every round times each implementation once, after one warm-up each
      // (allocator caches, kernel selection).
      std::vector<std::function<void()>> steps;
      for (const Impl& impl : impls) {
        steps.push_back([&] {
          x.mutable_grad() = at::Tensor();
          l.oft_r().mutable_grad() = at::Tensor();
          auto y = impl.fwd(x);
          y.backward(gy);
        });
      }
      for (auto& step : steps) step();
      std::vector<double> times[3];
      Result results[3] = {};
      for (int r = 0; r < a.reps; ++r) {
        for (int k = 0; k < 3; ++k) {
          auto [ms, peak] = TimeOnce(dev, steps[k]);
          times[k].push_back(ms);
          results[k].peak_bytes = std::max(results[k].peak_bytes, peak);
        }
      }
      for (int k = 0; k < 3; ++k) {
        const auto& impl = impls[k];
        results[k].median_ms = oft::bench::Median(times[k]);
        std::printf(
            "{\"impl\":\"%s\",\"device\":\"%s\",\"dtype\":\"%s\",\"d_in\":%lld,\"d_out\":%lld,"
            "\"block_size\":%lld,\"tokens\":%lld,\"fwd_bwd_ms\":%.3f,\"extra_peak_bytes\":%lld,"
            "\"peak_bytes\":%lld,\"reps\":%d,\"threads\":%d,%s}\n",
            impl.name, a.device.c_str(), DtypeName(dt), (long long)a.d, (long long)a.d,
            (long long)block, (long long)t, results[k].median_ms,
            (long long)(results[k].peak_bytes - results[0].peak_bytes),
            (long long)results[k].peak_bytes, a.reps, at::get_num_threads(), machine.c_str());
        std::fflush(stdout);
      }
      auto ratio = [&](int num, int den) {
        std::vector<double> v;
        for (int r = 0; r < a.reps; ++r) v.push_back(times[num][r] / times[den][r]);
        return oft::bench::Median(v);
      };
      const double ic_extra = static_cast<double>(results[1].peak_bytes - results[0].peak_bytes);
      const double wc_extra = static_cast<double>(results[2].peak_bytes - results[0].peak_bytes);
      std::printf(
          "{\"summary\":true,\"device\":\"%s\",\"dtype\":\"%s\",\"block_size\":%lld,\"tokens\":%lld,"
          "\"weight_centric_over_input_centric_time\":%.2f,"
          "\"input_centric_over_base_time\":%.3f,"
          "\"input_centric_over_weight_centric_extra_bytes\":%.4f,"
          "\"stat\":\"median of %d side-by-side ratios\",%s}\n",
          a.device.c_str(), DtypeName(dt), (long long)block, (long long)t, ratio(2, 1), ratio(1, 0),
          wc_extra > 0 ? ic_extra / wc_extra : 0.0, a.reps, machine.c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
