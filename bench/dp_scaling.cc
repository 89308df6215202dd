// dp_scaling: data-parallel training throughput of oft_train at 1, 2, ... ranks (issue 12).
//
// For each world size N it launches N oft_train processes with torchrun's environment
// (Gloo over loopback, --threads per rank), the same per-rank micro-batch (weak scaling: the
// global batch grows with N), and reads rank 0's step events: their tokens_per_second is the
// global batch's non-padding tokens over rank 0's step time, so it is the group's
// throughput. Reported: the median over the steps after --warmup, the speed-up over the first
// world size, and the bytes each rank all-reduces per step (the flat fp32 gradient bucket,
// counted from the adapter rank 0 writes, plus the 4 fp64 scalars of counts, loss and cancel).
// One JSON line per world size, with "isa" and "cpu".
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/machine_info.h"
#include "nlohmann/json.hpp"
#include "server/common/flags.h"
#include "server/model/safetensors.h"
#include "tests/dist/rank_process.h"

namespace {

using Json = nlohmann::json;
using oft::testing::RankProcess;

constexpr int64_t kScalarBytesPerStep = 4 * 8;  // counts (2), loss, cancel: fp64 each

struct Args {
  std::string oft_train = OFT_TRAIN_BINARY;
  std::string model_dir = OFT_SOURCE_DIR "/models/default";
  std::string train = OFT_SOURCE_DIR "/data/sample/train.jsonl";
  std::vector<int> ranks = {1, 2};
  int threads = 1;
  int batch_size = 8;  // per rank
  int steps = 30;
  int warmup = 5;
  int max_seq_len = 128;
  std::string device = "cpu";  // "cuda": rank r on cuda:r through NCCL
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Gradient bytes per step: every tensor of the adapter rank 0 wrote, at its stored width.
int64_t BucketBytes(const std::string& adapter_dir) {
  auto f = oft::SafetensorsFile::Open(adapter_dir + "/adapter_model.safetensors");
  if (!f.ok()) return -1;
  int64_t bytes = 0;
  for (const std::string& name : (*f)->names()) {
    auto info = (*f)->Info(name);
    if (info.ok()) bytes += static_cast<int64_t>((*info)->end - (*info)->begin);
  }
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: dp_scaling [--ranks=1,2] [--threads=1] [--batch_size=8] [--steps=30] [--warmup=5]\n"
      "         [--max_seq_len=128] [--model_dir=DIR] [--train=FILE] [--oft_train=PATH]\n"
      "         [--device=cpu|cuda]\n"
      "Data-parallel oft_train (Gloo over loopback; NCCL with --device=cuda, rank r on cuda:r)\n"
      "at each world size: global tokens/s\n"
      "(median step after warmup), speed-up, bytes all-reduced per step; JSON lines on stdout.\n")) {
    return 0;
  }
  Args a;
  for (int i = 1; i < argc; ++i) {
    const char* v;
    auto num = [&](int* out) { return absl::SimpleAtoi(v, out) && *out > 0; };
    bool ok = true;
    if (oft::ParseFlag(argv[i], "--oft_train", &v)) a.oft_train = v;
    else if (oft::ParseFlag(argv[i], "--model_dir", &v)) a.model_dir = v;
    else if (oft::ParseFlag(argv[i], "--train", &v)) a.train = v;
    else if (oft::ParseFlag(argv[i], "--device", &v)) {
      a.device = v;
      ok = a.device == "cpu" || a.device == "cuda";
    }
    else if (oft::ParseFlag(argv[i], "--threads", &v)) ok = num(&a.threads);
    else if (oft::ParseFlag(argv[i], "--batch_size", &v)) ok = num(&a.batch_size);
    else if (oft::ParseFlag(argv[i], "--steps", &v)) ok = num(&a.steps);
    else if (oft::ParseFlag(argv[i], "--warmup", &v)) ok = absl::SimpleAtoi(v, &a.warmup) && a.warmup >= 0;
    else if (oft::ParseFlag(argv[i], "--max_seq_len", &v)) ok = num(&a.max_seq_len);
    else if (oft::ParseFlag(argv[i], "--ranks", &v)) {
      a.ranks.clear();
      for (absl::string_view part : absl::StrSplit(v, ',')) {
        int n = 0;
        ok = ok && absl::SimpleAtoi(part, &n) && n > 0 && n <= 64;
        a.ranks.push_back(n);
      }
    } else {
      std::fprintf(stderr, "dp_scaling: unknown argument %s\n", argv[i]);
      return 2;
    }
    if (!ok) {
      std::fprintf(stderr, "dp_scaling: bad value in %s\n", argv[i]);
      return 2;
    }
  }
  if (a.warmup >= a.steps) {
    std::fprintf(stderr, "dp_scaling: --warmup (%d) must be below --steps (%d)\n", a.warmup, a.steps);
    return 2;
  }
  if (!oft::bench::InitCpuIsa("dp_scaling")) return 2;
  const std::string machine = oft::bench::IsaCpuJsonFields();
  char tmpl[] = "/tmp/dp_scaling.XXXXXX";
  const std::string root = mkdtemp(tmpl);

  double base = 0;
  for (const int n : a.ranks) {
    const int port = oft::testing::FreePort();
    const std::string out = root + "/out" + std::to_string(n);
    std::vector<RankProcess> ps;
    for (int r = 0; r < n; ++r) {
      std::vector<std::string> args = {
          a.oft_train, "--model_dir=" + a.model_dir, "--train=" + a.train,
          "--out=" + out, "--threads=" + std::to_string(a.threads),
          "--max_steps=" + std::to_string(a.steps), "--batch_size=" + std::to_string(a.batch_size),
          "--max_seq_len=" + std::to_string(a.max_seq_len), "--checkpoint_every=0",
          "--learning_rate=0.004", "--device=" + a.device};
      ps.push_back(oft::testing::SpawnRank(args, oft::testing::RankEnv(r, n, port),
                                           root + "/n" + std::to_string(n) + "_rank" + std::to_string(r)));
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(30);
    bool failed = false;
    for (int r = 0; r < n; ++r) {
      if (oft::testing::WaitRank(ps[r], deadline) != 0) {
        std::fprintf(stderr, "dp_scaling: rank %d of %d failed:\n%s\n", r, n,
                     oft::testing::ReadText(ps[r].stderr_path).c_str());
        failed = true;
      }
    }
    if (failed) return 1;
    std::vector<double> tps;
    std::istringstream events(oft::testing::ReadText(ps[0].stdout_path));
    std::string line;
    int step = 0;
    while (std::getline(events, line)) {
      Json e = Json::parse(line, nullptr, false);
      if (e.is_discarded() || e.value("kind", "") != "step") continue;
      if (++step > a.warmup) tps.push_back(e.value("tokens_per_second", 0.0));
    }
    const double median = Median(tps);
    if (base == 0) base = median;
    const int64_t bucket = n > 1 ? BucketBytes(out) : 0;
    std::printf(
        "{\"bench\":\"dp_scaling\",\"ranks\":%d,\"threads_per_rank\":%d,\"micro_batch_per_rank\":%d,"
        "\"device\":\"%s\",\"global_batch\":%d,\"steps_timed\":%zu,\"tokens_per_s\":%.1f,\"speedup\":%.3f,"
        "\"allreduce_bytes_per_step\":%lld,\"gradient_bucket_bytes\":%lld,%s}\n",
        n, a.threads, a.batch_size, a.device.c_str(), a.batch_size * n, tps.size(), median,
        base > 0 ? median / base : 0.0,
        static_cast<long long>(n > 1 ? bucket + kScalarBytesPerStep : 0),
        static_cast<long long>(bucket), machine.c_str());
    std::fflush(stdout);
  }
  return 0;
}
