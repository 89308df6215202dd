// What every benchmark row says about the machine it ran on: the CPU kernel path and the
// CPU model. Needs no LibTorch (rpc_load links it too).
#ifndef OFT_BENCH_MACHINE_INFO_H_
#define OFT_BENCH_MACHINE_INFO_H_

#include <string>

namespace oft::bench {

// Resolves the CPU kernel path from OFT_CPU_ISA (oft::cpu::CheckCpuIsaEnvironment). On a bad
// value or a path this CPU lacks, prints "<program>: <error>" to stderr and returns false:
// the caller exits (status 2) before measuring anything.
bool InitCpuIsa(const char* program);

// The JSON members `"isa":"<path>","cpu":"<model>"` (no braces, no leading or trailing comma),
// with <path> the active oft::cpu::IsaName and <model> the JSON-escaped CPU model name.
std::string IsaCpuJsonFields();

}  // namespace oft::bench

#endif  // OFT_BENCH_MACHINE_INFO_H_
