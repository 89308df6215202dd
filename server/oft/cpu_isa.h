// The x86-64 instruction-set path the oft CPU kernels run: AVX-512, AVX2+FMA, or a portable
// (generic) one. Detected at run time from CPUID; the environment variable
// OFT_CPU_ISA=avx512|avx2|generic forces one path so that one machine can test and benchmark
// every path it is able to run.
//
// Threads: every function is safe to call from any thread. The active path is resolved once,
// on the first call to ActiveIsa() or CheckCpuIsaEnvironment(); SetIsaForTesting() changes it
// afterwards (tests only: kernels running concurrently may still use the old path).
#ifndef OFT_SERVER_OFT_CPU_ISA_H_
#define OFT_SERVER_OFT_CPU_ISA_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oft::cpu {

// Ordered: a CPU that runs a path also runs every path before it.
enum class Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

// "generic", "avx2" or "avx512" (the spelling OFT_CPU_ISA takes and benchmarks print).
const char* IsaName(Isa isa);

// INVALID_ARGUMENT naming the accepted values when `name` is not one of IsaName()'s.
absl::StatusOr<Isa> ParseIsa(absl::string_view name);

// True when this CPU (and OS) can run `isa`: AVX2 needs AVX2, FMA and F16C; AVX-512 needs
// AVX512F.
bool CpuSupports(Isa isa);

// The best path this CPU supports.
Isa DetectedIsa();

// True when `isa`'s kernels convert fp16 to fp32 in hardware (F16C / AVX-512F: the AVX
// paths); the generic path converts with integer operations, several per value.
bool ConvertsHalfInHardware(Isa isa);

// Every path this CPU supports, generic first.
std::vector<Isa> SupportedIsas();

// The CPU's model name (CPUID brand string, e.g. "Intel(R) Xeon(R) ..."), "unknown" when the
// CPU does not report one.
std::string CpuModelName();

// The CPUID vendor string ("GenuineIntel", "AuthenticAMD", ...), "unknown" off x86.
std::string CpuVendor();

// The path OFT_CPU_ISA asks for, or DetectedIsa() when it is unset or empty.
//   INVALID_ARGUMENT:    the value is not avx512, avx2 or generic (the message quotes it).
//   FAILED_PRECONDITION: this CPU cannot run the forced path (the message names the path,
//                        the CPU model and the paths it can run).
absl::StatusOr<Isa> IsaFromEnvironment();

// Resolves the active path from the environment (see IsaFromEnvironment) and returns its
// error. Every binary calls this at start-up, so a bad OFT_CPU_ISA stops it with a clear
// message before any work runs.
absl::Status CheckCpuIsaEnvironment();

// The path the kernels use. If OFT_CPU_ISA is invalid and CheckCpuIsaEnvironment() was not
// called first, the first call prints the error to stderr and exits the process with status 2
// (a kernel has no way to return it).
Isa ActiveIsa();

// Forces `isa` for the rest of the process (tests). FAILED_PRECONDITION, leaving the active
// path unchanged, when this CPU cannot run it.
absl::Status SetIsaForTesting(Isa isa);

namespace internal {
// IsaFromEnvironment() for a CPU named `cpu_model` that runs `supported` (generic first),
// with OFT_CPU_ISA = `env_value` (nullptr: unset). Lets tests check the messages for CPUs
// they do not run on.
absl::StatusOr<Isa> ResolveIsa(const char* env_value, const std::vector<Isa>& supported,
                               const std::string& cpu_model);
}  // namespace internal

}  // namespace oft::cpu

#endif  // OFT_SERVER_OFT_CPU_ISA_H_
