#include "server/model/generate.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"

namespace oft {

absl::Status ValidateSamplingOptions(const SamplingOptions& o) {
  if (o.max_tokens < 1 || o.max_tokens > kMaxGenerateTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be in [1, ", kMaxGenerateTokens, "], got ", o.max_tokens));
  }
  if (!(o.temperature >= 0.0 && o.temperature <= 5.0)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be in [0, 5], got ", o.temperature));
  }
  if (!(o.top_p > 0.0 && o.top_p <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", o.top_p));
  }
  if (o.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", o.top_k));
  return absl::OkStatus();
}

at::Generator SamplingGenerator(c10::Device device, uint64_t seed) {
  if (device.is_cpu()) return at::detail::createCPUGenerator(seed);
  at::Generator g = at::globalContext().defaultGenerator(device).clone();
  g.set_current_seed(seed);
  return g;
}

int64_t SampleNextToken(const at::Tensor& logits, const SamplingOptions& o, at::Generator& gen) {
  return SampleNextTokenTensor(logits, o, gen).item<int64_t>();
}

at::Tensor SampleNextTokenTensor(const at::Tensor& logits, const SamplingOptions& o,
                                 at::Generator& gen) {
  if (o.temperature == 0.0) return logits.argmax();
  auto scaled = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < scaled.size(0)) {
    auto kth = std::get<0>(scaled.topk(o.top_k)).min();
    scaled = scaled.masked_fill(scaled < kth, -INFINITY);
  }
  auto probs = at::softmax(scaled, 0);
  if (o.top_p < 1.0) {
    auto [sorted, idx] = probs.sort(0, /*descending=*/true);
    auto cum = sorted.cumsum(0);
    auto drop = (cum - sorted) > o.top_p;  // keep the smallest prefix reaching top_p
    sorted = sorted.masked_fill(drop, 0.0);
    probs = at::zeros_like(probs).scatter(0, idx, sorted);
  }
  return at::multinomial(probs, 1, false, gen).squeeze(0);  // [1] -> a scalar tensor
}

absl::StatusOr<GenerateResult> Generate(const LlamaModel& model, const Tokenizer* tokenizer,
                                        const std::vector<int32_t>& prompt,
                                        const SamplingOptions& o,
                                        const std::function<bool(int32_t)>& on_token) {
  OFT_RETURN_IF_ERROR(ValidateSamplingOptions(o));
  if (prompt.empty()) return absl::InvalidArgumentError("prompt must contain at least one token");
  const int64_t limit = model.config().ContextLength();
  if (static_cast<int64_t>(prompt.size()) + o.max_tokens > limit) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", prompt.size(), " tokens) + max_tokens (",
                                                   o.max_tokens, ") exceeds the model's context of ",
                                                   limit));
  }
  // The active adapter's rotations are built once here, not at every decode step: the
  // serving path (ServingAdapter + AdapterBatch) takes prebuilt blocks.
  std::shared_ptr<const ServingAdapter> prepared;
  if (model.active_adapters().size() == 1) {
    const std::string& name = model.active_adapters()[0];
    OFT_ASSIGN_OR_RETURN(OftConfig config, model.AdapterConfig(name));
    OFT_ASSIGN_OR_RETURN(auto params, model.AdapterParameters(name));
    TargetSpec targets;
    for (const auto& [module, tensor] : params) targets.target_modules.push_back(module);
    std::map<std::string, at::Tensor> packed;
    OFT_RETURN_IF_ERROR(TorchCall("Generate: adapter parameters", [&] {
      for (const auto& [module, tensor] : params) packed[module] = tensor.detach();
    }));
    OFT_ASSIGN_OR_RETURN(prepared, model.PrepareServingAdapter(config, targets, packed));
  }
  return TorchCall("Generate", [&]() -> absl::StatusOr<GenerateResult> {
    at::NoGradGuard no_grad;
    at::Generator gen = SamplingGenerator(model.device(), o.seed);
    GenerateResult r;
    KvCache cache;
    // One prepared adapter: the serving pass; no adapter, or several stacked (rebuilt per
    // step): the training-side pass with the active adapters.
    AdapterBatch batch;
    ServingBatch sb;
    ForwardOptions fo;
    if (prepared) {
      batch = model.MakeAdapterBatch({prepared.get()});
      sb.adapters = &batch;
      sb.caches = {&cache};
      sb.logits_for_last_only = true;
    } else {
      fo.cache = &cache;
      fo.logits_for_last_only = true;
    }
    auto forward = [&](const at::Tensor& ids) {
      return prepared ? model.ForwardBatch(ids, sb) : model.Forward(ids, fo);
    };
    std::vector<int64_t> ids(prompt.begin(), prompt.end());
    auto input = at::tensor(ids, at::kLong).unsqueeze(0);
    r.finish_reason = "length";
    for (int64_t step = 0; step < o.max_tokens; ++step) {
      auto logits = forward(input).to(at::kFloat).view({-1});  // stays on the device
      const auto next = static_cast<int32_t>(SampleNextToken(logits, o, gen));
      r.tokens.push_back(next);
      if (on_token && !on_token(next)) {
        r.finish_reason = "stop";
        break;
      }
      if (std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end()) {
        r.finish_reason = "stop";
        break;
      }
      if (tokenizer != nullptr && !o.stop_strings.empty()) {
        const std::string text = tokenizer->Decode(r.tokens, /*skip_special_tokens=*/true);
        bool hit = false;
        for (const auto& s : o.stop_strings) hit |= !s.empty() && text.find(s) != std::string::npos;
        if (hit) {
          r.finish_reason = "stop";
          break;
        }
      }
      input = at::tensor(std::vector<int64_t>{next}, at::kLong).unsqueeze(0);
    }
    if (tokenizer == nullptr) return r;
    r.text = tokenizer->Decode(r.tokens, /*skip_special_tokens=*/true);
    for (const auto& s : o.stop_strings) {
      if (auto pos = r.text.find(s); !s.empty() && pos != std::string::npos) r.text.resize(pos);
    }
    return r;
  });
}

}  // namespace oft
