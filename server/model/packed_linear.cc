#include "server/model/packed_linear.h"

#include <cstddef>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "c10/core/GradMode.h"
#include "server/model/llama.h"

// MKL's packed GEMM (LP64 interface), declared here because the LibTorch wheel ships no MKL
// headers. Weak: a LibTorch built without MKL leaves them null and Available() false.
extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc)
    __attribute__((weak));
}

namespace oft {
namespace {

// CBLAS enum values (mkl_cblas.h).
constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;
constexpr int kBMatrix = 162;
constexpr int kPacked = 151;

}  // namespace

bool PackedLinear::Available() {
  return cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr &&
         cblas_sgemm_compute != nullptr;
}

absl::StatusOr<std::unique_ptr<PackedLinear>> PackedLinear::Create(const at::Tensor& weight,
                                                                   const at::Tensor& bias,
                                                                   int64_t max_rows) {
  if (!Available()) {
    return absl::FailedPreconditionError("MKL packed GEMM (cblas_sgemm_pack) is not in this LibTorch");
  }
  if (!weight.defined() || weight.dim() != 2 || weight.scalar_type() != at::kFloat ||
      !weight.device().is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PackedLinear weight must be a 2-D float32 CPU tensor, got ",
        weight.defined() ? c10::str(weight.sizes(), " ", weight.scalar_type(), " on ", weight.device())
                         : std::string("an undefined tensor")));
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0) ||
                         bias.scalar_type() != at::kFloat || !bias.device().is_cpu())) {
    return absl::InvalidArgumentError(absl::StrCat("PackedLinear bias must be float32 CPU [",
                                                   weight.size(0), "], got ", c10::str(bias.sizes())));
  }
  constexpr int64_t kMaxDim = int64_t{1} << 30;  // LP64 interface: int dimensions
  if (max_rows < 1 || max_rows > kMaxDim || weight.size(0) > kMaxDim || weight.size(1) > kMaxDim) {
    return absl::InvalidArgumentError(absl::StrCat("PackedLinear max_rows must be in [1, 2^30], got ",
                                                   max_rows, " (weight ", c10::str(weight.sizes()), ")"));
  }
  std::unique_ptr<PackedLinear> p(new PackedLinear());
  p->out_ = weight.size(0);
  p->in_ = weight.size(1);
  p->max_rows_ = max_rows;
  const int m = static_cast<int>(max_rows), n = static_cast<int>(p->out_), k = static_cast<int>(p->in_);
  const size_t size = cblas_sgemm_pack_get_size(kBMatrix, m, n, k);
  // Torch's CPU allocator aligns to 64 bytes, as MKL wants for packed buffers.
  p->packed_ = at::empty({static_cast<int64_t>(size)}, at::TensorOptions().dtype(at::kByte));
  const at::Tensor w = weight.contiguous();
  // B = W^T: W is [n, k] row-major, i.e. op(B) with trans.
  cblas_sgemm_pack(kRowMajor, kBMatrix, kTrans, m, n, k, 1.0f, w.data_ptr<float>(), k,
                   reinterpret_cast<float*>(p->packed_.data_ptr<uint8_t>()));
  if (bias.defined()) p->bias_ = bias.detach().clone().contiguous();
  return p;
}

bool PackedLinear::Handles(const at::Tensor& x) const {
  if (x.scalar_type() != at::kFloat || !x.device().is_cpu() || x.dim() < 1 ||
      x.size(-1) != in_) {
    return false;
  }
  if (x.requires_grad() && c10::GradMode::is_enabled()) return false;
  const int64_t rows = x.numel() / in_;
  return rows >= 1 && rows <= max_rows_;
}

at::Tensor PackedLinear::Forward(const at::Tensor& x) const {
  TORCH_CHECK(Handles(x), "PackedLinear::Forward: input ", x.sizes(), " ", x.scalar_type(),
              " is not fp32 CPU [<= ", max_rows_, " rows, ", in_, "]");
  const at::Tensor a = x.reshape({-1, in_}).contiguous();
  const int m = static_cast<int>(a.size(0));
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out_;
  at::Tensor y = at::empty({m, out_}, a.options());
  float beta = 0.0f;
  if (bias_.defined()) {
    y.copy_(bias_.expand({m, out_}));  // a fresh buffer: the GEMM accumulates into it
    beta = 1.0f;
  }
  cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m, static_cast<int>(out_), static_cast<int>(in_),
                      a.data_ptr<float>(), static_cast<int>(in_),
                      reinterpret_cast<const float*>(packed_.data_ptr<uint8_t>()),
                      static_cast<int>(out_), beta, y.data_ptr<float>(), static_cast<int>(out_));
  return y.view(out_shape);
}

int64_t PackedLinear::bytes() const {
  int64_t n = packed_.numel();
  if (bias_.defined()) n += bias_.numel() * static_cast<int64_t>(sizeof(float));
  return n;
}

absl::StatusOr<int64_t> PackLinearsForDecode(LlamaModel& model, int64_t max_rows) {
  if (!model.device().is_cpu() || model.dtype() != at::kFloat) return 0;
  std::vector<std::pair<AdaptedLinear*, std::shared_ptr<const PackedLinear>>> made;
  int64_t bytes = 0;
  for (const std::string& name : model.LinearNames()) {
    AdaptedLinear* lin = model.Linear(name);
    if (lin == nullptr || lin->quantized()) continue;
    absl::StatusOr<std::unique_ptr<PackedLinear>> p = PackedLinear::Create(lin->weight(), lin->bias(), max_rows);
    if (!p.ok()) return absl::Status(p.status().code(), absl::StrCat(name, ": ", p.status().message()));
    bytes += (*p)->bytes();
    made.emplace_back(lin, std::shared_ptr<const PackedLinear>(std::move(*p)));
  }
  for (auto& [lin, p] : made) lin->set_packed(std::move(p));
  return bytes;
}

}  // namespace oft
