// oft::gathered_block_rotate on CUDA against the CPU reference, per dtype. Skips without a GPU.
#include <gtest/gtest.h>

#include "ATen/ATen.h"
#include "ATen/Context.h"
#include "server/oft/ops.h"
#include "server/oft/ops_reference.h"

namespace oft {
namespace {

TEST(GatheredRotateCudaTest, MatchesReferencePerDtype) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  ASSERT_TRUE(CudaKernelsBuilt());
  at::manual_seed(5);
  for (auto dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf}) {
    for (auto [n, d, b, rows, adapters] : std::vector<std::array<int64_t, 5>>{
             {1, 64, 32, 2, 1}, {37, 256, 32, 8, 5}, {300, 96, 48, 1, 3}, {4, 2048, 1024, 2, 2}}) {
      auto q = at::randn({adapters * rows, b, b}, at::kDouble) * 0.05;
      q = q - q.transpose(1, 2);
      auto eye = at::eye(b, at::kDouble).expand_as(q);
      auto rot = at::linalg_solve(eye + q, eye - q, false).view({adapters, rows, b, b}).to(at::kFloat);
      auto x = at::randn({n, d}).to(dtype);
      auto index = at::randint(-1, adapters, {n}, at::kLong);
      auto ref = reference::GatheredBlockRotateForward(x.to(at::kDouble), rot.to(at::kDouble), index);
      auto y = GatheredBlockRotate(x.cuda(), rot.cuda(), index.cuda()).cpu();
      EXPECT_EQ(y.scalar_type(), dtype);
      const double tol = dtype == at::kDouble ? 1e-6 : dtype == at::kFloat ? 1e-4 : 3e-2;
      EXPECT_TRUE(at::allclose(y.to(at::kDouble), ref, tol, tol))
          << dtype << " n=" << n << " d=" << d << " b=" << b;
    }
  }
}

TEST(GatheredRotateCudaTest, PassThroughRowsAreExact) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  auto x = at::randn({8, 64}).cuda();
  auto rot = at::randn({2, 2, 32, 32}).cuda();
  auto index = at::full({8}, -1, at::kLong).cuda();
  EXPECT_TRUE(at::equal(GatheredBlockRotate(x, rot, index), x));
}

}  // namespace
}  // namespace oft
