// How many torch intra-op threads one serving Forward should use on the CPU.
//
// Why: a decode step of a small model is a few hundred tiny operations; with more threads
// each parallel region pays an OpenMP wake-up and barrier that exceeds the work it splits, so
// the tiny default model decoded 2x slower on 2 threads than on 1. The rule gives a thread
// only to a share of work large enough to pay for itself: the mean FLOPs of one Linear call
// in the Forward (the GEMMs dominate a decoder step) divided by `min_flops_per_thread`,
// clamped to [1, max_threads].
//
// kMinLinearFlopsPerThread was measured with serve_bench --thread_scan on an Intel Xeon
// (AVX-512, 2 cores; docs/benchmarks.md): below it a second thread did not speed a decode
// step up. Pure functions; thread-safe.
#ifndef OFT_SERVER_SERVING_DECODE_THREADS_H_
#define OFT_SERVER_SERVING_DECODE_THREADS_H_

#include <cstdint>

#include "server/model/hf_config.h"

namespace oft {

inline constexpr int64_t kMinLinearFlopsPerThread = int64_t{8} << 20;  // 8 MFLOP

// FLOPs of every Linear (q k v o gate up down per layer, and lm_head for `logit_rows`
// positions) for a Forward over `tokens` new tokens: 2 * tokens * weights per Linear.
int64_t ForwardLinearFlops(const ModelConfig& config, int64_t tokens, int64_t logit_rows);

// Threads for such a Forward: mean FLOPs per Linear call / min_flops_per_thread, in
// [1, max(1, max_threads)].
int ForwardThreads(const ModelConfig& config, int64_t tokens, int64_t logit_rows, int max_threads,
                   int64_t min_flops_per_thread = kMinLinearFlopsPerThread);

}  // namespace oft

#endif  // OFT_SERVER_SERVING_DECODE_THREADS_H_
