#include "bench/memory_tracker.h"

#include <atomic>
#include <chrono>

#include "c10/core/Allocator.h"
#include "c10/core/CPUAllocator.h"
#ifdef OFT_WITH_CUDA
#include "c10/cuda/CUDACachingAllocator.h"
#include "c10/cuda/CUDAStream.h"
#endif

namespace oft::bench {
namespace {

std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};

struct TrackedContext {
  c10::DataPtr inner;
  int64_t bytes;
};

void DeleteTracked(void* ctx) {
  auto* t = static_cast<TrackedContext*>(ctx);
  g_live.fetch_sub(t->bytes);
  delete t;  // frees the wrapped allocation
}

class TrackingAllocator final : public c10::Allocator {
 public:
  explicit TrackingAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    auto* ctx = new TrackedContext{std::move(inner), static_cast<int64_t>(n)};
    const int64_t live = g_live.fetch_add(ctx->bytes) + ctx->bytes;
    int64_t peak = g_peak.load();
    while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
    }
    return c10::DataPtr(data, ctx, &DeleteTracked, device);
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    base_->copy_data(dest, src, count);
  }

 private:
  c10::Allocator* base_;
};

}  // namespace

void InstallCpuMemoryTracker() {
  static TrackingAllocator* tracker = [] {
    auto* t = new TrackingAllocator(c10::GetDefaultCPUAllocator());
    c10::SetCPUAllocator(t, /*priority=*/100);
    return t;
  }();
  (void)tracker;
}

int64_t CurrentBytes([[maybe_unused]] const c10::Device& device) {
#ifdef OFT_WITH_CUDA
  if (device.is_cuda()) {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index())
        .allocated_bytes[0]
        .current;
  }
#endif
  return g_live.load();
}

void ResetPeak([[maybe_unused]] const c10::Device& device) {
#ifdef OFT_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
    return;
  }
#endif
  g_peak.store(g_live.load());
}

int64_t PeakBytes([[maybe_unused]] const c10::Device& device) {
#ifdef OFT_WITH_CUDA
  if (device.is_cuda()) {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).allocated_bytes[0].peak;
  }
#endif
  return g_peak.load();
}

void SyncDevice(const c10::Device& device) {
#ifdef OFT_WITH_CUDA
  if (device.is_cuda()) c10::cuda::getCurrentCUDAStream(device.index()).synchronize();
#endif
  (void)device;
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace oft::bench
