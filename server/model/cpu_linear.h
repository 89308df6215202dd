// Frozen-weight Linear layers on the CPU (fp32) through the faster of LibTorch's two GEMM
// libraries: MKL (what at::linear calls) or oneDNN (LibTorch's mkldnn::_linear_pointwise).
//
// Which one: OFT_CPU_GEMM=mkl|onednn forces it; otherwise oneDNN on AMD CPUs and MKL
// elsewhere. The rule is static, not timed, so every process on a machine computes the same
// bits (exact resume, reproducible jobs). Why AMD: there MKL runs its AVX2 "zen" kernels even
// on AVX-512 parts, and oneDNN measured 1.06-1.22x faster on every training shape of the
// default model (docs/benchmarks.md, "Frozen GEMMs"). On Intel, MKL is tuned for the part;
// we have not measured oneDNN there, so MKL stays the default.
//
// CpuLinear(x, w, b) = x w^T + b, differentiable in x only: backward is dx = dy w through the
// same library. The model uses it only in CausalLmLoss's passes (training and evaluation
// loss; AdaptedLinear::Forward's loss_pass) and where CpuLinearApplies: w (and b) frozen,
// fp32 CPU tensors, at least kCpuLinearMinRows rows, no CPU autocast. Inference (serving,
// generation) keeps PackedLinear / at::linear, whose rounding the serving tests pin.
#ifndef OFT_SERVER_MODEL_CPU_LINEAR_H_
#define OFT_SERVER_MODEL_CPU_LINEAR_H_

#include <cstdint>

#include "ATen/core/Tensor.h"

namespace oft {

enum class CpuGemm { kMkl, kOneDnn };

// The library frozen CPU Linears use in this process (the rule above; read once). Throws
// c10::Error naming the value when OFT_CPU_GEMM is set to anything but mkl or onednn.
CpuGemm ActiveCpuGemm();
const char* CpuGemmName(CpuGemm g);

constexpr int64_t kCpuLinearMinRows = 32;

// Whether CpuLinear takes (x [..., K], w [N, K], b [N] or undefined) and would not just be
// at::linear: oneDNN active and its op present, fp32 CPU tensors, no gradient wanted for w
// or b, at least kCpuLinearMinRows rows, CPU autocast off.
bool CpuLinearApplies(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

// x w^T + b ([..., N]); records autograd for x when x requires grad.
at::Tensor CpuLinear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

// a [M, K] times w [N, K] transposed (a w^T, [M, N]) through the active library, no
// autograd: the head's GEMMs of LinearCrossEntropy.
at::Tensor CpuGemmNT(const at::Tensor& a, const at::Tensor& w);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_CPU_LINEAR_H_
