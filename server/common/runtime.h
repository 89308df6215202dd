// Process-wide LibTorch CPU settings every binary applies at start-up, before any
// worker thread exists (threads inherit the floating-point mode of their creator).
#ifndef OFT_SERVER_COMMON_RUNTIME_H_
#define OFT_SERVER_COMMON_RUNTIME_H_

namespace oft {

// Sets torch's intra-op thread count explicitly (`threads` <= 0: all hardware threads)
// and flushes denormal floats to zero. Denormals appear in attention probabilities of
// trained models and slow CPU GEMMs down ~20x (measured on the default model); flushing
// changes only values below 1.2e-38. Also raises glibc's mmap / trim thresholds so large
// temporaries are reused rather than re-faulted every step. Returns the thread count in effect.
int ConfigureCpuRuntime(int threads);

// Returns the CUDA caching allocator's unused cached blocks (all devices) to the driver, so
// another job or the serving engine on the GPU can use them: after a job ends and after an
// adapter eviction. No-op before CUDA is initialised and without CUDA. Never throws.
void ReleaseCachedCudaMemory();

}  // namespace oft

#endif  // OFT_SERVER_COMMON_RUNTIME_H_
