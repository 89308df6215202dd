// NF4 quantization (vectorised ATen, any device), the `oft::nf4_dequantize` operator: its
// composite path (plain ATen, any device), its CPU kernel, and one dispatch function for the
// CPU and CUDA keys that follows the kernel switch (server/oft/kernel_registry.h).
#include "server/quant/nf4.h"

#include <cmath>
#include <utility>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "ATen/core/dispatch/Dispatcher.h"
#include "absl/strings/str_cat.h"
#include "server/common/torch_boundary.h"
#include "server/oft/kernel_registry.h"
#include "server/quant/nf4_internal.h"
#include "torch/library.h"

namespace oft {
namespace {

constexpr int64_t kMaxBlockSize = 4096;
constexpr int64_t kGroup = kNf4DoubleQuantGroupSize;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

const auto& Nf4DequantizeOp() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("oft::nf4_dequantize", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            double, int64_t, int64_t, at::ScalarType)>();
  return op;
}

// The decoded fp32 absmax of block k. fma keeps CPU and CUDA bit-identical (nvcc would
// contract a separate multiply and add).
inline float DecodeAbsmax(int8_t q, float scale, float offset) {
  return std::fma(static_cast<float>(q), scale, offset);
}

// The reference decoder: for every element i of block k,
//   out[i] = kNf4Codebook[nibble i] * absmax[k]   (fp32 multiply, then one cast to T).
template <typename T>
void DequantizeBlocks(const uint8_t* codes, const float* absmax, int64_t numel,
                      int64_t block_size, T* out) {
  const int64_t num_blocks = CeilDiv(numel, block_size);
  at::parallel_for(0, num_blocks, /*grain_size=*/64, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      const float scale = absmax[k];
      const int64_t end = std::min(numel, (k + 1) * block_size);
      for (int64_t i = k * block_size; i < end; ++i) {
        const uint8_t byte = codes[i / 2];
        const uint8_t code = (i % 2 == 0) ? (byte >> 4) : (byte & 0x0F);  // first = high
        out[i] = static_cast<T>(kNf4Codebook[code] * scale);
      }
    }
  });
}

// CPU kernel of oft::nf4_dequantize.
at::Tensor Nf4DequantizeCpu(const at::Tensor& codes, const at::Tensor& absmax,
                            const std::optional<at::Tensor>& absmax_scale, double absmax_offset,
                            int64_t numel, int64_t block_size, at::ScalarType dtype) {
  const int64_t num_blocks =
      internal::CheckNf4DequantizeArgs(codes, absmax, absmax_scale, numel, block_size, dtype);
  TORCH_CHECK(codes.device().is_cpu(), "nf4_dequantize (CPU): codes must be on the CPU");
  at::Tensor scales = absmax.contiguous();
  if (absmax_scale.has_value()) {
    // Double quantization: decode the int8 absmax first.
    at::Tensor decoded = at::empty({num_blocks}, absmax.options().dtype(at::kFloat));
    const int8_t* q = scales.const_data_ptr<int8_t>();
    const float* group_scale = absmax_scale->const_data_ptr<float>();
    float* d = decoded.mutable_data_ptr<float>();
    const auto offset = static_cast<float>(absmax_offset);
    for (int64_t k = 0; k < num_blocks; ++k) d[k] = DecodeAbsmax(q[k], group_scale[k / kGroup], offset);
    scales = decoded;
  }
  at::Tensor out = at::empty({numel}, codes.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "nf4_dequantize_cpu", [&] {
    DequantizeBlocks<scalar_t>(codes.const_data_ptr<uint8_t>(), scales.const_data_ptr<float>(),
                               numel, block_size, out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

// The composite path of oft::nf4_dequantize: the same decoding in plain ATen ops on the
// codes' device. The decoded absmax with double quantization is q * scale + offset in two
// fp32 roundings (the kernels use one fma), so it may differ from them by an ulp.
at::Tensor Nf4DequantizeComposite(const at::Tensor& codes, const at::Tensor& absmax,
                                  const std::optional<at::Tensor>& absmax_scale,
                                  double absmax_offset, int64_t numel, int64_t block_size,
                                  at::ScalarType dtype) {
  const int64_t num_blocks =
      internal::CheckNf4DequantizeArgs(codes, absmax, absmax_scale, numel, block_size, dtype);
  const auto long_options = codes.options().dtype(at::kLong);
  at::Tensor scales = absmax;  // [num_blocks] fp32
  if (absmax_scale.has_value()) {
    const at::Tensor group = at::floor_divide(at::arange(num_blocks, long_options), kGroup);
    scales = absmax.to(at::kFloat) * absmax_scale->index_select(0, group) +
             static_cast<float>(absmax_offset);
  }
  const at::Tensor c = codes.to(at::kLong);                             // [num_blocks * bs / 2]
  const at::Tensor nibbles =
      at::stack({at::floor_divide(c, 16), at::remainder(c, 16)}, 1).view({-1});  // high first
  const at::Tensor codebook =
      at::tensor(at::ArrayRef<float>(kNf4Codebook, 16), at::kFloat)
          .to(codes.device());
  const at::Tensor values =
      codebook.index_select(0, nibbles).view({num_blocks, block_size}) * scales.unsqueeze(1);
  // fp64: decoded in fp32 like the kernels (every value is an fp32 product), then widened.
  return values.view({-1}).narrow(0, 0, numel).to(dtype);
}

// oft::nf4_dequantize for the CPU and CUDA keys: the kernel the switch selects.
at::Tensor Nf4DequantizeDispatch(const at::Tensor& codes, const at::Tensor& absmax,
                                 const std::optional<at::Tensor>& absmax_scale,
                                 double absmax_offset, int64_t numel, int64_t block_size,
                                 at::ScalarType dtype) {
  return SelectKernel<Nf4DequantizeFn>(KernelId::kNf4Dequantize, codes.device())(
      codes, absmax, absmax_scale, absmax_offset, numel, block_size, dtype);
}

[[maybe_unused]] const bool kNf4KernelsRegistered = [] {
  RegisterCompositeKernel(KernelId::kNf4Dequantize,
                          EraseKernel<Nf4DequantizeFn>(&Nf4DequantizeComposite));
  RegisterOptimizedKernel(KernelId::kNf4Dequantize, c10::DeviceType::CPU,
                          EraseKernel<Nf4DequantizeFn>(&Nf4DequantizeCpu));
  return true;
}();

absl::Status CheckWeight(const at::Tensor& weight, const Nf4Options& options) {
  if (!weight.defined() || weight.numel() == 0) {
    return absl::InvalidArgumentError("Quantize: weight must be a non-empty tensor");
  }
  const auto dt = weight.scalar_type();
  if (dt != at::kFloat && dt != at::kBFloat16 && dt != at::kHalf && dt != at::kDouble) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Quantize: weight dtype must be float32, bfloat16, float16 or float64, got ",
        c10::toString(dt)));
  }
  if (options.block_size < 2 || options.block_size > kMaxBlockSize || options.block_size % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Nf4Options.block_size must be even and in [2, ", kMaxBlockSize, "], got ",
        options.block_size));
  }
  return absl::OkStatus();
}

// Pads a 1-D tensor with zeros to `size` elements.
at::Tensor PadTo(const at::Tensor& flat, int64_t size) {
  const int64_t missing = size - flat.numel();
  return missing == 0 ? flat : at::constant_pad_nd(flat, {0, missing}, 0);
}

}  // namespace

namespace internal {

const std::array<float, 15>& Nf4Midpoints() {
  static const std::array<float, 15> mids = [] {
    std::array<float, 15> m{};
    for (int i = 0; i < 15; ++i) {
      m[i] = static_cast<float>(
          (static_cast<double>(kNf4Codebook[i]) + static_cast<double>(kNf4Codebook[i + 1])) / 2.0);
    }
    return m;
  }();
  return mids;
}

uint8_t Nf4Code(float normalized) {
  uint8_t code = 0;
  for (float mid : Nf4Midpoints()) code += normalized > mid ? 1 : 0;
  return code;
}

int64_t CheckNf4DequantizeArgs(const at::Tensor& codes, const at::Tensor& absmax,
                               const std::optional<at::Tensor>& absmax_scale, int64_t numel,
                               int64_t block_size, at::ScalarType dtype) {
  TORCH_CHECK(numel > 0, "nf4_dequantize: numel must be > 0, got ", numel);
  TORCH_CHECK(block_size > 0 && block_size % 2 == 0,
              "nf4_dequantize: block_size must be even and > 0, got ", block_size);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf ||
                  dtype == at::kDouble,
              "nf4_dequantize: dtype must be float32, bfloat16, float16 or float64, got ", dtype);
  const int64_t num_blocks = CeilDiv(numel, block_size);
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.dim() == 1 && codes.is_contiguous() &&
                  codes.numel() == num_blocks * block_size / 2,
              "nf4_dequantize: codes must be contiguous uint8 [", num_blocks * block_size / 2,
              "], got ", codes.scalar_type(), " ", codes.sizes());
  TORCH_CHECK(absmax.dim() == 1 && absmax.numel() == num_blocks && absmax.is_contiguous(),
              "nf4_dequantize: absmax must be contiguous [", num_blocks, "], got ", absmax.sizes());
  TORCH_CHECK(absmax.device() == codes.device(),
              "nf4_dequantize: absmax must be on the device of codes");
  if (absmax_scale.has_value()) {
    TORCH_CHECK(absmax.scalar_type() == at::kChar,
                "nf4_dequantize: with double quantization absmax must be int8, got ",
                absmax.scalar_type());
    const int64_t groups = CeilDiv(num_blocks, kGroup);
    TORCH_CHECK(absmax_scale->scalar_type() == at::kFloat && absmax_scale->dim() == 1 &&
                    absmax_scale->numel() == groups && absmax_scale->is_contiguous(),
                "nf4_dequantize: absmax_scale must be contiguous float32 [", groups, "], got ",
                absmax_scale->scalar_type(), " ", absmax_scale->sizes());
    TORCH_CHECK(absmax_scale->device() == codes.device(),
                "nf4_dequantize: absmax_scale must be on the device of codes");
  } else {
    TORCH_CHECK(absmax.scalar_type() == at::kFloat,
                "nf4_dequantize: absmax must be float32, got ", absmax.scalar_type());
  }
  return num_blocks;
}

}  // namespace internal

int64_t Nf4Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

int64_t Nf4Tensor::num_blocks() const { return CeilDiv(numel(), block_size); }

int64_t Nf4Tensor::StorageBytes() const {
  int64_t bytes = static_cast<int64_t>(codes.nbytes()) + static_cast<int64_t>(absmax.nbytes());
  if (double_quant) {
    bytes += static_cast<int64_t>(absmax_scale.nbytes()) + static_cast<int64_t>(sizeof(float));
  }
  return bytes;
}

Nf4Tensor Nf4Tensor::To(const at::Device& device) const {
  Nf4Tensor out = *this;
  out.codes = codes.to(device);
  out.absmax = absmax.to(device);
  if (absmax_scale.defined()) out.absmax_scale = absmax_scale.to(device);
  return out;
}

bool Nf4CudaKernelBuilt() {
#ifdef OFT_WITH_CUDA
  return internal::Nf4CudaLinked();
#else
  return false;
#endif
}

absl::StatusOr<Nf4Tensor> Quantize(const at::Tensor& weight, const Nf4Options& options) {
  if (absl::Status s = CheckWeight(weight, options); !s.ok()) return s;
  return TorchCall("Quantize", [&]() -> absl::StatusOr<Nf4Tensor> {
    at::NoGradGuard no_grad;
    const at::Tensor flat = weight.detach().reshape({-1}).to(at::kFloat);
    if (!at::isfinite(flat).all().item<bool>()) {
      return absl::InvalidArgumentError("Quantize: weight has NaN or Inf values");
    }
    const int64_t numel = flat.numel();
    const int64_t bs = options.block_size;
    const int64_t num_blocks = CeilDiv(numel, bs);
    // Zero padding changes no absmax and encodes as code 7 (level 0.0).
    const at::Tensor blocks = PadTo(flat, num_blocks * bs).view({num_blocks, bs});
    const at::Tensor absmax = blocks.abs().amax({1});  // [num_blocks] fp32
    // Multiply by the fp32 reciprocal like bitsandbytes; all-zero blocks normalise to 0.
    const at::Tensor inv = at::where(absmax > 0, absmax.reciprocal(), at::zeros_like(absmax));
    const at::Tensor normalized = blocks * inv.unsqueeze(1);
    const auto& mids = internal::Nf4Midpoints();
    const at::Tensor boundaries =
        at::tensor(at::ArrayRef<float>(mids.data(), mids.size()), at::kFloat).to(flat.device());
    // bucketize(right=false) = number of boundaries strictly below the value: ties go to
    // the lower level, matching internal::Nf4Code.
    const at::Tensor code = at::bucketize(normalized, boundaries, /*out_int32=*/true,
                                          /*right=*/false)
                                .view({-1, 2});
    Nf4Tensor q;
    q.codes = (code.select(1, 0) * 16 + code.select(1, 1)).to(at::kByte).contiguous();
    q.shape = weight.sizes().vec();
    q.dtype = weight.scalar_type();
    q.block_size = bs;
    q.double_quant = options.double_quant;
    if (!options.double_quant) {
      q.absmax = absmax.contiguous();
      return q;
    }
    // Double quantization: symmetric linear int8 of (absmax - mean) per 256-group.
    const float offset = absmax.mean().item<float>();
    const int64_t groups = CeilDiv(num_blocks, kGroup);
    const at::Tensor centered = PadTo(absmax - offset, groups * kGroup).view({groups, kGroup});
    const at::Tensor scale = centered.abs().amax({1}) / 127.0f;  // [groups] fp32
    const at::Tensor safe_scale = at::where(scale > 0, scale, at::ones_like(scale));
    q.absmax = at::round(centered / safe_scale.unsqueeze(1))
                   .clamp(-127, 127)
                   .to(at::kChar)
                   .view({-1})
                   .narrow(0, 0, num_blocks)
                   .contiguous();
    q.absmax_scale = scale.contiguous();
    q.absmax_offset = offset;
    return q;
  });
}

at::Tensor Dequantize(const Nf4Tensor& q, std::optional<at::ScalarType> dtype) {
  const at::Tensor flat = Nf4DequantizeOp().call(
      q.codes, q.absmax,
      q.double_quant ? std::optional<at::Tensor>(q.absmax_scale) : std::nullopt,
      static_cast<double>(q.absmax_offset), q.numel(), q.block_size, dtype.value_or(q.dtype));
  return flat.view(q.shape);
}

at::Tensor DequantizeAbsmax(const Nf4Tensor& q) {
  if (!q.double_quant) return q.absmax;
  TORCH_CHECK(q.absmax.scalar_type() == at::kChar && q.absmax_scale.defined(),
              "DequantizeAbsmax: double-quantized absmax must be int8 with a scale");
  const at::Tensor codes = q.absmax.cpu().contiguous();
  const at::Tensor scale = q.absmax_scale.cpu().contiguous().to(at::kFloat);
  at::Tensor out = at::empty({codes.numel()}, codes.options().dtype(at::kFloat));
  const int8_t* c = codes.const_data_ptr<int8_t>();
  const float* s = scale.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  for (int64_t k = 0; k < codes.numel(); ++k) o[k] = DecodeAbsmax(c[k], s[k / kGroup], q.absmax_offset);
  return out.to(q.absmax.device());
}

}  // namespace oft

TORCH_LIBRARY_FRAGMENT(oft, m) {
  m.def("nf4_dequantize(Tensor codes, Tensor absmax, Tensor? absmax_scale, float absmax_offset,"
        " int numel, int block_size, ScalarType dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(oft, CPU, m) { m.impl("nf4_dequantize", &oft::Nf4DequantizeDispatch); }
// Without the CUDA kernel in the binary, CUDA tensors take the composite path.
TORCH_LIBRARY_IMPL(oft, CUDA, m) { m.impl("nf4_dequantize", &oft::Nf4DequantizeDispatch); }
