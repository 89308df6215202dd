// The CUDA kernels of the oft:: ops (server/oft/cuda/) against the CPU reference, per
// dtype, forward and both gradients through autograd, plus fp64 finite differences on the
// GPU. Every test skips when no CUDA device is present.
//
// Closeness: max |actual - expected| <= tol * max(1, max |expected|), tol per dtype:
//   build_rotation (fp32):      1e-5 forward, 1e-4 gradient
//   build_rotation (fp64):      1e-12 forward, 1e-10 gradient
//   block_rotate y, grad_x:     fp32 2e-5; fp16 4e-3; bf16 2e-2 (the GEMM rounds R to the
//                               activation dtype, the reference keeps it in fp32; both round
//                               the output once, so up to one output ulp apart)
//   block_rotate grad_R:        fp32 2e-5; fp16/bf16 1e-3 (same bf16/fp16 inputs, exact
//                               products, fp32 accumulation on both sides; only the
//                               summation order differs)
//   fp64 finite differences:    1e-5 * max(1, |numeric|) on directional derivatives (h = 1e-6;
//                               rounding of L alone is ~1e-7, a wrong formula is O(1)).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "server/oft/ops.h"

namespace oft {
namespace {

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available() || torch::cuda::device_count() == 0) {
      GTEST_SKIP() << "no CUDA device";
    }
  }
  static torch::Device Gpu() { return torch::Device(torch::kCUDA, 0); }
};

// max |actual - expected| / max(1, max |expected|), computed in fp64 on the CPU.
double ScaledError(const torch::Tensor& actual, const torch::Tensor& expected) {
  auto a = actual.detach().to(torch::kCPU, torch::kFloat64);
  auto e = expected.detach().to(torch::kCPU, torch::kFloat64);
  EXPECT_EQ(a.sizes(), e.sizes());
  if (e.numel() == 0) return 0.0;
  const double scale = std::max(1.0, e.abs().max().item<double>());
  return (a - e).abs().max().item<double>() / scale;
}

// ||Q||_2 = spectral_norm for every block: random skew b x b, fp64 on the CPU.
torch::Tensor RandomPacked(int64_t rows, int64_t b, double spectral_norm, uint64_t seed) {
  torch::manual_seed(seed);
  auto p = torch::randn({rows, b * (b - 1) / 2}, torch::kFloat64);
  auto q = SkewFromPacked(p, b);
  auto s = torch::linalg_matrix_norm(q, 2).reshape({rows, 1});
  return p / s * spectral_norm;
}

std::string Name(torch::ScalarType t) { return c10::toString(t); }

TEST_F(CudaOpsTest, KernelsAreBuilt) { EXPECT_TRUE(CudaKernelsBuilt()); }

TEST_F(CudaOpsTest, GoldenVectorsOnGpu) {
  // tests/oft/golden_vectors.json (PEFT, fp64), k = 5.
  auto packed =
      torch::tensor({0.10, -0.20, 0.05, 0.30, -0.10, 0.15, -0.05, 0.02, 0.12, -0.08, 0.20, 0.07},
                    torch::kFloat64)
          .reshape({2, 6});
  auto r_want =
      torch::tensor(
          {0.904088,  0.286625,  -0.286938, 0.015500, -0.049375, 0.799150,  0.559875,  -0.088000,
           0.369063,  -0.432125, 0.721588,  0.322500, -0.161500, 0.234000,  -0.176500, 0.936025,
           0.966294,  -0.138797, 0.035598,  0.209662, 0.052271,  0.905262,  -0.178236, 0.374017,
           -0.052594, 0.128020,  0.977110,  0.158373, -0.242882, -0.372471, -0.105839, 0.885176},
          torch::kFloat64)
          .reshape({2, 4, 4});
  auto x = torch::arange(1, 17, torch::kFloat64).reshape({2, 8}) / 10;
  auto y_want = torch::tensor({0.126653, 0.152455, 0.229158, 0.455110, 0.283388, 0.265395, 0.510163,
                               1.148243, 0.976473, 0.862575, 0.883578, 1.403930, 0.861859, 0.683006,
                               1.093069, 2.450024},
                              torch::kFloat64)
                    .reshape({2, 8});
  for (auto dt : {torch::kFloat64, torch::kFloat32}) {
    auto r = BuildRotation(packed.to(Gpu(), dt), 4, 5, true);
    ASSERT_TRUE(r.is_cuda());
    ASSERT_EQ(r.scalar_type(), dt);
    EXPECT_LT(ScaledError(r, r_want), 1e-6) << Name(dt);
    auto y = BlockRotate(x.to(Gpu(), dt), r);
    ASSERT_TRUE(y.is_cuda());
    EXPECT_LT(ScaledError(y, y_want), 2e-6) << Name(dt);
  }
}

TEST_F(CudaOpsTest, BuildRotationMatchesReference) {
  const int64_t rows = 3;
  for (auto dt : {torch::kFloat32, torch::kFloat64}) {
    const bool fp64 = dt == torch::kFloat64;
    const double fwd_tol = fp64 ? 1e-12 : 1e-5;
    const double grad_tol = fp64 ? 1e-10 : 1e-4;
    // 3, 24 and 100 exercise partial warps / partial register tiles; fp64 above 64 and
    // exact Cayley run the reference on the GPU (still compared).
    for (int64_t b : {2, 3, 4, 24, 32, 64, 100, 128}) {
      auto packed = RandomPacked(rows, b, 0.5, 100 + b).to(dt);
      torch::manual_seed(7 + b);
      auto w = torch::randn({rows, b, b}, torch::kFloat64).to(dt);
      for (int64_t k : {1, 2, 3, 5, 6, 9}) {
        SCOPED_TRACE("dtype=" + Name(dt) + " b=" + std::to_string(b) + " k=" + std::to_string(k));
        auto p_cpu = packed.clone().requires_grad_(true);
        auto p_gpu = packed.to(Gpu()).requires_grad_(true);
        auto r_cpu = BuildRotation(p_cpu, b, k, true);
        auto r_gpu = BuildRotation(p_gpu, b, k, true);
        ASSERT_TRUE(r_gpu.is_cuda());
        ASSERT_EQ(r_gpu.scalar_type(), dt);
        EXPECT_LT(ScaledError(r_gpu, r_cpu), fwd_tol);
        (r_cpu * w).sum().backward();
        (r_gpu * w.to(Gpu())).sum().backward();
        ASSERT_TRUE(p_gpu.grad().defined());
        EXPECT_LT(ScaledError(p_gpu.grad(), p_cpu.grad()), grad_tol);
      }
    }
  }
}

TEST_F(CudaOpsTest, BuildRotationFallbacksMatchReference) {
  struct Case {
    int64_t b, k;
    bool neumann;
    torch::ScalarType dt;
    double tol;
  };
  // Exact Cayley; a block larger than the kernel's 128; a dtype the kernel does not take.
  for (const Case c :
       {Case{8, 5, false, torch::kFloat32, 1e-5}, Case{160, 5, true, torch::kFloat32, 1e-5},
        Case{16, 5, true, torch::kBFloat16, 2e-2}}) {
    SCOPED_TRACE("b=" + std::to_string(c.b) + " neumann=" + std::to_string(c.neumann));
    auto packed = RandomPacked(2, c.b, 0.4, 5).to(c.dt);
    auto w = torch::randn({2, c.b, c.b}).to(c.dt);
    auto p_cpu = packed.clone().requires_grad_(true);
    auto p_gpu = packed.to(Gpu()).requires_grad_(true);
    auto r_cpu = BuildRotation(p_cpu, c.b, c.k, c.neumann);
    auto r_gpu = BuildRotation(p_gpu, c.b, c.k, c.neumann);
    EXPECT_LT(ScaledError(r_gpu, r_cpu), c.tol);
    (r_cpu * w).sum().backward();
    (r_gpu * w.to(Gpu())).sum().backward();
    EXPECT_LT(ScaledError(p_gpu.grad(), p_cpu.grad()), 10 * c.tol);
  }
}

// Directional derivative of L(v) = f(v) along dir by central differences.
template <typename Fn>
double CentralDifference(Fn f, const torch::Tensor& v, const torch::Tensor& dir, double h) {
  return (f(v + h * dir) - f(v - h * dir)) / (2 * h);
}

TEST_F(CudaOpsTest, Fp64GradientsMatchFiniteDifferencesOnGpu) {
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(Gpu());
  for (int64_t b : {4, 32, 64}) {
    for (bool shared : {false, true}) {
      SCOPED_TRACE("b=" + std::to_string(b) + " shared=" + std::to_string(shared));
      const int64_t r = 3, d = r * b, t = 7, rows = shared ? 1 : r, k = 5;
      auto packed = RandomPacked(rows, b, 0.4, 31 + b).to(Gpu());
      torch::manual_seed(41 + b);
      auto x = torch::randn({t, d}, torch::kFloat64).to(Gpu());
      auto w = torch::randn({t, d}, torch::kFloat64).to(Gpu());
      auto loss = [&](const torch::Tensor& xv, const torch::Tensor& pv) {
        return (BlockRotate(xv, BuildRotation(pv, b, k, true)) * w).sum().item<double>();
      };
      auto xg = x.clone().requires_grad_(true);
      auto pg = packed.clone().requires_grad_(true);
      (BlockRotate(xg, BuildRotation(pg, b, k, true)) * w).sum().backward();
      for (int trial = 0; trial < 3; ++trial) {
        auto dx = torch::randn({t, d}, f64);
        auto dp = torch::randn(packed.sizes(), f64);
        const double nx =
            CentralDifference([&](const torch::Tensor& v) { return loss(v, packed); }, x, dx, 1e-6);
        const double np =
            CentralDifference([&](const torch::Tensor& v) { return loss(x, v); }, packed, dp, 1e-6);
        const double ax = (xg.grad() * dx).sum().item<double>();
        const double ap = (pg.grad() * dp).sum().item<double>();
        EXPECT_NEAR(ax, nx, 1e-5 * std::max(1.0, std::abs(nx)));
        EXPECT_NEAR(ap, np, 1e-5 * std::max(1.0, std::abs(np)));
      }
    }
  }
}

struct RotateTol {
  double y, gr;
};

RotateTol TolFor(torch::ScalarType dt) {
  if (dt == torch::kBFloat16) return {2e-2, 1e-3};
  if (dt == torch::kHalf) return {4e-3, 1e-3};
  return {2e-5, 2e-5};  // fp32
}

// y, grad_x, grad_R of L = sum(float(BlockRotate(x, R)) * w) on `device`.
struct RotateResult {
  torch::Tensor y, gx, gr;
};

RotateResult RunBlockRotate(const torch::Tensor& x, const torch::Tensor& rotation,
                            const torch::Tensor& w, torch::Device device, bool need_x = true,
                            bool need_r = true) {
  // detach() first: on the CPU, to() returns its input, which must stay a plain tensor.
  auto xd = x.detach().to(device).requires_grad_(need_x);
  auto rd = rotation.detach().to(device).requires_grad_(need_r);
  auto y = BlockRotate(xd, rd);
  (y.to(torch::kFloat32) * w.to(device)).sum().backward();
  return {y.detach(), need_x ? xd.grad() : torch::Tensor(), need_r ? rd.grad() : torch::Tensor()};
}

TEST_F(CudaOpsTest, BlockRotateMatchesReference) {
  for (auto dt : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
    const RotateTol tol = TolFor(dt);
    for (int64_t b : {2, 4, 32, 64, 128}) {
      for (bool shared : {false, true}) {
        for (int64_t t : {1, 7, 33}) {
          SCOPED_TRACE("dtype=" + Name(dt) + " b=" + std::to_string(b) +
                       " shared=" + std::to_string(shared) + " T=" + std::to_string(t));
          const int64_t r = 3, d = r * b, rows = shared ? 1 : r;
          // fp32 rotation as in training, built on the CPU.
          auto rotation =
              BuildRotation(RandomPacked(rows, b, 0.5, 3 + b).to(torch::kFloat32), b, 5, true);
          torch::manual_seed(17 * b + t);
          auto x = torch::randn({t, d}).to(dt);
          auto w = torch::randn({t, d});
          auto want = RunBlockRotate(x, rotation, w, torch::kCPU);
          auto got = RunBlockRotate(x, rotation, w, Gpu());
          ASSERT_TRUE(got.y.is_cuda());
          EXPECT_EQ(got.y.scalar_type(), dt);
          EXPECT_EQ(got.gx.scalar_type(), dt);
          EXPECT_EQ(got.gr.scalar_type(), torch::kFloat32);
          EXPECT_EQ(got.gr.sizes(), rotation.sizes());
          EXPECT_LT(ScaledError(got.y, want.y), tol.y);
          EXPECT_LT(ScaledError(got.gx, want.gx), tol.y);
          EXPECT_LT(ScaledError(got.gr, want.gr), tol.gr);
        }
      }
    }
  }
}

TEST_F(CudaOpsTest, BlockRotateSingleGradientsBatchedInputAndStridedInput) {
  const int64_t b = 32, r = 4, d = r * b;
  auto rotation = BuildRotation(RandomPacked(r, b, 0.5, 9).to(torch::kFloat32), b, 5, true);
  torch::manual_seed(10);
  // [2, 5, d] activations: the op flattens the leading dims.
  auto x = torch::randn({2, 5, d}).to(torch::kBFloat16);
  auto w = torch::randn({2, 5, d});
  for (auto [need_x, need_r] : {std::pair{true, false}, std::pair{false, true}}) {
    auto want = RunBlockRotate(x, rotation, w, torch::kCPU, need_x, need_r);
    auto got = RunBlockRotate(x, rotation, w, Gpu(), need_x, need_r);
    EXPECT_EQ(got.y.sizes(), x.sizes());
    EXPECT_LT(ScaledError(got.y, want.y), 2e-2);
    EXPECT_EQ(got.gx.defined(), need_x);
    EXPECT_EQ(got.gr.defined(), need_r);
    if (need_x) {
      EXPECT_LT(ScaledError(got.gx, want.gx), 2e-2);
    }
    if (need_r) {
      EXPECT_LT(ScaledError(got.gr, want.gr), 1e-3);
    }
  }
  // A non-contiguous column slice of a wider tensor.
  auto wide = torch::randn({9, d + 5}, torch::TensorOptions().device(Gpu()));
  auto slice = wide.narrow(1, 3, d);
  ASSERT_FALSE(slice.is_contiguous());
  EXPECT_LT(ScaledError(BlockRotate(slice, rotation.to(Gpu())), BlockRotate(slice.cpu(), rotation)),
            2e-5);
  // No tokens.
  auto empty =
      BlockRotate(torch::zeros({0, d}, torch::TensorOptions().device(Gpu())), rotation.to(Gpu()));
  EXPECT_EQ(empty.sizes(), (std::vector<int64_t>{0, d}));
}

TEST_F(CudaOpsTest, BlockRotateFp64AndEndToEndChain) {
  // fp64 activations through cuBLAS (CUBLAS_COMPUTE_64F), and the full packed -> R -> y chain
  // in fp32 with bf16 activations, compared to the CPU.
  for (bool shared : {false, true}) {
    const int64_t b = 64, r = 2, d = r * b, rows = shared ? 1 : r;
    auto packed = RandomPacked(rows, b, 0.5, 77);
    torch::manual_seed(78);
    auto x = torch::randn({11, d}, torch::kFloat64);
    auto w = torch::randn({11, d}, torch::kFloat64);
    auto rotation = BuildRotation(packed, b, 5, true);
    auto want = RunBlockRotate(x, rotation, w, torch::kCPU);
    auto got = RunBlockRotate(x, rotation, w, Gpu());
    EXPECT_EQ(got.y.scalar_type(), torch::kFloat64);
    // dL/dy is w rounded to fp32 (RunBlockRotate's loss) on both sides.
    EXPECT_LT(ScaledError(got.y, want.y), 1e-12);
    EXPECT_LT(ScaledError(got.gx, want.gx), 1e-12);
    EXPECT_LT(ScaledError(got.gr, want.gr), 1e-12);

    auto p32 = packed.to(torch::kFloat32);
    auto xb = x.to(torch::kBFloat16);
    auto chain = [&](torch::Device dev) {
      auto p = p32.detach().to(dev).requires_grad_(true);
      auto y = BlockRotate(xb.to(dev), BuildRotation(p, b, 5, true));
      (y.to(torch::kFloat32) * w.to(dev, torch::kFloat32)).sum().backward();
      return std::pair{y.detach(), p.grad()};
    };
    auto [y_cpu, g_cpu] = chain(torch::kCPU);
    auto [y_gpu, g_gpu] = chain(Gpu());
    EXPECT_LT(ScaledError(y_gpu, y_cpu), 2e-2);
    EXPECT_LT(ScaledError(g_gpu, g_cpu), 1e-3);
  }
}

}  // namespace
}  // namespace oft
