// oft::gathered_block_rotate on CPU: the fast kernel against the reference (the spec), and
// the reference against plain per-row BlockRotate.
#include <gtest/gtest.h>

#include <cmath>

#include "ATen/ATen.h"
#include "server/oft/ops.h"
#include "server/oft/ops_cpu.h"
#include "server/oft/ops_reference.h"

namespace oft {
namespace {

at::Tensor RandomRotations(int64_t adapters, int64_t rows, int64_t b) {
  auto q = at::randn({adapters * rows, b, b}, at::kFloat) * 0.1;
  q = q - q.transpose(1, 2);
  auto eye = at::eye(b).expand_as(q);
  return at::linalg_solve(eye + q, eye - q, false).view({adapters, rows, b, b});
}

TEST(GatheredRotateTest, EachRowRotatedByItsOwnAdapterOrPassedThrough) {
  at::manual_seed(1);
  const int64_t n = 9, d = 32, b = 8;
  auto x = at::randn({n, d});
  auto rot = RandomRotations(3, d / b, b);
  auto index = at::tensor(std::vector<int64_t>{0, 2, -1, 1, 1, 0, -1, 2, 2}, at::kLong);
  auto y = GatheredBlockRotate(x, rot, index);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = index[i].item<int64_t>();
    auto expected = a < 0 ? x[i] : BlockRotate(x[i].unsqueeze(0), rot[a]).squeeze(0);
    EXPECT_TRUE(at::allclose(y[i], expected, 1e-5, 1e-6)) << "row " << i;
  }
  // A passed-through row is bit-identical.
  EXPECT_TRUE(at::equal(y[2], x[2]));
}

TEST(GatheredRotateTest, CpuKernelMatchesReferencePerDtypeAndLongRuns) {
  at::manual_seed(2);
  for (auto dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf}) {
    for (int64_t n : {1, 5, 200}) {
      const int64_t d = 64, b = 16;
      auto x = at::randn({n, d}).to(dtype);
      auto rot = RandomRotations(4, d / b, b);
      // Runs: short ones and (for n = 200) one long run that takes the GEMM path.
      auto index = at::randint(-1, 4, {n}, at::kLong);
      if (n == 200) index.narrow(0, 50, 100).fill_(3);
      auto ref = reference::GatheredBlockRotateForward(x, rot, index);
      auto fast = cpu::GatheredBlockRotateForward(x, rot, index);
      const double tol = dtype == at::kDouble ? 1e-12 : dtype == at::kFloat ? 1e-5 : 2e-2;
      EXPECT_EQ(fast.scalar_type(), dtype);
      EXPECT_TRUE(at::allclose(fast.to(at::kDouble), ref.to(at::kDouble), tol, tol))
          << dtype << " n=" << n;
    }
  }
}

TEST(GatheredRotateTest, SharedBlockBroadcasts) {
  at::manual_seed(3);
  const int64_t d = 24, b = 6;
  auto x = at::randn({4, d});
  auto rot = RandomRotations(2, 1, b);  // [2, 1, b, b]
  auto index = at::tensor(std::vector<int64_t>{1, 0, -1, 1}, at::kLong);
  auto y = GatheredBlockRotate(x, rot, index);
  auto expected = BlockRotate(x[0].unsqueeze(0), rot[1]).squeeze(0);
  EXPECT_TRUE(at::allclose(y[0], expected, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(y, reference::GatheredBlockRotateForward(x, rot, index), 1e-5, 1e-6));
}

TEST(GatheredRotateTest, RowResultDoesNotDependOnOtherRows) {
  at::manual_seed(4);
  const int64_t d = 32, b = 8;
  auto rot = RandomRotations(3, d / b, b);
  auto x = at::randn({6, d});
  auto index = at::tensor(std::vector<int64_t>{2, 0, 1, 2, -1, 1}, at::kLong);
  auto batched = GatheredBlockRotate(x, rot, index);
  for (int64_t i = 0; i < 6; ++i) {
    auto alone = GatheredBlockRotate(x.narrow(0, i, 1), rot, index.narrow(0, i, 1));
    EXPECT_TRUE(at::equal(batched.narrow(0, i, 1), alone)) << "row " << i;
  }
}

// The served form: rotations hold D = R - I (fp16 on the fp32 CPU path). Against the
// reference (R = D + I), against the same rotation stored as fp32 R within fp16's rounding
// of R - I, per dtype, with pass-through rows exact and rows independent of each other.
TEST(GatheredRotateTest, DeltaFormRotatesByIdentityPlusDelta) {
  at::manual_seed(5);
  const int64_t n = 40, d = 96, b = 32;
  auto rot = RandomRotations(3, d / b, b);  // [3, 3, b, b]
  auto delta = (rot - at::eye(b)).to(at::kHalf);
  auto index = at::randint(-1, 3, {n}, at::kLong);
  index.narrow(0, 10, 12).fill_(1);
  for (auto dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    auto x = at::randn({n, d}).to(dtype);
    auto y = GatheredBlockRotate(x, delta, index, /*delta=*/true);
    EXPECT_EQ(y.scalar_type(), dtype);
    auto ref = reference::GatheredBlockRotateForward(x.to(at::kDouble), delta.to(at::kDouble),
                                                     index, true);
    const double tol = dtype == at::kBFloat16 ? 3e-2 : 1e-5;
    EXPECT_TRUE(at::allclose(y.to(at::kDouble), ref, tol, tol)) << dtype;
    for (int64_t i = 0; i < n; ++i) {
      if (index[i].item<int64_t>() < 0) {
        EXPECT_TRUE(at::equal(y[i], x[i])) << dtype << " row " << i;
      }
    }
  }
  // fp32 x: within fp16's rounding of each entry of R - I (|error| <= 2^-11 |D|) of the
  // fp32 R result.
  auto x = at::randn({n, d});
  auto y = GatheredBlockRotate(x, delta, index, true);
  auto exact = GatheredBlockRotate(x, rot, index);
  auto d_abs = (rot - at::eye(b)).abs();  // [3, 3, b, b]
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = index[i].item<int64_t>();
    if (a < 0) continue;
    auto bound = BlockRotate(x[i].abs().unsqueeze(0), d_abs[a]).squeeze(0) * std::ldexp(1.0, -11);
    EXPECT_TRUE(((y[i] - exact[i]).abs() <= bound * 1.01 + 2e-6).all().item<bool>()) << "row " << i;
  }
  // Row independence (bitwise) as for R.
  for (int64_t i = 0; i < n; i += 7) {
    EXPECT_TRUE(at::equal(y.narrow(0, i, 1),
                          GatheredBlockRotate(x.narrow(0, i, 1), delta, index.narrow(0, i, 1), true)))
        << "row " << i;
  }
}

TEST(GatheredRotateTest, BadArgumentsThrow) {
  auto x = at::randn({3, 16});
  auto rot = RandomRotations(2, 2, 8);
  EXPECT_THROW(GatheredBlockRotate(x, rot, at::tensor(std::vector<int64_t>{0, 1}, at::kLong)), c10::Error);
  EXPECT_THROW(GatheredBlockRotate(x, rot, at::tensor(std::vector<int64_t>{0, 2, 0}, at::kLong)), c10::Error);
  EXPECT_THROW(GatheredBlockRotate(x, rot, at::zeros({3}, at::kInt)), c10::Error);
  EXPECT_THROW(GatheredBlockRotate(at::randn({3, 12}), rot, at::zeros({3}, at::kLong)), c10::Error);
}

}  // namespace
}  // namespace oft
