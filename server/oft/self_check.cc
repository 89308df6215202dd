#include "server/oft/self_check.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <utility>

#include "ATen/ATen.h"
#include "ATen/CPUGeneratorImpl.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "c10/core/GradMode.h"
#include "c10/util/Exception.h"
#include "server/common/status_macros.h"
#include "server/oft/kernel_registry.h"
#include "server/oft/ops_reference.h"

namespace oft {
namespace {

// Tolerances: max |optimized - composite| <= atol + rtol * max |composite| over a case.
// fp32 kernels differ from the composite path only in summation order (~1e-6 relative at
// these sizes). bf16/fp16 outputs are rounded to 8/11 bits, and the CUDA block rotation
// also rounds the rotation to the activation dtype, so a correct kernel can be a few ulps
// off; a wrong index, transpose or block is off by O(1).
struct Tolerance {
  double rtol;
  double atol;
};
Tolerance TolFor(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16:
      return {3e-2, 1e-2};
    case at::kHalf:
      return {4e-3, 2e-3};
    default:
      return {1e-4, 1e-5};
  }
}
// NF4 decoding is one fp32 multiply and one cast: only the double-quant absmax (fma versus
// multiply-add) can move a value by an ulp, which a bf16/fp16 cast can widen to one ulp of
// the output dtype.
Tolerance Nf4TolFor(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16:
      return {8e-3, 0};
    case at::kHalf:
      return {1e-3, 0};
    default:
      return {1e-6, 0};
  }
}

std::string DtypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    case at::kDouble:
      return "float64";
    default:
      return std::string(c10::toString(t));
  }
}

// One comparison's verdict.
struct Verdict {
  bool ok = true;
  double max_error = 0;
  double tolerance = 0;
  std::string why;
};

Verdict Compare(const std::string& what, const at::Tensor& got, const at::Tensor& want,
                Tolerance tol) {
  Verdict v;
  if (!got.defined()) {
    v.ok = false;
    v.why = absl::StrCat(what, ": no result");
    return v;
  }
  if (got.sizes() != want.sizes() || got.scalar_type() != want.scalar_type()) {
    v.ok = false;
    v.why = absl::StrCat(what, ": got ", DtypeName(got.scalar_type()), " ",
                         c10::str(got.sizes()), ", expected ", DtypeName(want.scalar_type()), " ",
                         c10::str(want.sizes()));
    return v;
  }
  // The copy to the CPU synchronises: an asynchronous launch error surfaces here.
  const at::Tensor g = got.to(at::kCPU, at::kDouble);
  const at::Tensor w = want.to(at::kCPU, at::kDouble);
  if (!at::isfinite(g).all().item<bool>()) {
    v.ok = false;
    v.why = absl::StrCat(what, ": non-finite values");
    return v;
  }
  v.max_error = g.numel() == 0 ? 0.0 : (g - w).abs().max().item<double>();
  const double scale = w.numel() == 0 ? 0.0 : w.abs().max().item<double>();
  v.tolerance = tol.atol + tol.rtol * scale;
  if (!(v.max_error <= v.tolerance)) {
    v.ok = false;
    v.why = absl::StrCat(what, ": max error ", v.max_error, " > tolerance ", v.tolerance);
  }
  return v;
}

// Inputs come from a private CPU generator (the process's RNG streams are not touched),
// drawn in fp32 on the CPU and moved to the device.
class Inputs {
 public:
  Inputs(uint64_t seed, c10::Device device)
      : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)), device_(device) {}

  at::Tensor Randn(at::IntArrayRef sizes, at::ScalarType dtype, double scale = 1.0) {
    return (at::randn(sizes, gen_, at::TensorOptions().dtype(at::kFloat)) * scale)
        .to(device_, dtype);
  }
  // Integers in [low, high).
  at::Tensor Randint(int64_t low, int64_t high, at::IntArrayRef sizes, at::ScalarType dtype) {
    return at::randint(low, high, sizes, gen_, at::TensorOptions().dtype(at::kLong))
        .to(device_, dtype);
  }

 private:
  at::Generator gen_;
  c10::Device device_;
};

constexpr int64_t kNumTerms = 5;          // the default Cayley-Neumann order
constexpr int64_t kBlockSizes[] = {8, 32};  // below and at the CPU tiled kernel's sizes
constexpr int64_t kWidth = 128;
constexpr int64_t kTokens = 37;           // not a multiple of any tile

// One kernel in one dtype on one device: every case through the optimized kernel `fn`
// (type-erased) and the composite one. Returns the worst verdict.
using CaseRunner = std::function<Verdict(KernelFnPtr optimized, KernelFnPtr composite,
                                         Inputs& in, at::ScalarType dtype)>;

// `a` is the worst so far (tolerance 0: none yet).
Verdict Worst(Verdict a, const Verdict& b) {
  if (a.tolerance == 0 && a.ok) return b;
  if (!a.ok) return a;
  if (!b.ok) return b;
  if (b.max_error / std::max(b.tolerance, 1e-300) > a.max_error / std::max(a.tolerance, 1e-300)) {
    return b;
  }
  return a;
}

at::Tensor CompositeRotation(Inputs& in, int64_t rows, int64_t b) {
  const at::Tensor packed = in.Randn({rows, b * (b - 1) / 2}, at::kFloat, 0.05);
  return reference::BuildRotationForward(packed, b, kNumTerms, true);  // [rows, b, b]
}

Verdict CheckBuildRotation(KernelFnPtr opt, KernelFnPtr comp, Inputs& in, at::ScalarType dtype) {
  Verdict worst;
  for (int64_t b : kBlockSizes) {
    const at::Tensor packed = in.Randn({5, b * (b - 1) / 2}, dtype, 0.05);
    const at::Tensor got = reinterpret_cast<BuildRotationFn>(opt)(packed, b, kNumTerms, true);
    const at::Tensor want = reinterpret_cast<BuildRotationFn>(comp)(packed, b, kNumTerms, true);
    worst = Worst(worst, Compare(absl::StrCat("b=", b), got, want, TolFor(dtype)));
  }
  return worst;
}

Verdict CheckBuildRotationBackward(KernelFnPtr opt, KernelFnPtr comp, Inputs& in,
                                   at::ScalarType dtype) {
  Verdict worst;
  for (int64_t b : kBlockSizes) {
    const at::Tensor packed = in.Randn({5, b * (b - 1) / 2}, dtype, 0.05);
    const at::Tensor rotation = reference::BuildRotationForward(packed, b, kNumTerms, true);
    const at::Tensor grad = in.Randn({5, b, b}, dtype);
    const at::Tensor got = reinterpret_cast<BuildRotationBackwardFn>(opt)(grad, packed, rotation,
                                                                          b, kNumTerms, true);
    const at::Tensor want = reinterpret_cast<BuildRotationBackwardFn>(comp)(
        grad, packed, rotation, b, kNumTerms, true);
    worst = Worst(worst, Compare(absl::StrCat("b=", b), got, want, TolFor(dtype)));
  }
  return worst;
}

Verdict CheckBlockRotate(KernelFnPtr opt, KernelFnPtr comp, Inputs& in, at::ScalarType dtype) {
  Verdict worst;
  for (int64_t b : kBlockSizes) {
    for (int64_t rows : {kWidth / b, int64_t{1}}) {
      const at::Tensor x = in.Randn({kTokens, kWidth}, dtype);
      const at::Tensor rotation = CompositeRotation(in, rows, b);
      const at::Tensor got = reinterpret_cast<BlockRotateFn>(opt)(x, rotation);
      const at::Tensor want = reinterpret_cast<BlockRotateFn>(comp)(x, rotation);
      worst = Worst(worst, Compare(absl::StrCat("b=", b, " rows=", rows), got, want, TolFor(dtype)));
    }
  }
  return worst;
}

Verdict CheckBlockRotateBackward(KernelFnPtr opt, KernelFnPtr comp, Inputs& in,
                                 at::ScalarType dtype) {
  Verdict worst;
  for (int64_t b : kBlockSizes) {
    for (int64_t rows : {kWidth / b, int64_t{1}}) {
      const at::Tensor x = in.Randn({kTokens, kWidth}, dtype);
      const at::Tensor grad = in.Randn({kTokens, kWidth}, dtype);
      const at::Tensor rotation = CompositeRotation(in, rows, b);
      auto [gx, gr] = reinterpret_cast<BlockRotateBackwardFn>(opt)(grad, x, rotation, true, true);
      auto [wx, wr] = reinterpret_cast<BlockRotateBackwardFn>(comp)(grad, x, rotation, true, true);
      const std::string tag = absl::StrCat("b=", b, " rows=", rows);
      worst = Worst(worst, Compare(tag + " grad_x", gx, wx, TolFor(dtype)));
      worst = Worst(worst, Compare(tag + " grad_rotation", gr, wr, TolFor(dtype)));
    }
  }
  return worst;
}

Verdict CheckGatheredBlockRotate(KernelFnPtr opt, KernelFnPtr comp, Inputs& in,
                                 at::ScalarType dtype) {
  Verdict worst;
  constexpr int64_t kAdapters = 3, kRows = 23;
  for (int64_t b : kBlockSizes) {
    const at::Tensor x = in.Randn({kRows, kWidth}, dtype);
    const at::Tensor rotations =
        CompositeRotation(in, kAdapters * (kWidth / b), b).view({kAdapters, kWidth / b, b, b});
    const at::Tensor index = in.Randint(-1, kAdapters, {kRows}, at::kLong);  // -1: no adapter
    const auto opt_fn = reinterpret_cast<GatheredBlockRotateFn>(opt);
    const auto comp_fn = reinterpret_cast<GatheredBlockRotateFn>(comp);
    const at::Tensor got = opt_fn(x, rotations, index, false);
    const at::Tensor want = comp_fn(x, rotations, index, false);
    worst = Worst(worst, Compare(absl::StrCat("b=", b), got, want, TolFor(dtype)));
    // The served form (R - I in fp16), as the CPU engine uses it.
    const at::Tensor delta = (rotations - at::eye(b, rotations.options())).to(at::kHalf);
    worst = Worst(worst, Compare(absl::StrCat("b=", b, " delta"), opt_fn(x, delta, index, true),
                                 comp_fn(x, delta, index, true), TolFor(dtype)));
  }
  return worst;
}

Verdict CheckNf4Dequantize(KernelFnPtr opt, KernelFnPtr comp, Inputs& in, at::ScalarType dtype) {
  Verdict worst;
  constexpr int64_t kNumel = 1000, kBlock = 64, kNumBlocks = (kNumel + kBlock - 1) / kBlock;
  const at::Tensor codes = in.Randint(0, 256, {kNumBlocks * kBlock / 2}, at::kByte);
  for (bool double_quant : {false, true}) {
    at::Tensor absmax;
    std::optional<at::Tensor> scale;
    double offset = 0;
    if (double_quant) {
      absmax = in.Randint(-127, 128, {kNumBlocks}, at::kChar);
      scale = in.Randn({1}, at::kFloat).abs() * 0.01 + 1e-3;
      offset = 0.75;
    } else {
      absmax = in.Randn({kNumBlocks}, at::kFloat).abs() + 0.1;
    }
    const at::Tensor got = reinterpret_cast<Nf4DequantizeFn>(opt)(codes, absmax, scale, offset,
                                                                  kNumel, kBlock, dtype);
    const at::Tensor want = reinterpret_cast<Nf4DequantizeFn>(comp)(codes, absmax, scale, offset,
                                                                    kNumel, kBlock, dtype);
    worst = Worst(worst, Compare(double_quant ? "double_quant" : "plain", got, want,
                                 Nf4TolFor(dtype)));
  }
  return worst;
}

struct KernelCheck {
  KernelId kernel;
  std::vector<at::ScalarType> dtypes;  // the dtypes the service runs this kernel in
  CaseRunner run;
};

const std::vector<KernelCheck>& Checks() {
  // Rotation parameters (oft_r) are trained and kept in fp32; activations are fp32 (CPU),
  // bf16 (CUDA serving and autocast) or fp16 (fp16 checkpoints).
  static const auto* checks = new std::vector<KernelCheck>{
      {KernelId::kBuildRotation, {at::kFloat}, CheckBuildRotation},
      {KernelId::kBuildRotationBackward, {at::kFloat}, CheckBuildRotationBackward},
      {KernelId::kBlockRotate, {at::kFloat, at::kBFloat16, at::kHalf}, CheckBlockRotate},
      {KernelId::kBlockRotateBackward, {at::kFloat, at::kBFloat16, at::kHalf},
       CheckBlockRotateBackward},
      {KernelId::kGatheredBlockRotate, {at::kFloat, at::kBFloat16, at::kHalf},
       CheckGatheredBlockRotate},
      {KernelId::kNf4Dequantize, {at::kFloat, at::kBFloat16, at::kHalf}, CheckNf4Dequantize},
  };
  return *checks;
}

void DefaultLog(const std::string& line) {
  std::fprintf(stderr, "oft kernel self-check: %s\n", line.c_str());
}

}  // namespace

const char* KernelCheckOutcomeName(KernelCheckOutcome outcome) {
  switch (outcome) {
    case KernelCheckOutcome::kPass:
      return "pass";
    case KernelCheckOutcome::kMismatch:
      return "mismatch";
    case KernelCheckOutcome::kError:
      return "error";
    case KernelCheckOutcome::kNoKernel:
      return "no_kernel";
    case KernelCheckOutcome::kDisabled:
      return "disabled";
  }
  return "unknown";
}

bool KernelSelfCheckReport::AllPassed() const {
  return std::none_of(results.begin(), results.end(), [](const KernelCheckResult& r) {
    return r.outcome == KernelCheckOutcome::kMismatch || r.outcome == KernelCheckOutcome::kError;
  });
}

std::vector<std::string> KernelSelfCheckReport::PathLines() const {
  std::vector<std::string> lines;
  std::map<std::string, std::vector<std::string>> by_device;
  std::vector<std::string> order;
  for (const KernelPathEntry& p : paths) {
    if (!by_device.count(p.device)) order.push_back(p.device);
    by_device[p.device].push_back(absl::StrCat(KernelName(p.kernel), "=", KernelPathName(p.path)));
  }
  for (const std::string& device : order) {
    lines.push_back(absl::StrCat(device, ": ", absl::StrJoin(by_device[device], " ")));
  }
  return lines;
}

namespace {

absl::StatusOr<std::vector<c10::Device>> ParseDevices(const std::vector<std::string>& names) {
  std::vector<c10::Device> devices;
  for (const std::string& name : names) {
    try {
      devices.emplace_back(name);
    } catch (const std::exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat("device '", name, "' is not a device name (cpu, cuda, cuda:N)"));
    }
  }
  return devices;
}

}  // namespace

absl::StatusOr<KernelSelfCheckReport> RunKernelSelfCheck(const KernelSelfCheckOptions& options) {
  const auto log = options.log ? options.log : std::function<void(const std::string&)>(DefaultLog);
  OFT_ASSIGN_OR_RETURN(const std::vector<c10::Device> requested, ParseDevices(options.devices));
  std::vector<c10::Device> devices;
  for (const c10::Device& d : requested) {
    const bool cpu = d.is_cpu();
    const bool cuda = d.is_cuda() && (!d.has_index() || d.index() < kMaxCudaDevices);
    if (!cpu && !cuda) {
      return absl::InvalidArgumentError(
          absl::StrCat("kernel self-check: device ", d.str(), " is neither the CPU nor cuda:0..",
                       kMaxCudaDevices - 1));
    }
    const c10::Device canonical = d.is_cuda() && !d.has_index() ? c10::Device(c10::kCUDA, 0) : d;
    if (std::find(devices.begin(), devices.end(), canonical) == devices.end()) {
      devices.push_back(canonical);
    }
  }

  KernelSelfCheckReport report;
  report.mode = options.mode;
  std::vector<std::string> failures;
  for (const c10::Device& device : devices) {
    const std::string dev = device.str();
    // A device that cannot even hold a tensor fails every kernel for one reason: say it once.
    std::string unusable;
    if (options.mode != KernelMode::kOff && !device.is_cpu()) {
      try {
        (void)at::zeros({1}, at::TensorOptions().device(device)).cpu();
      } catch (const std::exception& e) {
        unusable = e.what();
        if (const size_t nl = unusable.find('\n'); nl != std::string::npos) unusable.resize(nl);
        log(absl::StrCat("FAILED device ", dev, " is not usable: ", unusable));
      }
    }
    for (const KernelCheck& check : Checks()) {
      const KernelFnPtr composite = CompositeKernel(check.kernel);
      if (composite == nullptr) continue;  // the kernel is not linked into this binary
      const KernelFnPtr optimized = OptimizedKernel(check.kernel, device.type());
      if (options.mode == KernelMode::kOff) {
        SetKernelPath(check.kernel, device, KernelPath::kComposite);
        report.results.push_back({dev, check.kernel, "all", KernelCheckOutcome::kDisabled, 0, 0, ""});
        continue;
      }
      if (optimized == nullptr) {
        report.results.push_back({dev, check.kernel, "all", KernelCheckOutcome::kNoKernel, 0, 0,
                                  "no optimized kernel for this device type in this binary"});
        if (options.mode == KernelMode::kOn && device.is_cuda()) {
          failures.push_back(absl::StrCat(KernelName(check.kernel), " on ", dev,
                                          ": no CUDA kernel in this binary"));
        }
        continue;
      }
      bool kernel_ok = true;
      for (at::ScalarType dtype : check.dtypes) {
        KernelCheckResult r{dev, check.kernel, DtypeName(dtype), KernelCheckOutcome::kPass, 0, 0, ""};
        if (!unusable.empty()) {
          r.outcome = KernelCheckOutcome::kError;
          r.detail = "device not usable: " + unusable;
          kernel_ok = false;
          failures.push_back(absl::StrCat(KernelName(check.kernel), " on ", dev, " (", r.dtype,
                                          "): ", r.detail));
          report.results.push_back(std::move(r));
          continue;
        }
        try {
          const c10::NoGradGuard no_grad;
          Inputs inputs(options.seed, device);
          const Verdict v = check.run(optimized, composite, inputs, dtype);
          r.max_error = v.max_error;
          r.tolerance = v.tolerance;
          if (!v.ok) {
            r.outcome = KernelCheckOutcome::kMismatch;
            r.detail = v.why;
          }
        } catch (const std::exception& e) {
          r.outcome = KernelCheckOutcome::kError;
          r.detail = c10::str("threw: ", e.what());
          // Keep only the first line: c10 messages carry a backtrace.
          if (const size_t nl = r.detail.find('\n'); nl != std::string::npos) r.detail.resize(nl);
        }
        if (r.outcome != KernelCheckOutcome::kPass) {
          kernel_ok = false;
          failures.push_back(absl::StrCat(KernelName(check.kernel), " on ", dev, " (", r.dtype,
                                          "): ", KernelCheckOutcomeName(r.outcome), ", ", r.detail));
          log(absl::StrCat("FAILED ", failures.back()));
        }
        report.results.push_back(std::move(r));
      }
      SetKernelPath(check.kernel, device, kernel_ok ? KernelPath::kOptimized : KernelPath::kComposite);
      if (!kernel_ok && options.mode == KernelMode::kAuto) {
        log(absl::StrCat("*** ", KernelName(check.kernel), " on ", dev,
                         " takes the composite path (plain ATen ops) from now on ***"));
      }
    }
  }
  if (options.mode == KernelMode::kOff) {
    // Off means no optimized kernel anywhere, also on devices not listed.
    for (KernelId k : kAllKernels) {
      SetKernelPath(k, c10::Device(c10::kCPU), KernelPath::kComposite);
      for (int i = 0; i < kMaxCudaDevices; ++i) {
        SetKernelPath(k, c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i)),
                      KernelPath::kComposite);
      }
    }
  }
  for (const c10::Device& device : devices) {
    for (KernelId k : kAllKernels) {
      if (CompositeKernel(k) == nullptr) continue;
      const bool has_kernel = OptimizedKernel(k, device.type()) != nullptr;
      const KernelPath path = has_kernel ? KernelPathFor(k, device) : KernelPath::kComposite;
      report.paths.push_back({device.str(), k, path});
    }
  }
  for (const std::string& line : report.PathLines()) {
    log(absl::StrCat("mode ", KernelModeName(options.mode), ", ", line));
  }
  if (options.mode == KernelMode::kOn && !failures.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--cuda_kernels=on and the kernel self-check failed: ", absl::StrJoin(failures, "; ")));
  }
  return report;
}

}  // namespace oft
