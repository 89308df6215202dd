#include "server/common/runtime.h"

#include <malloc.h>

#include <thread>

#include "ATen/Context.h"
#include "ATen/Parallel.h"
#include "c10/core/CachingDeviceAllocator.h"

namespace oft {

int ConfigureCpuRuntime(int threads) {
  at::globalContext().setFlushDenormal(true);
  // Keep freed activation buffers (up to 32 MiB each) in the heap instead of returning them
  // to the kernel: otherwise every step re-faults its large temporaries page by page.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const int n = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(n > 0 ? n : 1);
  return at::get_num_threads();
}

void ReleaseCachedCudaMemory() {
  try {
    if (!at::globalContext().hasCUDA()) return;
    c10::DeviceAllocator* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (allocator == nullptr || !allocator->initialized()) return;
    allocator->emptyCache();
  } catch (const std::exception&) {
    // Best effort: the cached blocks stay cached.
  }
}

}  // namespace oft
