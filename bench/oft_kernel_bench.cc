// CPU kernel benchmark: the three fp32 block-rotation kernels of oft:: (rotation, input
// gradient, rotation gradient) and the Cayley-Neumann build, on every instruction-set path
// this CPU runs, against the same products done by MKL through ATen (strided batched GEMM:
// the reference implementation). This is how ops_cpu.cc's choice between its register tiles
// and MKL was measured (docs/benchmarks.md).
//
// "backward" is both gradients of one call (what training runs: the input gradient and the
// rotation gradient, fused into one pass over the tokens where ops_cpu.cc can).
// "rotate_x3" and "backward_x3" are one input and three rotations (q/k/v) through
// BlockRotateMany's kernels: compare them with 3 x "rotate" and 3 x "backward" (which omits
// the two additions of the input gradients that autograd adds to separate rotations).
// "gathered_decode" is a serving decode step's rotation at one Linear: 8 rows, each with its
// own adapter (8 stacked per-block rotations, fp32 R), through gathered_block_rotate;
// "gathered_decode_fp16_delta" is the same with the compact served form (fp16 R - I).
//
// Prints one JSON line per (kernel, impl, block size):
//   {"bench":"oft_kernel","kernel":"rotate"|"input_grad"|"rotation_grad"|"backward"|
//    "rotate_x3"|"backward_x3"|"gathered_decode"|"gathered_decode_fp16_delta"|"build"|
//    "build_backward","impl":"tiles"|"mkl","isa","cpu","d","tokens","block_size","rows",
//    "ms","gflops","reps","threads","caches":"warm"|"cold"}
// ms is the median of --reps timed calls after one warm-up; repetitions are interleaved
// across paths and implementations. With --cold=1 every timed call starts with the caches
// holding none of its operands: a 256 MiB buffer is written and read first (not timed), as in
// a training step, where a Linear's backward finds its saved input long evicted. gflops counts 2 flops per multiply-add of the product
// (the build: of its Horner products).
//
// Usage: oft_kernel_bench [--d=4096] [--tokens=2048] [--blocks=16,32,64,128,256]
//                         [--shared=0|1] [--reps=7] [--threads=N] [--terms=5] [--cold=0|1]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "bench/machine_info.h"
#include "bench/stats.h"
#include "bench/memory_tracker.h"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/oft/cpu_isa.h"
#include "server/oft/ops_cpu.h"
#include "server/oft/ops_reference.h"

namespace {

struct Case {
  std::string kernel, impl;
  oft::cpu::Isa isa;
  int64_t b;
  double flops;
  std::function<void()> run;
  std::vector<double> times = {};  // seconds per repetition, filled when it runs
};

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: oft_kernel_bench [--d=N] [--tokens=N] [--blocks=32,128,256] [--shared=N]\n"
      "                        [--terms=N] [--reps=N] [--threads=N] [--cold=0|1]\n"
      "The fp32 block-rotation kernels and the Cayley-Neumann build on every ISA path of this\n"
      "CPU against MKL through ATen; JSON lines on stdout.\n")) {
    return 0;
  }
  int64_t d = 4096, tokens = 2048, terms = 5;
  std::vector<int64_t> blocks = {16, 32, 64, 128, 256};
  bool shared = false, cold = false;
  int reps = 7, threads = 0;
  for (int i = 1; i < argc; ++i) {
    const char* v;
    if (oft::ParseFlag(argv[i], "--d", &v)) d = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--tokens", &v)) tokens = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--blocks", &v)) blocks = oft::ParseIntList(v);
    else if (oft::ParseFlag(argv[i], "--shared", &v)) shared = std::atoi(v) != 0;
    else if (oft::ParseFlag(argv[i], "--reps", &v)) reps = std::max(1, std::atoi(v));
    else if (oft::ParseFlag(argv[i], "--threads", &v)) threads = std::atoi(v);
    else if (oft::ParseFlag(argv[i], "--terms", &v)) terms = std::atoll(v);
    else if (oft::ParseFlag(argv[i], "--cold", &v)) cold = std::atoi(v) != 0;
    else {
      std::fprintf(stderr, "oft_kernel_bench: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!oft::bench::InitCpuIsa("oft_kernel_bench")) return 2;
  oft::ConfigureCpuRuntime(threads);
  const std::string cpu = oft::cpu::CpuModelName();
  at::manual_seed(0);
  const at::Tensor x = at::randn({tokens, d});
  const at::Tensor g = at::randn({tokens, d});
  std::vector<Case> cases;
  for (int64_t b : blocks) {
    if (d % b != 0) {
      std::fprintf(stderr, "oft_kernel_bench: block %lld does not divide d=%lld\n", (long long)b,
                   (long long)d);
      return 2;
    }
    const int64_t rows = shared ? 1 : d / b;
    const at::Tensor rot = at::randn({rows, b, b}) / std::sqrt(static_cast<double>(b));
    const at::Tensor packed = at::randn({rows, b * (b - 1) / 2}) * (0.3 / b);
    const at::Tensor grot = at::randn({rows, b, b});
    const double prod = 2.0 * tokens * d * b;
    const double build = 2.0 * rows * b * b * b * (terms - 1);
    for (oft::cpu::Isa isa : oft::cpu::SupportedIsas()) {
      cases.push_back({"rotate", "tiles", isa, b, prod, [=] { oft::cpu::BlockRotateForward(x, rot); }});
      cases.push_back({"input_grad", "tiles", isa, b, prod,
                       [=] { oft::cpu::BlockRotateBackward(g, x, rot, true, false); }});
      cases.push_back({"rotation_grad", "tiles", isa, b, prod,
                       [=] { oft::cpu::BlockRotateBackward(g, x, rot, false, true); }});
      cases.push_back({"backward", "tiles", isa, b, 2 * prod,
                       [=] { oft::cpu::BlockRotateBackward(g, x, rot, true, true); }});
      if (!shared && oft::cpu::BlockRotateManyApplies(x, {rot})) {
        const std::vector<at::Tensor> rots{rot, rot * 0.5, rot * 0.25}, gs{g, g * 0.5, g * 0.25};
        cases.push_back({"rotate_x3", "tiles", isa, b, 3 * prod,
                         [=] { oft::cpu::BlockRotateManyForward(x, rots); }});
        cases.push_back({"backward_x3", "tiles", isa, b, 6 * prod, [=] {
                           oft::cpu::BlockRotateManyBackward(gs, x, rots, true, {true, true, true});
                         }});
      }
      if (!shared && tokens >= 8) {
        const at::Tensor stack = at::randn({8, rows, b, b}) / std::sqrt(static_cast<double>(b));
        const at::Tensor delta = (stack - at::eye(b)).to(at::kHalf);
        const at::Tensor rows8 = x.narrow(0, 0, 8).contiguous();
        const at::Tensor index = at::arange(8, at::kLong);
        const double gathered = 2.0 * 8 * d * b;
        cases.push_back({"gathered_decode", "tiles", isa, b, gathered,
                         [=] { oft::cpu::GatheredBlockRotateForward(rows8, stack, index); }});
        cases.push_back({"gathered_decode_fp16_delta", "tiles", isa, b, gathered,
                         [=] { oft::cpu::GatheredBlockRotateForward(rows8, delta, index, true); }});
      }
      cases.push_back({"build", "tiles", isa, b, build,
                       [=] { oft::cpu::BuildRotationForward(packed, b, terms, true); }});
      cases.push_back({"build_backward", "tiles", isa, b, 3 * build, [=] {
                         oft::cpu::BuildRotationBackward(grot, packed, rot, b, terms, true);
                       }});
    }
    const oft::cpu::Isa native = oft::cpu::ActiveIsa();
    cases.push_back({"rotate", "mkl", native, b, prod, [=] { oft::reference::BlockRotateForward(x, rot); }});
    cases.push_back({"input_grad", "mkl", native, b, prod,
                     [=] { oft::reference::BlockRotateBackward(g, x, rot, true, false); }});
    cases.push_back({"rotation_grad", "mkl", native, b, prod,
                     [=] { oft::reference::BlockRotateBackward(g, x, rot, false, true); }});
    cases.push_back({"backward", "mkl", native, b, 2 * prod,
                     [=] { oft::reference::BlockRotateBackward(g, x, rot, true, true); }});
  }
  // Larger than any L3 this runs on; written and summed so no level keeps x, g or R.
  std::vector<float> evict(cold ? (size_t{256} << 20) / sizeof(float) : 0);
  volatile float sink = 0;
  const oft::cpu::Isa original = oft::cpu::ActiveIsa();
  for (int r = -1; r < reps; ++r) {  // r = -1: warm-up
    for (auto& c : cases) {
      (void)oft::cpu::SetIsaForTesting(c.isa);
      if (cold) {
        float sum = 0;
        for (size_t e = 0; e < evict.size(); e += 16) sum += (evict[e] += 1.0f);
        sink = sink + sum;
      }
      const double t0 = oft::bench::NowMs();
      c.run();
      if (r >= 0) c.times.push_back(oft::bench::NowMs() - t0);
    }
  }
  (void)oft::cpu::SetIsaForTesting(original);
  for (auto& c : cases) {
    const double ms = oft::bench::Median(c.times);
    std::printf(
        "{\"bench\":\"oft_kernel\",\"kernel\":\"%s\",\"impl\":\"%s\",\"isa\":\"%s\",\"cpu\":\"%s\","
        "\"d\":%lld,\"tokens\":%lld,\"block_size\":%lld,\"rows\":%lld,\"ms\":%.3f,\"gflops\":%.1f,"
        "\"reps\":%d,\"threads\":%d,\"caches\":\"%s\"}\n",
        c.kernel.c_str(), c.impl.c_str(), oft::cpu::IsaName(c.isa), cpu.c_str(), (long long)d,
        (long long)tokens, (long long)c.b, (long long)(shared ? 1 : d / c.b), ms,
        c.flops / ms / 1e6, reps, at::get_num_threads(), cold ? "cold" : "warm");
  }
  return 0;
}
