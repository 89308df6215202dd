#include "server/oft/ops_cpu_kernels.h"

#include "server/oft/cpu_isa.h"

namespace oft::cpu::internal {

const Kernels& KernelsFor(Isa isa) {
#if defined(__x86_64__)
  switch (isa) {
    case Isa::kAvx512:
      return Avx512Kernels();
    case Isa::kAvx2:
      return Avx2Kernels();
    case Isa::kGeneric:
      break;
  }
#else
  (void)isa;
#endif
  return GenericKernels();
}

const Kernels& ActiveKernels() { return KernelsFor(ActiveIsa()); }

}  // namespace oft::cpu::internal
