// Peak-memory measurement and timing helpers for benchmarks.
//
// CPU: installs a tracking wrapper around LibTorch's CPU allocator (c10::SetCPUAllocator)
// that counts live tensor bytes and their peak. CUDA: reads the caching allocator's
// allocated-bytes statistics. Both count tensor storage only (not library scratch).
// Not thread-safe to Reset while another thread measures; counters are atomic.
#ifndef OFT_BENCH_MEMORY_TRACKER_H_
#define OFT_BENCH_MEMORY_TRACKER_H_

#include <cstdint>

#include "c10/core/Device.h"

namespace oft::bench {

// Installs the CPU tracking allocator (idempotent). Call before creating tensors.
void InstallCpuMemoryTracker();

// Current live bytes on `device`.
int64_t CurrentBytes(const c10::Device& device);
// Sets the peak to the current value.
void ResetPeak(const c10::Device& device);
// Peak live bytes since the last ResetPeak.
int64_t PeakBytes(const c10::Device& device);

// Waits for the device's current stream (no-op on CPU), for timing.
void SyncDevice(const c10::Device& device);
// Monotonic clock in milliseconds.
double NowMs();

}  // namespace oft::bench

#endif  // OFT_BENCH_MEMORY_TRACKER_H_
