#include "server/model/hf_config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"

namespace oft {
namespace {

using json = nlohmann::json;

// Bounds that keep later size arithmetic (products of two of them) inside int64.
constexpr int64_t kMaxDim = int64_t{1} << 30;

struct ArchInfo {
  const char* architecture;
  ModelArch arch;
  const char* model_type;
  int64_t default_max_positions;  // transformers' class default
  int64_t default_head_dim;       // 0: hidden_size / num_attention_heads
  bool default_tied;              // tie_word_embeddings default
};

constexpr ArchInfo kArchs[] = {
    {"LlamaForCausalLM", ModelArch::kLlama, "llama", 2048, 0, false},
    {"Qwen2ForCausalLM", ModelArch::kQwen2, "qwen2", 32768, 0, false},
    {"MistralForCausalLM", ModelArch::kMistral, "mistral", 131072, 0, false},
    {"Qwen3ForCausalLM", ModelArch::kQwen3, "qwen3", 32768, 128, false},
    {"Olmo2ForCausalLM", ModelArch::kOlmo2, "olmo2", 2048, 0, false},
    {"GraniteForCausalLM", ModelArch::kGranite, "granite", 2048, 0, false},
    {"Gemma2ForCausalLM", ModelArch::kGemma2, "gemma2", 8192, 256, true},
    {"Gemma3ForCausalLM", ModelArch::kGemma3, "gemma3_text", 131072, 256, true},
    {"Phi3ForCausalLM", ModelArch::kPhi3, "phi3", 4096, 0, false},
};

const ArchInfo& InfoOf(ModelArch arch) {
  for (const auto& a : kArchs) {
    if (a.arch == arch) return a;
  }
  return kArchs[0];
}

// Field access with errors that name `source` and the field.
class Fields {
 public:
  Fields(const json& obj, std::string source, std::string prefix = "")
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", prefix_, field, " ", what));
  }

  // Whether the key is present at all (null included).
  bool Has(const char* key) const { return obj_.contains(key); }

  // Null counts as absent, as transformers treats it.
  const json* Find(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::StatusOr<std::optional<int64_t>> OptionalInt(const char* key) const {
    const json* j = Find(key);
    if (j == nullptr) return std::optional<int64_t>();
    if (!j->is_number_integer()) {
      return Error(key, absl::StrCat("must be an integer, got ", j->dump()));
    }
    if (j->is_number_unsigned() &&
        j->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Error(key, absl::StrCat("is out of range, got ", j->dump()));
    }
    return std::optional<int64_t>(j->get<int64_t>());
  }

  // A required or defaulted integer in [1, kMaxDim].
  absl::StatusOr<int64_t> PositiveInt(const char* key, std::optional<int64_t> fallback) const {
    OFT_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptionalInt(key));
    if (!v.has_value()) {
      if (fallback.has_value()) return *fallback;
      return Error(key, "is required");
    }
    if (*v <= 0 || *v > kMaxDim) {
      return Error(key, absl::StrCat("must be in [1, ", kMaxDim, "], got ", *v));
    }
    return *v;
  }

  absl::StatusOr<double> Number(const char* key, double fallback) const {
    const json* j = Find(key);
    if (j == nullptr) return fallback;
    if (!j->is_number()) return Error(key, absl::StrCat("must be a number, got ", j->dump()));
    return j->get<double>();
  }

  absl::StatusOr<bool> Bool(const char* key, bool fallback) const {
    const json* j = Find(key);
    if (j == nullptr) return fallback;
    if (!j->is_boolean()) return Error(key, absl::StrCat("must be true or false, got ", j->dump()));
    return j->get<bool>();
  }

  absl::StatusOr<std::string> String(const char* key, const std::string& fallback) const {
    const json* j = Find(key);
    if (j == nullptr) return fallback;
    if (!j->is_string()) return Error(key, absl::StrCat("must be a string, got ", j->dump()));
    return j->get<std::string>();
  }

 private:
  const json& obj_;
  std::string source_;
  std::string prefix_;
};

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

constexpr char kSupportedRopeTypes[] = "default, dynamic, linear, llama3, yarn";

// The yarn fields of a rope object, as transformers' _compute_yarn_parameters reads them:
// factor and original_max_position_embeddings required; attention_factor, else
// 0.1 * ln(factor) + 1 (or the mscale / mscale_all_dim ratio when both are set); beta_fast /
// beta_slow 32 / 1 when absent, null or 0; truncate true.
absl::StatusOr<std::optional<RopeScaling>> ParseYarn(const Fields& f) {
  RopeScaling r;
  r.rope_type = "yarn";
  for (const char* key : {"factor", "original_max_position_embeddings"}) {
    if (f.Find(key) == nullptr) return f.Error(key, "is required for rope_type yarn");
  }
  OFT_ASSIGN_OR_RETURN(r.factor, f.Number("factor", 0));
  OFT_ASSIGN_OR_RETURN(r.original_max_position_embeddings,
                       f.PositiveInt("original_max_position_embeddings", std::nullopt));
  auto mscale_of = [](double scale, double m) {
    return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
  };
  OFT_ASSIGN_OR_RETURN(const double mscale, f.Number("mscale", 0));
  OFT_ASSIGN_OR_RETURN(const double mscale_all_dim, f.Number("mscale_all_dim", 0));
  r.attention_factor = mscale != 0 && mscale_all_dim != 0
                           ? mscale_of(r.factor, mscale) / mscale_of(r.factor, mscale_all_dim)
                           : mscale_of(r.factor, 1.0);
  OFT_ASSIGN_OR_RETURN(r.attention_factor, f.Number("attention_factor", r.attention_factor));
  OFT_ASSIGN_OR_RETURN(r.beta_fast, f.Number("beta_fast", 0));
  OFT_ASSIGN_OR_RETURN(r.beta_slow, f.Number("beta_slow", 0));
  if (r.beta_fast == 0) r.beta_fast = 32;
  if (r.beta_slow == 0) r.beta_slow = 1;
  OFT_ASSIGN_OR_RETURN(r.truncate, f.Bool("truncate", true));
  return std::optional<RopeScaling>(r);
}

// Parses a rope object: legacy "rope_scaling" or 5.x "rope_parameters" (`field` names it).
// Returns nullopt for the default type.
absl::StatusOr<std::optional<RopeScaling>> ParseRope(const json& obj, const std::string& source,
                                                     const std::string& field) {
  if (!obj.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", field, " must be an object or null, got ", obj.dump()));
  }
  Fields f(obj, source, field + ".");
  // 4.x wrote "type"; "rope_type" wins when both are present.
  OFT_ASSIGN_OR_RETURN(std::string type, f.String("type", "default"));
  OFT_ASSIGN_OR_RETURN(type, f.String("rope_type", type));
  if (type == "default") return std::optional<RopeScaling>();
  RopeScaling r;
  if (type == "linear" || type == "dynamic") {
    if (f.Find("factor") == nullptr) {
      return f.Error("factor", absl::StrCat("is required for rope_type ", type));
    }
    r.rope_type = type;
    OFT_ASSIGN_OR_RETURN(r.factor, f.Number("factor", 0));
    return std::optional<RopeScaling>(r);
  }
  if (type == "yarn") return ParseYarn(f);
  if (type != "llama3") {
    return f.Error("rope_type", absl::StrCat("'", type, "' is not supported; supported: ",
                                             kSupportedRopeTypes));
  }
  for (const char* key : {"factor", "low_freq_factor", "high_freq_factor"}) {
    if (f.Find(key) == nullptr) return f.Error(key, "is required for rope_type llama3");
  }
  OFT_ASSIGN_OR_RETURN(r.factor, f.Number("factor", 0));
  OFT_ASSIGN_OR_RETURN(r.low_freq_factor, f.Number("low_freq_factor", 0));
  OFT_ASSIGN_OR_RETURN(r.high_freq_factor, f.Number("high_freq_factor", 0));
  OFT_ASSIGN_OR_RETURN(r.original_max_position_embeddings,
                       f.PositiveInt("original_max_position_embeddings", std::nullopt));
  return std::optional<RopeScaling>(r);
}

bool Finite(double x) { return std::isfinite(x); }

absl::Status ValidateFamily(const ModelConfig& c) {
  const ModelFamily& f = c.family;
  auto positive = [](const char* field, double v) -> absl::Status {
    if (!Finite(v) || v <= 0) {
      return FieldError(field, absl::StrCat("must be a finite number > 0, got ", v));
    }
    return absl::OkStatus();
  };
  OFT_RETURN_IF_ERROR(positive("embedding_multiplier", f.embedding_scale));
  OFT_RETURN_IF_ERROR(positive("residual_multiplier", f.residual_multiplier));
  OFT_RETURN_IF_ERROR(positive("logits_scaling", f.logits_divisor));
  if (f.attention_scale) OFT_RETURN_IF_ERROR(positive("attention_multiplier", *f.attention_scale));
  if (f.attn_logit_softcap) {
    OFT_RETURN_IF_ERROR(positive("attn_logit_softcapping", *f.attn_logit_softcap));
  }
  if (f.final_logit_softcap) {
    OFT_RETURN_IF_ERROR(positive("final_logit_softcapping", *f.final_logit_softcap));
  }
  if (f.local_rope_theta) OFT_RETURN_IF_ERROR(positive("rope_local_base_freq", *f.local_rope_theta));
  if (!f.sliding_layers.empty() &&
      static_cast<int64_t>(f.sliding_layers.size()) != c.num_hidden_layers) {
    return FieldError("layer_types", absl::StrCat("has ", f.sliding_layers.size(),
                                                  " entries for num_hidden_layers=",
                                                  c.num_hidden_layers));
  }
  if (!Finite(f.partial_rotary_factor) || f.partial_rotary_factor <= 0 ||
      f.partial_rotary_factor > 1) {
    return FieldError("partial_rotary_factor",
                      absl::StrCat("must be in (0, 1], got ", f.partial_rotary_factor));
  }
  const int64_t rotary = static_cast<int64_t>(c.head_dim * f.partial_rotary_factor);
  if (rotary < 2 || rotary % 2 != 0) {
    return FieldError("partial_rotary_factor",
                      absl::StrCat("gives ", rotary, " rotary dims of head_dim ", c.head_dim,
                                   "; they must be even and >= 2"));
  }
  if (f.pre_ffn_norm.empty() && f.post_ffn_norm.empty()) {
    return FieldError("family", "needs a pre- or post-feedforward norm");
  }
  return absl::OkStatus();
}

// RoPE: 5.x "rope_parameters" carries rope_theta, the type and partial_rotary_factor (Gemma 3:
// one object per layer type); 4.x uses top-level keys (Gemma 3: rope_local_base_freq).
absl::Status ParseRopeFields(const Fields& f, const std::string& source, ModelConfig& c) {
  const bool gemma3 = c.arch == ModelArch::kGemma3;
  OFT_ASSIGN_OR_RETURN(c.rope_theta, f.Number("rope_theta", gemma3 ? 1e6 : 10000.0));
  if (gemma3) {
    OFT_ASSIGN_OR_RETURN(double local, f.Number("rope_local_base_freq", 10000.0));
    c.family.local_rope_theta = local;
  }
  OFT_ASSIGN_OR_RETURN(c.family.partial_rotary_factor, f.Number("partial_rotary_factor", 1.0));
  const json* params = f.Find("rope_parameters");
  if (params != nullptr && params->is_object() &&
      (params->contains("full_attention") || params->contains("sliding_attention"))) {
    if (!gemma3) {
      return f.Error("rope_parameters", "per layer type is only supported for Gemma 3");
    }
    Fields pf(*params, source, "rope_parameters.");
    if (const json* full = pf.Find("full_attention"); full != nullptr) {
      OFT_ASSIGN_OR_RETURN(c.rope_scaling,
                           ParseRope(*full, source, "rope_parameters.full_attention"));
      Fields ff(*full, source, "rope_parameters.full_attention.");
      OFT_ASSIGN_OR_RETURN(c.rope_theta, ff.Number("rope_theta", c.rope_theta));
    }
    if (const json* sliding = pf.Find("sliding_attention"); sliding != nullptr) {
      OFT_ASSIGN_OR_RETURN(std::optional<RopeScaling> local,
                           ParseRope(*sliding, source, "rope_parameters.sliding_attention"));
      if (local.has_value()) {
        return pf.Error("sliding_attention.rope_type", "must be default (plain local RoPE)");
      }
      Fields sf(*sliding, source, "rope_parameters.sliding_attention.");
      OFT_ASSIGN_OR_RETURN(double theta, sf.Number("rope_theta", *c.family.local_rope_theta));
      c.family.local_rope_theta = theta;
    }
  } else if (params != nullptr) {
    OFT_ASSIGN_OR_RETURN(c.rope_scaling, ParseRope(*params, source, "rope_parameters"));
    if (params->is_object()) {
      Fields pf(*params, source, "rope_parameters.");
      OFT_ASSIGN_OR_RETURN(c.rope_theta, pf.Number("rope_theta", c.rope_theta));
      OFT_ASSIGN_OR_RETURN(c.family.partial_rotary_factor,
                           pf.Number("partial_rotary_factor", c.family.partial_rotary_factor));
    }
  } else if (const json* scaling = f.Find("rope_scaling"); scaling != nullptr) {
    OFT_ASSIGN_OR_RETURN(c.rope_scaling, ParseRope(*scaling, source, "rope_scaling"));
  }
  return absl::OkStatus();
}

// A softcap: absent -> the architecture's default, null -> none.
absl::StatusOr<std::optional<double>> Softcap(const Fields& f, const char* key,
                                              std::optional<double> fallback) {
  if (!f.Has(key)) return fallback;
  if (f.Find(key) == nullptr) return std::optional<double>();
  OFT_ASSIGN_OR_RETURN(double v, f.Number(key, 0));
  return std::optional<double>(v);
}

// Which layers slide: "layer_types" when present, else every `pattern`-th layer is global.
absl::Status ParseLayerTypes(const Fields& f, int64_t pattern, ModelConfig& c) {
  std::vector<bool>& sliding = c.family.sliding_layers;
  sliding.clear();
  if (const json* types = f.Find("layer_types"); types != nullptr) {
    if (!types->is_array()) return f.Error("layer_types", "must be a list of strings");
    for (size_t i = 0; i < types->size(); ++i) {
      const json& t = (*types)[i];
      if (!t.is_string() || (t != "sliding_attention" && t != "full_attention")) {
        return f.Error(absl::StrCat("layer_types[", i, "]"),
                       absl::StrCat("must be \"sliding_attention\" or \"full_attention\", got ",
                                    t.dump()));
      }
      sliding.push_back(t == "sliding_attention");
    }
    return absl::OkStatus();
  }
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) sliding.push_back((i + 1) % pattern != 0);
  return absl::OkStatus();
}

// Fills c.family (and the family-specific fields of c) for c.arch.
absl::Status ParseFamily(const Fields& f, ModelConfig& c) {
  ModelFamily& fam = c.family;
  OFT_ASSIGN_OR_RETURN(c.hidden_act, f.String("hidden_act", "silu"));
  switch (c.arch) {
    case ModelArch::kLlama:
      break;
    case ModelArch::kPhi3:
      fam.fused_qkv = fam.fused_gate_up = true;
      [[fallthrough]];
    case ModelArch::kMistral: {
      OFT_ASSIGN_OR_RETURN(c.sliding_window, f.OptionalInt("sliding_window"));
      break;
    }
    case ModelArch::kQwen3:
      fam.qk_norm = QkNorm::kPerHead;
      [[fallthrough]];
    case ModelArch::kQwen2: {
      OFT_ASSIGN_OR_RETURN(bool use_sliding_window, f.Bool("use_sliding_window", false));
      if (use_sliding_window) {
        return f.Error("use_sliding_window", "= true is not supported (only full attention)");
      }
      break;
    }
    case ModelArch::kOlmo2:
      fam.qk_norm = QkNorm::kFullProjection;
      fam.pre_attn_norm = fam.pre_ffn_norm = "";
      fam.post_attn_norm = "post_attention_layernorm";
      fam.post_ffn_norm = "post_feedforward_layernorm";
      break;
    case ModelArch::kGranite: {
      OFT_ASSIGN_OR_RETURN(fam.embedding_scale, f.Number("embedding_multiplier", 1.0));
      OFT_ASSIGN_OR_RETURN(fam.residual_multiplier, f.Number("residual_multiplier", 1.0));
      OFT_ASSIGN_OR_RETURN(fam.logits_divisor, f.Number("logits_scaling", 1.0));
      OFT_ASSIGN_OR_RETURN(double attention, f.Number("attention_multiplier", 1.0));
      fam.attention_scale = attention;
      break;
    }
    case ModelArch::kGemma2:
    case ModelArch::kGemma3: {
      const bool gemma2 = c.arch == ModelArch::kGemma2;
      // modeling_gemma* read hidden_activation; hidden_act is ignored there.
      OFT_ASSIGN_OR_RETURN(c.hidden_act, f.String("hidden_activation", "gelu_pytorch_tanh"));
      fam.norm = NormKind::kOnePlusWeight;
      fam.post_attn_norm = "post_attention_layernorm";
      fam.pre_ffn_norm = "pre_feedforward_layernorm";
      fam.post_ffn_norm = "post_feedforward_layernorm";
      fam.embedding_scale = std::sqrt(static_cast<double>(c.hidden_size));
      OFT_ASSIGN_OR_RETURN(double qpas, f.Number("query_pre_attn_scalar", 256));
      if (!Finite(qpas) || qpas <= 0) {
        return f.Error("query_pre_attn_scalar", absl::StrCat("must be > 0, got ", qpas));
      }
      fam.attention_scale = std::pow(qpas, -0.5);
      OFT_ASSIGN_OR_RETURN(fam.attn_logit_softcap,
                           Softcap(f, "attn_logit_softcapping",
                                   gemma2 ? std::optional<double>(50.0) : std::nullopt));
      OFT_ASSIGN_OR_RETURN(fam.final_logit_softcap,
                           Softcap(f, "final_logit_softcapping",
                                   gemma2 ? std::optional<double>(30.0) : std::nullopt));
      if (!f.Has("sliding_window")) {
        c.sliding_window = 4096;
      } else {
        OFT_ASSIGN_OR_RETURN(c.sliding_window, f.OptionalInt("sliding_window"));
      }
      int64_t pattern = 2;
      if (!gemma2) {
        fam.qk_norm = QkNorm::kPerHead;
        OFT_ASSIGN_OR_RETURN(bool bidirectional, f.Bool("use_bidirectional_attention", false));
        if (bidirectional) {
          return f.Error("use_bidirectional_attention", "= true is not supported (causal only)");
        }
        OFT_ASSIGN_OR_RETURN(pattern, f.PositiveInt("sliding_window_pattern", 6));
      }
      OFT_RETURN_IF_ERROR(ParseLayerTypes(f, pattern, c));
      break;
    }
  }
  fam.activation = c.hidden_act == "gelu_pytorch_tanh" ? Activation::kGeluTanh : Activation::kSilu;
  return absl::OkStatus();
}

}  // namespace

const std::vector<std::string>& SupportedArchitectures() {
  static const auto* const kNames = [] {
    auto* v = new std::vector<std::string>();
    for (const auto& a : kArchs) v->emplace_back(a.architecture);
    return v;
  }();
  return *kNames;
}

int64_t ModelConfig::ContextLength() const {
  if (rope_scaling.has_value() && rope_scaling->rope_type == "dynamic") {
    return static_cast<int64_t>(std::floor(static_cast<double>(max_position_embeddings) *
                                           rope_scaling->factor));
  }
  return max_position_embeddings;
}

absl::Status ModelConfig::Validate() const {
  auto positive = [](const char* field, int64_t v) -> absl::Status {
    if (v <= 0 || v > kMaxDim) {
      return FieldError(field, absl::StrCat("must be in [1, ", kMaxDim, "], got ", v));
    }
    return absl::OkStatus();
  };
  OFT_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  OFT_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  OFT_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size));
  OFT_RETURN_IF_ERROR(positive("num_hidden_layers", num_hidden_layers));
  OFT_RETURN_IF_ERROR(positive("num_attention_heads", num_attention_heads));
  OFT_RETURN_IF_ERROR(positive("num_key_value_heads", num_key_value_heads));
  OFT_RETURN_IF_ERROR(positive("head_dim", head_dim));
  OFT_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  if (num_attention_heads % num_key_value_heads != 0) {
    return FieldError("num_key_value_heads",
                      absl::StrCat("(", num_key_value_heads, ") must divide num_attention_heads (",
                                   num_attention_heads, ")"));
  }
  if (head_dim % 2 != 0) {
    return FieldError("head_dim", absl::StrCat("must be even for rotary embeddings, got ", head_dim));
  }
  if (!Finite(rms_norm_eps) || rms_norm_eps <= 0 || rms_norm_eps >= 1) {
    return FieldError("rms_norm_eps", absl::StrCat("must be in (0, 1), got ", rms_norm_eps));
  }
  if (!Finite(rope_theta) || rope_theta <= 0) {
    return FieldError("rope_theta", absl::StrCat("must be a finite number > 0, got ", rope_theta));
  }
  if (rope_scaling.has_value()) {
    const RopeScaling& r = *rope_scaling;
    if (r.rope_type != "llama3" && r.rope_type != "linear" && r.rope_type != "yarn" &&
        r.rope_type != "dynamic") {
      return FieldError("rope_scaling.rope_type", absl::StrCat("'", r.rope_type,
                                                               "' is not supported; supported: ",
                                                               kSupportedRopeTypes));
    }
    if (!Finite(r.factor) || r.factor <= 0) {
      return FieldError("rope_scaling.factor", absl::StrCat("must be > 0, got ", r.factor));
    }
    if (r.rope_type == "dynamic" && r.factor < 1) {
      return FieldError("rope_scaling.factor",
                        absl::StrCat("must be >= 1 for rope_type dynamic, got ", r.factor));
    }
  }
  if (rope_scaling.has_value() && rope_scaling->rope_type == "yarn") {
    const RopeScaling& r = *rope_scaling;
    for (auto [field, v] : {std::pair("rope_scaling.attention_factor", r.attention_factor),
                            std::pair("rope_scaling.beta_fast", r.beta_fast),
                            std::pair("rope_scaling.beta_slow", r.beta_slow)}) {
      if (!Finite(v) || v <= 0) return FieldError(field, absl::StrCat("must be > 0, got ", v));
    }
    if (r.original_max_position_embeddings <= 0) {
      return FieldError("rope_scaling.original_max_position_embeddings",
                        absl::StrCat("must be > 0, got ", r.original_max_position_embeddings));
    }
  }
  if (rope_scaling.has_value() && rope_scaling->rope_type == "llama3") {
    const RopeScaling& r = *rope_scaling;
    if (!Finite(r.low_freq_factor) || r.low_freq_factor <= 0) {
      return FieldError("rope_scaling.low_freq_factor",
                        absl::StrCat("must be > 0, got ", r.low_freq_factor));
    }
    if (!Finite(r.high_freq_factor) || r.high_freq_factor <= r.low_freq_factor) {
      return FieldError("rope_scaling.high_freq_factor",
                        absl::StrCat("(", r.high_freq_factor, ") must be > low_freq_factor (",
                                     r.low_freq_factor, ")"));
    }
    if (r.original_max_position_embeddings <= 0) {
      return FieldError("rope_scaling.original_max_position_embeddings",
                        absl::StrCat("must be > 0, got ", r.original_max_position_embeddings));
    }
  }
  if (hidden_act != "silu" && hidden_act != "gelu_pytorch_tanh") {
    return FieldError("hidden_act", absl::StrCat("'", hidden_act,
                                                 "' is not supported; supported: silu, "
                                                 "gelu_pytorch_tanh"));
  }
  if ((hidden_act == "silu") != (family.activation == Activation::kSilu)) {
    return FieldError("hidden_act", "does not match family.activation");
  }
  OFT_RETURN_IF_ERROR(ValidateFamily(*this));
  if (!torch_dtype.empty() && torch_dtype != "bfloat16" && torch_dtype != "float16" &&
      torch_dtype != "float32" && torch_dtype != "float64") {
    return FieldError("torch_dtype", absl::StrCat("'", torch_dtype,
                                                  "' is not supported; supported: bfloat16, "
                                                  "float16, float32, float64"));
  }
  if (sliding_window.has_value() && *sliding_window <= 0) {
    return FieldError("sliding_window", absl::StrCat("must be > 0 or null, got ", *sliding_window));
  }
  for (auto [field, id] : {std::pair<const char*, std::optional<int64_t>>{"bos_token_id", bos_token_id},
                           {"pad_token_id", pad_token_id}}) {
    if (id.has_value() && (*id < 0 || *id >= vocab_size)) {
      return FieldError(field, absl::StrCat("must be in [0, vocab_size=", vocab_size, "), got ", *id));
    }
  }
  for (int64_t id : eos_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return FieldError("eos_token_id",
                        absl::StrCat("must be in [0, vocab_size=", vocab_size, "), got ", id));
    }
  }
  // The biases each architecture's modeling code actually builds.
  switch (arch) {
    case ModelArch::kLlama:
      if (o_proj_bias != attention_bias) {
        return FieldError("o_proj_bias", "must equal attention_bias for Llama");
      }
      break;
    case ModelArch::kQwen2:
      if (!attention_bias || o_proj_bias || mlp_bias) {
        return FieldError("attention_bias",
                          "Qwen2 has q/k/v biases only (attention_bias=true, o_proj_bias=false, "
                          "mlp_bias=false)");
      }
      if (sliding_window.has_value()) {
        return FieldError("sliding_window", "is not supported for Qwen2");
      }
      break;
    case ModelArch::kMistral:
    case ModelArch::kPhi3:
      if (attention_bias || o_proj_bias || mlp_bias) {
        return FieldError("attention_bias",
                          absl::StrCat(InfoOf(arch).architecture, " has no projection biases"));
      }
      break;
    case ModelArch::kQwen3:
    case ModelArch::kOlmo2:
    case ModelArch::kGemma2:
    case ModelArch::kGemma3:
      if (o_proj_bias != attention_bias || mlp_bias) {
        return FieldError("o_proj_bias",
                          absl::StrCat("must equal attention_bias and mlp_bias must be false for ",
                                       InfoOf(arch).architecture));
      }
      break;
    case ModelArch::kGranite:
      if (o_proj_bias != attention_bias) {
        return FieldError("o_proj_bias", "must equal attention_bias for Granite");
      }
      break;
  }
  if (architecture != InfoOf(arch).architecture) {
    return FieldError("architecture", absl::StrCat("'", architecture, "' does not match arch ",
                                                   InfoOf(arch).architecture));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source_view) {
  const std::string source(source_view);
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": must be a JSON object"));
  }
  Fields f(root, source);
  ModelConfig c;

  const json* archs = f.Find("architectures");
  if (archs == nullptr || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return f.Error("architectures", absl::StrCat("must be a non-empty list of strings; supported: ",
                                                 absl::StrJoin(SupportedArchitectures(), ", ")));
  }
  c.architecture = (*archs)[0].get<std::string>();
  const ArchInfo* arch = nullptr;
  for (const auto& a : kArchs) {
    if (c.architecture == a.architecture) arch = &a;
  }
  if (arch == nullptr) {
    return f.Error("architectures[0]", absl::StrCat("'", c.architecture, "' is not supported; supported: ",
                                                 absl::StrJoin(SupportedArchitectures(), ", ")));
  }
  c.arch = arch->arch;
  OFT_ASSIGN_OR_RETURN(c.model_type, f.String("model_type", arch->model_type));

  OFT_ASSIGN_OR_RETURN(c.vocab_size, f.PositiveInt("vocab_size", std::nullopt));
  OFT_ASSIGN_OR_RETURN(c.hidden_size, f.PositiveInt("hidden_size", std::nullopt));
  OFT_ASSIGN_OR_RETURN(c.intermediate_size, f.PositiveInt("intermediate_size", std::nullopt));
  OFT_ASSIGN_OR_RETURN(c.num_hidden_layers, f.PositiveInt("num_hidden_layers", std::nullopt));
  OFT_ASSIGN_OR_RETURN(c.num_attention_heads, f.PositiveInt("num_attention_heads", std::nullopt));
  OFT_ASSIGN_OR_RETURN(c.num_key_value_heads,
                       f.PositiveInt("num_key_value_heads", c.num_attention_heads));
  if (f.Find("head_dim") == nullptr && arch->default_head_dim == 0 &&
      c.hidden_size % c.num_attention_heads != 0) {
    return f.Error("num_attention_heads",
                   absl::StrCat("(", c.num_attention_heads, ") must divide hidden_size (",
                                c.hidden_size, ") when head_dim is absent"));
  }
  OFT_ASSIGN_OR_RETURN(c.head_dim,
                       f.PositiveInt("head_dim", arch->default_head_dim != 0
                                                     ? arch->default_head_dim
                                                     : c.hidden_size / c.num_attention_heads));
  OFT_ASSIGN_OR_RETURN(c.rms_norm_eps, f.Number("rms_norm_eps", 1e-6));
  OFT_ASSIGN_OR_RETURN(c.max_position_embeddings,
                       f.PositiveInt("max_position_embeddings", arch->default_max_positions));
  OFT_RETURN_IF_ERROR(ParseRopeFields(f, source, c));
  OFT_ASSIGN_OR_RETURN(c.tie_word_embeddings, f.Bool("tie_word_embeddings", arch->default_tied));
  OFT_ASSIGN_OR_RETURN(bool attention_bias_key, f.Bool("attention_bias", false));
  OFT_ASSIGN_OR_RETURN(bool mlp_bias_key, f.Bool("mlp_bias", false));
  switch (c.arch) {
    case ModelArch::kLlama:
      c.attention_bias = c.o_proj_bias = attention_bias_key;
      c.mlp_bias = mlp_bias_key;
      break;
    case ModelArch::kQwen2:  // modeling_qwen2 hard-codes q/k/v bias, ignoring the keys
      c.attention_bias = true;
      break;
    case ModelArch::kMistral:  // modeling_mistral / modeling_phi3 have no biases
    case ModelArch::kPhi3:
      break;
    case ModelArch::kQwen3:  // attention_bias covers q/k/v/o; the MLP has none
    case ModelArch::kOlmo2:
    case ModelArch::kGemma2:
    case ModelArch::kGemma3:
      c.attention_bias = c.o_proj_bias = attention_bias_key;
      break;
    case ModelArch::kGranite:
      c.attention_bias = c.o_proj_bias = attention_bias_key;
      c.mlp_bias = mlp_bias_key;
      break;
  }

  OFT_ASSIGN_OR_RETURN(std::string torch_dtype, f.String("torch_dtype", ""));
  OFT_ASSIGN_OR_RETURN(c.torch_dtype, f.String("dtype", torch_dtype));  // 5.x name wins

  OFT_ASSIGN_OR_RETURN(c.bos_token_id, f.OptionalInt("bos_token_id"));
  OFT_ASSIGN_OR_RETURN(c.pad_token_id, f.OptionalInt("pad_token_id"));
  if (const json* eos = f.Find("eos_token_id"); eos != nullptr) {
    if (eos->is_array()) {
      for (size_t i = 0; i < eos->size(); ++i) {
        if (!(*eos)[i].is_number_integer()) {
          return f.Error(absl::StrCat("eos_token_id[", i, "]"),
                         absl::StrCat("must be an integer, got ", (*eos)[i].dump()));
        }
        c.eos_token_ids.push_back((*eos)[i].get<int64_t>());
      }
    } else {
      OFT_ASSIGN_OR_RETURN(std::optional<int64_t> id, f.OptionalInt("eos_token_id"));
      c.eos_token_ids.push_back(*id);
    }
  }

  OFT_RETURN_IF_ERROR(ParseFamily(f, c));
  absl::Status valid = c.Validate();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", valid.message()));
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/config.json");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("error reading ", path));
  return ParseModelConfig(text.str(), path);
}

std::string ToJson(const ModelConfig& c) {
  // Written with the 4.x keys (rope_theta + rope_scaling, torch_dtype), which 5.x
  // still reads and converts, so both generations load the file.
  json j = json::object();
  j["architectures"] = json::array({c.architecture});
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = c.hidden_act;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.has_value() &&
      (c.rope_scaling->rope_type == "linear" || c.rope_scaling->rope_type == "dynamic")) {
    j["rope_scaling"] = {{"rope_type", c.rope_scaling->rope_type}, {"factor", c.rope_scaling->factor}};
  } else if (c.rope_scaling.has_value() && c.rope_scaling->rope_type == "yarn") {
    const RopeScaling& r = *c.rope_scaling;
    j["rope_scaling"] = {{"rope_type", "yarn"},
                         {"factor", r.factor},
                         {"original_max_position_embeddings", r.original_max_position_embeddings},
                         {"attention_factor", r.attention_factor},
                         {"beta_fast", r.beta_fast},
                         {"beta_slow", r.beta_slow},
                         {"truncate", r.truncate}};
  } else if (c.rope_scaling.has_value()) {
    const RopeScaling& r = *c.rope_scaling;
    j["rope_scaling"] = {{"rope_type", r.rope_type},
                         {"factor", r.factor},
                         {"low_freq_factor", r.low_freq_factor},
                         {"high_freq_factor", r.high_freq_factor},
                         {"original_max_position_embeddings", r.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  const ModelFamily& fam = c.family;
  auto optional = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
  switch (c.arch) {
    case ModelArch::kLlama:
    case ModelArch::kGranite:
      j["attention_bias"] = c.attention_bias;
      j["mlp_bias"] = c.mlp_bias;
      if (c.arch == ModelArch::kGranite) {
        j["embedding_multiplier"] = fam.embedding_scale;
        j["attention_multiplier"] = fam.attention_scale.value_or(1.0);
        j["residual_multiplier"] = fam.residual_multiplier;
        j["logits_scaling"] = fam.logits_divisor;
      }
      break;
    case ModelArch::kMistral:
    case ModelArch::kPhi3:
      j["sliding_window"] = c.sliding_window.has_value() ? json(*c.sliding_window) : json(nullptr);
      if (c.arch == ModelArch::kPhi3) j["partial_rotary_factor"] = fam.partial_rotary_factor;
      break;
    case ModelArch::kQwen2:
    case ModelArch::kQwen3:
      j["use_sliding_window"] = false;
      j["sliding_window"] = nullptr;
      if (c.arch == ModelArch::kQwen3) j["attention_bias"] = c.attention_bias;
      break;
    case ModelArch::kOlmo2:
      j["attention_bias"] = c.attention_bias;
      break;
    case ModelArch::kGemma2:
    case ModelArch::kGemma3: {
      j["attention_bias"] = c.attention_bias;
      j["hidden_activation"] = c.hidden_act;
      // attention_scale is query_pre_attn_scalar^-0.5; the scalar is an integer in HF configs.
      const double scale = fam.attention_scale.value_or(1.0 / std::sqrt(c.head_dim));
      j["query_pre_attn_scalar"] = std::llround(1.0 / (scale * scale));
      j["attn_logit_softcapping"] = optional(fam.attn_logit_softcap);
      j["final_logit_softcapping"] = optional(fam.final_logit_softcap);
      j["sliding_window"] = c.sliding_window.has_value() ? json(*c.sliding_window) : json(nullptr);
      json types = json::array();
      for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
        types.push_back(fam.LayerSlides(i) ? "sliding_attention" : "full_attention");
      }
      j["layer_types"] = types;
      if (c.arch == ModelArch::kGemma3) {
        j["rope_local_base_freq"] = fam.local_rope_theta.value_or(c.rope_theta);
      }
      break;
    }
  }
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  j["bos_token_id"] = c.bos_token_id.has_value() ? json(*c.bos_token_id) : json(nullptr);
  j["pad_token_id"] = c.pad_token_id.has_value() ? json(*c.pad_token_id) : json(nullptr);
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["use_cache"] = true;
  return j.dump(2, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace) + "\n";
}

}  // namespace oft
