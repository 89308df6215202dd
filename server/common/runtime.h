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

}  // namespace oft

#endif  // OFT_SERVER_COMMON_RUNTIME_H_
