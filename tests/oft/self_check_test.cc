// The kernel self-check on the CPU: the optimized CPU kernels pass against the composite
// path; a wrong kernel injected through the test hook is detected, bypassed (the op's
// output is then the composite one), refused in mode on, and never run in mode off.
#include "server/oft/self_check.h"

#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "gtest/gtest.h"
#include "server/oft/kernel_registry.h"
#include "server/oft/ops.h"
#include "server/oft/ops_reference.h"
#include "server/quant/nf4.h"

namespace oft {
namespace {

using testing::ScopedOptimizedKernel;

// A realistic bug: the rotation applied transposed (R^T instead of R).
at::Tensor TransposedBlockRotate(const at::Tensor& x, const at::Tensor& rotation) {
  return reference::BlockRotateForward(x, rotation.transpose(1, 2).contiguous());
}

at::Tensor ThrowingBlockRotate(const at::Tensor& x, const at::Tensor&) {
  TORCH_CHECK(false, "injected launch failure");
  return x;
}

// Rows with index -1 must pass through; this one rotates them with adapter 0.
at::Tensor IgnoresIdentityRows(const at::Tensor& x, const at::Tensor& rotations,
                               const at::Tensor& index, bool delta) {
  return reference::GatheredBlockRotateForward(x, rotations, index.clamp_min(0), delta);
}

// Right for R, but takes the served form's D = R - I for R (forgets the identity).
at::Tensor IgnoresDelta(const at::Tensor& x, const at::Tensor& rotations, const at::Tensor& index,
                        bool /*delta*/) {
  return reference::GatheredBlockRotateForward(x, rotations, index, false);
}

// Low nibble first instead of high nibble first.
at::Tensor SwappedNibbles(const at::Tensor& codes, const at::Tensor& absmax,
                          const std::optional<at::Tensor>& absmax_scale, double absmax_offset,
                          int64_t numel, int64_t block_size, at::ScalarType dtype) {
  const at::Tensor swapped = (codes.to(at::kInt) % 16 * 16 + codes.to(at::kInt) / 16).to(at::kByte);
  return reinterpret_cast<Nf4DequantizeFn>(CompositeKernel(KernelId::kNf4Dequantize))(
      swapped, absmax, absmax_scale, absmax_offset, numel, block_size, dtype);
}

class SelfCheckTest : public ::testing::Test {
 protected:
  void SetUp() override { ResetKernelPaths(); }
  void TearDown() override { ResetKernelPaths(); }

  absl::StatusOr<KernelSelfCheckReport> Run(KernelMode mode) {
    KernelSelfCheckOptions options;
    options.mode = mode;
    options.devices = {"cpu"};
    options.log = [this](const std::string& line) { log_.push_back(line); };
    return RunKernelSelfCheck(options);
  }

  std::string Log() const {
    std::string all;
    for (const std::string& l : log_) all += l + "\n";
    return all;
  }

  std::vector<std::string> log_;
};

std::vector<const KernelCheckResult*> ResultsOf(const KernelSelfCheckReport& r, KernelId k) {
  std::vector<const KernelCheckResult*> out;
  for (const KernelCheckResult& x : r.results) {
    if (x.kernel == k) out.push_back(&x);
  }
  return out;
}

KernelPath PathIn(const KernelSelfCheckReport& r, KernelId k) {
  for (const KernelPathEntry& p : r.paths) {
    if (p.kernel == k && p.device == "cpu") return p.path;
  }
  ADD_FAILURE() << "no path entry for " << KernelName(k);
  return KernelPath::kComposite;
}

TEST_F(SelfCheckTest, EveryCpuKernelPassesAndKeepsItsPath) {
  auto report = Run(KernelMode::kAuto);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->AllPassed()) << Log();
  // 1 + 1 + 3 + 3 + 3 + 3 (kernel, dtype) pairs.
  EXPECT_EQ(report->results.size(), 14u);
  for (const KernelCheckResult& r : report->results) {
    EXPECT_EQ(r.outcome, KernelCheckOutcome::kPass) << KernelName(r.kernel) << " " << r.dtype;
    EXPECT_LE(r.max_error, r.tolerance);
    EXPECT_GT(r.tolerance, 0);
  }
  ASSERT_EQ(report->paths.size(), 6u);
  for (const KernelPathEntry& p : report->paths) {
    EXPECT_EQ(p.path, KernelPath::kOptimized) << KernelName(p.kernel);
  }
  ASSERT_EQ(report->PathLines().size(), 1u);
  EXPECT_NE(report->PathLines()[0].find("cpu: build_rotation=kernel"), std::string::npos);
}

TEST_F(SelfCheckTest, WrongKernelIsDetectedAndTheCompositePathServesFromThenOn) {
  ScopedOptimizedKernel wrong(KernelId::kBlockRotate, c10::kCPU,
                              EraseKernel<BlockRotateFn>(&TransposedBlockRotate));
  const at::Tensor x = at::randn({5, 64});
  const at::Tensor rotation = reference::BuildRotationForward(0.1 * at::randn({4, 120}), 16, 5, true);
  const at::Tensor want = reference::BlockRotateForward(x, rotation);
  // Before the check the wrong kernel serves (the hook really replaced it).
  EXPECT_GT((BlockRotate(x, rotation) - want).abs().max().item<double>(), 1e-3);

  auto report = Run(KernelMode::kAuto);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->AllPassed());
  const auto results = ResultsOf(*report, KernelId::kBlockRotate);
  ASSERT_EQ(results.size(), 3u);
  for (const KernelCheckResult* r : results) {
    EXPECT_EQ(r->outcome, KernelCheckOutcome::kMismatch) << r->dtype;
    EXPECT_GT(r->max_error, r->tolerance);
    EXPECT_NE(r->detail.find("max error"), std::string::npos) << r->detail;
  }
  EXPECT_EQ(PathIn(*report, KernelId::kBlockRotate), KernelPath::kComposite);
  EXPECT_EQ(PathIn(*report, KernelId::kBlockRotateBackward), KernelPath::kOptimized);
  EXPECT_EQ(PathIn(*report, KernelId::kBuildRotation), KernelPath::kOptimized);
  EXPECT_EQ(KernelPathFor(KernelId::kBlockRotate, c10::Device(c10::kCPU)), KernelPath::kComposite);
  EXPECT_NE(Log().find("FAILED block_rotate on cpu (float32): mismatch"), std::string::npos) << Log();
  EXPECT_NE(Log().find("block_rotate on cpu takes the composite path"), std::string::npos) << Log();
  EXPECT_NE(Log().find("block_rotate=composite"), std::string::npos) << Log();

  // From now on the op (and so OftLinear) computes the right thing.
  EXPECT_TRUE(at::equal(BlockRotate(x, rotation), want));
  const at::Tensor xb = x.to(at::kBFloat16);
  EXPECT_TRUE(at::equal(BlockRotate(xb, rotation), reference::BlockRotateForward(xb, rotation)));
}

TEST_F(SelfCheckTest, ThrowingKernelIsAnErrorAndFallsBack) {
  ScopedOptimizedKernel wrong(KernelId::kBlockRotate, c10::kCPU,
                              EraseKernel<BlockRotateFn>(&ThrowingBlockRotate));
  auto report = Run(KernelMode::kAuto);
  ASSERT_TRUE(report.ok()) << report.status();
  for (const KernelCheckResult* r : ResultsOf(*report, KernelId::kBlockRotate)) {
    EXPECT_EQ(r->outcome, KernelCheckOutcome::kError);
    EXPECT_NE(r->detail.find("injected launch failure"), std::string::npos) << r->detail;
  }
  const at::Tensor x = at::randn({3, 32});
  const at::Tensor rotation = reference::BuildRotationForward(0.1 * at::randn({2, 120}), 16, 5, true);
  EXPECT_TRUE(at::equal(BlockRotate(x, rotation), reference::BlockRotateForward(x, rotation)));
}

TEST_F(SelfCheckTest, GatheredAndNf4KernelsAreCheckedToo) {
  ScopedOptimizedKernel wrong_gathered(KernelId::kGatheredBlockRotate, c10::kCPU,
                                       EraseKernel<GatheredBlockRotateFn>(&IgnoresIdentityRows));
  ScopedOptimizedKernel wrong_nf4(KernelId::kNf4Dequantize, c10::kCPU,
                                  EraseKernel<Nf4DequantizeFn>(&SwappedNibbles));
  auto report = Run(KernelMode::kAuto);
  ASSERT_TRUE(report.ok()) << report.status();
  for (KernelId k : {KernelId::kGatheredBlockRotate, KernelId::kNf4Dequantize}) {
    for (const KernelCheckResult* r : ResultsOf(*report, k)) {
      EXPECT_EQ(r->outcome, KernelCheckOutcome::kMismatch) << KernelName(k) << " " << r->dtype;
    }
    EXPECT_EQ(PathIn(*report, k), KernelPath::kComposite) << KernelName(k);
  }
  EXPECT_EQ(PathIn(*report, KernelId::kBlockRotate), KernelPath::kOptimized);

  // Outputs after the fallback: the composite ones.
  const at::Tensor x = at::randn({6, 32});
  const at::Tensor rotations =
      reference::BuildRotationForward(0.1 * at::randn({4, 120}), 16, 5, true).view({2, 2, 16, 16});
  const at::Tensor index = at::tensor(std::vector<int64_t>{-1, 0, 1, -1, 1, 0});
  const at::Tensor y = GatheredBlockRotate(x, rotations, index);
  EXPECT_TRUE(at::equal(y.select(0, 0), x.select(0, 0)));  // identity rows pass through
  EXPECT_TRUE(at::equal(y, reference::GatheredBlockRotateForward(x, rotations, index)));
  const at::Tensor w = at::randn({8, 64});
  auto q = Quantize(w);
  ASSERT_TRUE(q.ok());
  EXPECT_LT((Dequantize(*q) - w).abs().max().item<double>(), 0.2 * w.abs().max().item<double>());
}

TEST_F(SelfCheckTest, GatheredKernelIsCheckedInTheServedDeltaFormToo) {
  ScopedOptimizedKernel wrong(KernelId::kGatheredBlockRotate, c10::kCPU,
                              EraseKernel<GatheredBlockRotateFn>(&IgnoresDelta));
  auto report = Run(KernelMode::kAuto);
  ASSERT_TRUE(report.ok()) << report.status();
  for (const KernelCheckResult* r : ResultsOf(*report, KernelId::kGatheredBlockRotate)) {
    EXPECT_EQ(r->outcome, KernelCheckOutcome::kMismatch) << r->dtype;
    EXPECT_NE(r->detail.find("delta"), std::string::npos) << r->detail;
  }
  EXPECT_EQ(PathIn(*report, KernelId::kGatheredBlockRotate), KernelPath::kComposite);
}

TEST_F(SelfCheckTest, ModeOnRefusesAFailingKernel) {
  ScopedOptimizedKernel wrong(KernelId::kBlockRotate, c10::kCPU,
                              EraseKernel<BlockRotateFn>(&TransposedBlockRotate));
  auto report = Run(KernelMode::kOn);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(report.status().message().find("block_rotate on cpu (float32): mismatch"),
            std::string::npos)
      << report.status();
  EXPECT_NE(report.status().message().find("--cuda_kernels=on"), std::string::npos);
}

TEST_F(SelfCheckTest, ModeOnPassesWithCorrectKernels) {
  auto report = Run(KernelMode::kOn);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->AllPassed());
}

TEST_F(SelfCheckTest, ModeOffRunsNoOptimizedKernel) {
  ScopedOptimizedKernel wrong(KernelId::kBlockRotate, c10::kCPU,
                              EraseKernel<BlockRotateFn>(&ThrowingBlockRotate));
  auto report = Run(KernelMode::kOff);
  ASSERT_TRUE(report.ok()) << report.status();
  for (const KernelCheckResult& r : report->results) {
    EXPECT_EQ(r.outcome, KernelCheckOutcome::kDisabled);
  }
  for (const KernelPathEntry& p : report->paths) EXPECT_EQ(p.path, KernelPath::kComposite);
  const at::Tensor x = at::randn({3, 32});
  const at::Tensor rotation = reference::BuildRotationForward(0.1 * at::randn({2, 120}), 16, 5, true);
  EXPECT_TRUE(at::equal(BlockRotate(x, rotation), reference::BlockRotateForward(x, rotation)));
  // Also devices that were not listed.
  EXPECT_EQ(KernelPathFor(KernelId::kBlockRotate, c10::Device(c10::kCUDA, 3)),
            KernelPath::kComposite);
}

TEST_F(SelfCheckTest, BadModeAndDeviceNamesAreNamed) {
  auto mode = ParseKernelMode("fast");
  ASSERT_FALSE(mode.ok());
  EXPECT_NE(mode.status().message().find("--cuda_kernels must be auto, on or off, got 'fast'"),
            std::string::npos);
  EXPECT_EQ(*ParseKernelMode("off"), KernelMode::kOff);
  KernelSelfCheckOptions options;
  options.devices = {"cpu", "gpu0"};
  auto bad_name = RunKernelSelfCheck(options);
  ASSERT_FALSE(bad_name.ok());
  EXPECT_NE(bad_name.status().message().find("'gpu0'"), std::string::npos);
  options.devices = {"meta"};
  EXPECT_EQ(RunKernelSelfCheck(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.devices = {"cuda:64"};
  EXPECT_EQ(RunKernelSelfCheck(options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oft
