// Decode-time GEMM choices (issue 11): y = x W^T with few rows, through at::linear (MKL
// sgemm, which packs the weight panel on every call) and through PackedLinear (MKL's packed
// GEMM, weight packed once). Shapes of the default model's projections and its tied head,
// and of a 4096-wide layer. JSON lines on stdout; per case the median of --reps timed
// batches of --iters calls each, both paths interleaved in one run.
//
// Usage: decode_gemm_bench [--threads=1] [--reps=7] [--iters=200]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "bench/machine_info.h"
#include "bench/stats.h"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/model/packed_linear.h"

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: decode_gemm_bench [--threads=1] [--reps=7] [--iters=200]\n"
      "y = x W^T for decode-sized x (1-64 rows) through at::linear and through PackedLinear\n"
      "(MKL packed GEMM), interleaved; JSON lines with medians of --reps batches of --iters.\n"
      "Exit status: 0 ok, 2 bad flag or unavailable ISA path.\n")) {
    return 0;
  }
  int threads = 1, reps = 7, iters = 200;
  std::string v;
  for (int i = 1; i < argc; ++i) {
    if (oft::ParseFlag(argv[i], "--threads", &v)) threads = std::stoi(v);
    else if (oft::ParseFlag(argv[i], "--reps", &v)) reps = std::max(1, std::stoi(v));
    else if (oft::ParseFlag(argv[i], "--iters", &v)) iters = std::max(1, std::stoi(v));
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!oft::bench::InitCpuIsa("decode_gemm_bench")) return 2;
  threads = oft::ConfigureCpuRuntime(threads);
  if (!oft::PackedLinear::Available()) {
    std::fprintf(stderr, "MKL packed GEMM is not in this LibTorch\n");
    return 1;
  }
  c10::InferenceMode im;
  at::manual_seed(1);
  struct Shape {
    const char* name;
    int64_t out, in;
  };
  const std::vector<Shape> shapes = {{"default_q", 256, 256},   {"default_kv", 128, 256},
                                     {"default_up", 688, 256},  {"default_down", 256, 688},
                                     {"default_head", 4096, 256}, {"wide_q", 4096, 4096}};
  for (const Shape& s : shapes) {
    const at::Tensor w = at::randn({s.out, s.in});
    auto packed = oft::PackedLinear::Create(w, at::Tensor(), 64);
    if (!packed.ok()) {
      std::fprintf(stderr, "%s\n", packed.status().ToString().c_str());
      return 1;
    }
    for (int64_t rows : {1, 4, 8, 16, 64}) {
      if (s.out * s.in >= 4096 * 4096 && rows > 16) continue;
      const at::Tensor x = at::randn({rows, s.in});
      const int n = s.out * s.in >= 4096 * 4096 ? std::max(1, iters / 20) : iters;
      std::vector<double> linear_us, packed_us;
      for (int r = 0; r < reps + 1; ++r) {  // the first round warms up
        auto t0 = Clock::now();
        for (int i = 0; i < n; ++i) at::linear(x, w);
        auto t1 = Clock::now();
        for (int i = 0; i < n; ++i) (*packed)->Forward(x);
        auto t2 = Clock::now();
        if (r == 0) continue;
        linear_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / n);
        packed_us.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count() / n);
      }
      const double lin = oft::bench::Median(linear_us), pk = oft::bench::Median(packed_us);
      std::printf("{\"bench\":\"decode_gemm\",%s,\"threads\":%d,\"shape\":\"%s\",\"out\":%lld,"
                  "\"in\":%lld,\"rows\":%lld,\"linear_us\":%.2f,\"packed_us\":%.2f,"
                  "\"packed_speedup\":%.2f,\"stat\":\"median of %d\"}\n",
                  oft::bench::IsaCpuJsonFields().c_str(), threads, s.name,
                  static_cast<long long>(s.out), static_cast<long long>(s.in),
                  static_cast<long long>(rows), lin, pk, lin / pk, reps);
      std::fflush(stdout);
    }
  }
  return 0;
}
