#include "server/oft/cpu_isa.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define OFT_X86 1
#endif

namespace oft::cpu {
namespace {

constexpr int kUnresolved = -1;
std::atomic<int> active{kUnresolved};
std::once_flag resolve_once;
absl::Status resolve_status;  // written once under resolve_once

void Resolve() {
  std::call_once(resolve_once, [] {
    absl::StatusOr<Isa> isa = IsaFromEnvironment();
    resolve_status = isa.status();
    // On error the kernels still need a path; the caller decides whether to stop.
    int expected = kUnresolved;
    active.compare_exchange_strong(expected, static_cast<int>(isa.ok() ? *isa : DetectedIsa()));
  });
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kGeneric:
      break;
  }
  return "generic";
}

absl::StatusOr<Isa> ParseIsa(absl::string_view name) {
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    if (name == IsaName(isa)) return isa;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "OFT_CPU_ISA must be one of avx512, avx2, generic (or unset to detect), got \"", name, "\""));
}

bool CpuSupports(Isa isa) {
  switch (isa) {
    case Isa::kGeneric:
      return true;
#ifdef OFT_X86
    case Isa::kAvx2:
      // libgcc's CPU model also checks that the OS saves the ymm/zmm state (XGETBV).
      // F16C (fp16 -> fp32 loads of the served adapter blocks) came with every AVX2 CPU.
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && CpuSupports(Isa::kAvx2);
#else
    case Isa::kAvx2:
    case Isa::kAvx512:
      return false;
#endif
  }
  return false;
}

bool ConvertsHalfInHardware(Isa isa) { return isa != Isa::kGeneric; }

Isa DetectedIsa() {
  if (CpuSupports(Isa::kAvx512)) return Isa::kAvx512;
  if (CpuSupports(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kGeneric;
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    if (CpuSupports(isa)) out.push_back(isa);
  }
  return out;
}

std::string CpuModelName() {
#ifdef OFT_X86
  unsigned int max_leaf = __get_cpuid_max(0x80000000u, nullptr);
  if (max_leaf >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned int i = 0; i < 3; ++i) {
      unsigned int regs[4] = {};
      __get_cpuid(0x80000002u + i, &regs[0], &regs[1], &regs[2], &regs[3]);
      std::memcpy(brand + 16 * i, regs, sizeof(regs));
    }
    std::string name(absl::StripAsciiWhitespace(brand));
    if (!name.empty()) return name;
  }
#endif
  return "unknown";
}

std::string CpuVendor() {
#ifdef OFT_X86
  unsigned int regs[4] = {};
  if (__get_cpuid(0, &regs[0], &regs[1], &regs[2], &regs[3])) {
    char vendor[13] = {};
    std::memcpy(vendor, &regs[1], 4);      // EBX
    std::memcpy(vendor + 4, &regs[3], 4);  // EDX
    std::memcpy(vendor + 8, &regs[2], 4);  // ECX
    return vendor;
  }
#endif
  return "unknown";
}

namespace internal {

absl::StatusOr<Isa> ResolveIsa(const char* env_value, const std::vector<Isa>& supported,
                               const std::string& cpu_model) {
  const Isa best = supported.empty() ? Isa::kGeneric : supported.back();
  if (env_value == nullptr || *env_value == '\0') return best;
  absl::StatusOr<Isa> isa = ParseIsa(env_value);
  if (!isa.ok()) return isa.status();
  for (Isa s : supported) {
    if (s == *isa) return *isa;
  }
  std::vector<std::string> names;
  for (Isa s : supported) names.push_back(IsaName(s));
  return absl::FailedPreconditionError(absl::StrCat(
      "OFT_CPU_ISA=", IsaName(*isa), " but this CPU (", cpu_model, ") cannot run ", IsaName(*isa),
      (*isa == Isa::kAvx512 ? " (no AVX512F)" : " (no AVX2+FMA)"),
      "; it supports: ", absl::StrJoin(names, ", ")));
}

}  // namespace internal

absl::StatusOr<Isa> IsaFromEnvironment() {
  return internal::ResolveIsa(std::getenv("OFT_CPU_ISA"), SupportedIsas(), CpuModelName());
}

absl::Status CheckCpuIsaEnvironment() {
  Resolve();
  return resolve_status;
}

Isa ActiveIsa() {
  int v = active.load(std::memory_order_relaxed);
  if (v != kUnresolved) return static_cast<Isa>(v);
  Resolve();
  if (!resolve_status.ok()) {
    std::fprintf(stderr, "oft: %s\n", resolve_status.ToString().c_str());
    std::fflush(stderr);
    std::_Exit(2);
  }
  return static_cast<Isa>(active.load(std::memory_order_relaxed));
}

absl::Status SetIsaForTesting(Isa isa) {
  if (!CpuSupports(isa)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this CPU (", CpuModelName(), ") cannot run the ", IsaName(isa), " path"));
  }
  Resolve();
  active.store(static_cast<int>(isa), std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace oft::cpu
