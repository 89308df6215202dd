// server/oft/cpu_isa: detection, OFT_CPU_ISA parsing, and the clear errors for a bad value
// or a path this CPU cannot run.
#include "server/oft/cpu_isa.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

namespace oft::cpu {
namespace {

// Sets OFT_CPU_ISA for one scope and restores the previous value.
class ScopedIsaEnv {
 public:
  explicit ScopedIsaEnv(const char* value) {
    if (const char* old = getenv("OFT_CPU_ISA")) old_ = old, had_ = true;
    if (value) {
      setenv("OFT_CPU_ISA", value, 1);
    } else {
      unsetenv("OFT_CPU_ISA");
    }
  }
  ~ScopedIsaEnv() {
    if (had_) {
      setenv("OFT_CPU_ISA", old_.c_str(), 1);
    } else {
      unsetenv("OFT_CPU_ISA");
    }
  }

 private:
  std::string old_;
  bool had_ = false;
};

TEST(CpuIsaTest, NamesRoundTrip) {
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    auto parsed = ParseIsa(IsaName(isa));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, isa);
  }
}

TEST(CpuIsaTest, DetectionIsConsistent) {
  EXPECT_TRUE(CpuSupports(Isa::kGeneric));
  EXPECT_TRUE(CpuSupports(DetectedIsa()));
  if (CpuSupports(Isa::kAvx512)) {
    EXPECT_TRUE(CpuSupports(Isa::kAvx2));
  }
  EXPECT_EQ(SupportedIsas().back(), DetectedIsa());
  EXPECT_FALSE(CpuModelName().empty());
}

TEST(CpuIsaTest, UnsetOrEmptyEnvironmentDetects) {
  {
    ScopedIsaEnv env(nullptr);
    auto isa = IsaFromEnvironment();
    ASSERT_TRUE(isa.ok()) << isa.status();
    EXPECT_EQ(*isa, DetectedIsa());
  }
  ScopedIsaEnv env("");
  auto isa = IsaFromEnvironment();
  ASSERT_TRUE(isa.ok()) << isa.status();
  EXPECT_EQ(*isa, DetectedIsa());
}

TEST(CpuIsaTest, EveryPathTheCpuHasCanBeForced) {
  for (Isa isa : SupportedIsas()) {
    ScopedIsaEnv env(IsaName(isa));
    auto got = IsaFromEnvironment();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, isa);
  }
}

TEST(CpuIsaTest, BadValueIsAClearError) {
  ScopedIsaEnv env("sse9");
  auto isa = IsaFromEnvironment();
  ASSERT_FALSE(isa.ok());
  EXPECT_EQ(isa.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(isa.status().message());
  EXPECT_NE(msg.find("OFT_CPU_ISA must be one of avx512, avx2, generic"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"sse9\""), std::string::npos) << msg;
  // Names are case-sensitive, as documented.
  ScopedIsaEnv upper("AVX2");
  EXPECT_EQ(IsaFromEnvironment().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CpuIsaTest, UnsupportedForcedPathIsAClearError) {
  bool tested = false;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (CpuSupports(isa)) continue;
    tested = true;
    ScopedIsaEnv env(IsaName(isa));
    auto got = IsaFromEnvironment();
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
    const std::string msg(got.status().message());
    EXPECT_NE(msg.find(std::string("cannot run ") + IsaName(isa)), std::string::npos) << msg;
    EXPECT_NE(msg.find(CpuModelName()), std::string::npos) << msg;
    EXPECT_NE(msg.find("it supports: generic"), std::string::npos) << msg;
    EXPECT_FALSE(SetIsaForTesting(isa).ok());
  }
  if (!tested) GTEST_SKIP() << "this CPU (" << CpuModelName() << ") runs every path (avx512, avx2, generic)";
}

TEST(CpuIsaTest, SetIsaForTestingSwitchesTheActivePath) {
  const Isa before = ActiveIsa();
  for (Isa isa : SupportedIsas()) {
    ASSERT_TRUE(SetIsaForTesting(isa).ok());
    EXPECT_EQ(ActiveIsa(), isa);
  }
  ASSERT_TRUE(SetIsaForTesting(before).ok());
}

// The same messages for CPUs this machine is not: an AVX2-only EPYC and a CPU without AVX2.
TEST(CpuIsaTest, ForcedPathMissingOnAnotherCpuIsAClearError) {
  const std::string epyc = "AMD EPYC 7B13 64-Core Processor";
  auto got = internal::ResolveIsa("avx512", {Isa::kGeneric, Isa::kAvx2}, epyc);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(got.status().message(),
            "OFT_CPU_ISA=avx512 but this CPU (" + epyc +
                ") cannot run avx512 (no AVX512F); it supports: generic, avx2");
  got = internal::ResolveIsa("avx2", {Isa::kGeneric}, "Old CPU");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().message(),
            "OFT_CPU_ISA=avx2 but this CPU (Old CPU) cannot run avx2 (no AVX2+FMA); it supports: "
            "generic");
  got = internal::ResolveIsa("avx2", {Isa::kGeneric, Isa::kAvx2}, epyc);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, Isa::kAvx2);
  got = internal::ResolveIsa(nullptr, {Isa::kGeneric, Isa::kAvx2}, epyc);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, Isa::kAvx2);
  EXPECT_EQ(internal::ResolveIsa("Avx2", {Isa::kGeneric, Isa::kAvx2}, epyc).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A kernel that meets an invalid OFT_CPU_ISA (no start-up check ran) stops the process with
// the message. "threadsafe" death tests re-run this test in a fresh process, so the active
// path is resolved there for the first time.
TEST(CpuIsaDeathTest, InvalidEnvironmentStopsTheFirstKernelCall) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("OFT_CPU_ISA", "avx1024", 1);
        ActiveIsa();
      },
      testing::ExitedWithCode(2), "OFT_CPU_ISA must be one of avx512, avx2, generic.*avx1024");
  EXPECT_EXIT(
      {
        setenv("OFT_CPU_ISA", "bogus", 1);
        if (!CheckCpuIsaEnvironment().ok()) std::_Exit(3);
        std::_Exit(0);
      },
      testing::ExitedWithCode(3), "");
}

}  // namespace
}  // namespace oft::cpu
