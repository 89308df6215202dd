#include "bench/memory_tracker.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <unordered_map>

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

// The size of every live tracked allocation, by address. The DataPtrs handed out keep the
// base allocator's convention (context == data pointer), which raw_allocate users such as
// LibTorch's oneDNN integration assert; freeing goes through the base allocator's deleter.
std::mutex g_mu;
std::unordered_map<void*, int64_t>& Sizes() {
  static auto* sizes = new std::unordered_map<void*, int64_t>();
  return *sizes;
}
c10::DeleterFnPtr g_base_deleter = nullptr;

void DeleteTracked(void* ptr) {
  if (ptr == nullptr) return;
  int64_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = Sizes().find(ptr);
    if (it != Sizes().end()) {
      bytes = it->second;
      Sizes().erase(it);
    }
  }
  g_live.fetch_sub(bytes);
  g_base_deleter(ptr);
}

class TrackingAllocator final : public c10::Allocator {
 public:
  explicit TrackingAllocator(c10::Allocator* base) : base_(base) { g_base_deleter = base->raw_deleter(); }

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    TORCH_CHECK(data == inner.get_context() && g_base_deleter != nullptr,
                "memory tracker: the base CPU allocator's DataPtr context is not its data pointer");
    if (data == nullptr) return inner;
    inner.release_context();  // now owned by DeleteTracked
    {
      std::lock_guard<std::mutex> lock(g_mu);
      Sizes()[data] = static_cast<int64_t>(n);
    }
    const int64_t live = g_live.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
    int64_t peak = g_peak.load();
    while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
    }
    return c10::DataPtr(data, data, &DeleteTracked, device);
  }

  c10::DeleterFnPtr raw_deleter() const override { return &DeleteTracked; }

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
