// The frozen-Linear GEMMs of CPU training, in the library OFT_CPU_GEMM selects (mkl|onednn;
// unset: the machine's default, server/model/cpu_linear.h). Run it once per library to
// compare them side by side (docs/benchmarks.md, "Frozen GEMMs").
//
// For each Linear shape of the model (out x in) and --rows tokens: the forward x w^T and the
// input gradient dy w, each through CpuGemmNT (what CpuLinear and the fused loss call).
// Prints one JSON line per (shape, direction):
//   {"bench":"cpu_gemm","gemm","isa","cpu","rows","out","in","direction":"forward"|"input_grad",
//    "ms","gflops","reps","threads"}
// ms is the median of --reps calls after two warm-up calls.
//
// Usage: cpu_gemm_bench [--rows=2048] [--shapes=256x256,128x256,688x256,256x688,4096x256]
//                       [--reps=21] [--threads=1]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "absl/strings/str_split.h"
#include "bench/machine_info.h"
#include "bench/stats.h"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/model/cpu_linear.h"

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
                      "usage: cpu_gemm_bench [--rows=2048] [--shapes=OUTxIN,...] [--reps=21] [--threads=1]\n"
                      "Frozen-Linear GEMMs (forward and input gradient) in the OFT_CPU_GEMM library;\n"
                      "JSON lines on stdout.\n")) {
    return 0;
  }
  int64_t rows = 2048;
  int reps = 21, threads = 1;
  std::string shapes = "256x256,128x256,688x256,256x688,4096x256";
  for (int i = 1; i < argc; ++i) {
    const char* v;
    if (oft::ParseFlag(argv[i], "--rows", &v)) rows = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--shapes", &v)) shapes = v;
    else if (oft::ParseFlag(argv[i], "--reps", &v)) reps = std::max(1, std::atoi(v));
    else if (oft::ParseFlag(argv[i], "--threads", &v)) threads = std::atoi(v);
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!oft::bench::InitCpuIsa("cpu_gemm_bench")) return 2;
  oft::ConfigureCpuRuntime(threads);
  const std::string machine = oft::bench::IsaCpuJsonFields();
  const char* gemm = oft::CpuGemmName(oft::ActiveCpuGemm());
  for (const auto& part : absl::StrSplit(shapes, ',')) {
    const std::vector<std::string> dims = absl::StrSplit(part, 'x');
    if (dims.size() != 2) {
      std::fprintf(stderr, "--shapes: expected OUTxIN, got %s\n", std::string(part).c_str());
      return 2;
    }
    const int64_t out = std::atoll(dims[0].c_str()), in = std::atoll(dims[1].c_str());
    const at::Tensor w = at::randn({out, in});
    const at::Tensor wt = w.t().contiguous();
    const at::Tensor x = at::randn({rows, in}), dy = at::randn({rows, out});
    for (const bool forward : {true, false}) {
      auto call = [&] { return forward ? oft::CpuGemmNT(x, w) : oft::CpuGemmNT(dy, wt); };
      call();
      call();
      std::vector<double> ms;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        at::Tensor y = call();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      const double med = oft::bench::Median(ms);
      std::printf("{\"bench\":\"cpu_gemm\",\"gemm\":\"%s\",%s,\"rows\":%lld,\"out\":%lld,\"in\":%lld,"
                  "\"direction\":\"%s\",\"ms\":%.3f,\"gflops\":%.1f,\"reps\":%d,\"threads\":%d}\n",
                  gemm, machine.c_str(), static_cast<long long>(rows), static_cast<long long>(out),
                  static_cast<long long>(in), forward ? "forward" : "input_grad", med,
                  2.0 * rows * in * out / (med * 1e6), reps, at::get_num_threads());
      std::fflush(stdout);
    }
  }
  return 0;
}
