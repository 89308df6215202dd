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
};

constexpr ArchInfo kArchs[] = {
    {"LlamaForCausalLM", ModelArch::kLlama, "llama", 2048},
    {"Qwen2ForCausalLM", ModelArch::kQwen2, "qwen2", 32768},
    {"MistralForCausalLM", ModelArch::kMistral, "mistral", 131072},
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
  if (type != "llama3") {
    return f.Error("rope_type", absl::StrCat("'", type,
                                             "' is not supported; supported: default, llama3"));
  }
  RopeScaling r;
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

}  // namespace

const std::vector<std::string>& SupportedArchitectures() {
  static const auto* const kNames = [] {
    auto* v = new std::vector<std::string>();
    for (const auto& a : kArchs) v->emplace_back(a.architecture);
    return v;
  }();
  return *kNames;
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
    if (r.rope_type != "llama3") {
      return FieldError("rope_scaling.rope_type",
                        absl::StrCat("'", r.rope_type, "' is not supported; supported: default, llama3"));
    }
    if (!Finite(r.factor) || r.factor <= 0) {
      return FieldError("rope_scaling.factor", absl::StrCat("must be > 0, got ", r.factor));
    }
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
  if (hidden_act != "silu") {
    return FieldError("hidden_act", absl::StrCat("'", hidden_act, "' is not supported; supported: silu"));
  }
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
      if (attention_bias || o_proj_bias || mlp_bias) {
        return FieldError("attention_bias", "Mistral has no projection biases");
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
  if (f.Find("head_dim") == nullptr && c.hidden_size % c.num_attention_heads != 0) {
    return f.Error("num_attention_heads",
                   absl::StrCat("(", c.num_attention_heads, ") must divide hidden_size (",
                                c.hidden_size, ") when head_dim is absent"));
  }
  OFT_ASSIGN_OR_RETURN(c.head_dim, f.PositiveInt("head_dim", c.hidden_size / c.num_attention_heads));
  OFT_ASSIGN_OR_RETURN(c.rms_norm_eps, f.Number("rms_norm_eps", 1e-6));
  OFT_ASSIGN_OR_RETURN(c.max_position_embeddings,
                       f.PositiveInt("max_position_embeddings", arch->default_max_positions));

  // RoPE: 5.x "rope_parameters" carries rope_theta and the type; 4.x uses top-level keys.
  OFT_ASSIGN_OR_RETURN(c.rope_theta, f.Number("rope_theta", 10000.0));
  if (const json* params = f.Find("rope_parameters"); params != nullptr) {
    OFT_ASSIGN_OR_RETURN(c.rope_scaling, ParseRope(*params, source, "rope_parameters"));
    if (params->is_object()) {
      Fields pf(*params, source, "rope_parameters.");
      OFT_ASSIGN_OR_RETURN(c.rope_theta, pf.Number("rope_theta", c.rope_theta));
    }
  } else if (const json* scaling = f.Find("rope_scaling"); scaling != nullptr) {
    OFT_ASSIGN_OR_RETURN(c.rope_scaling, ParseRope(*scaling, source, "rope_scaling"));
  }

  OFT_ASSIGN_OR_RETURN(c.tie_word_embeddings, f.Bool("tie_word_embeddings", false));
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
    case ModelArch::kMistral:  // modeling_mistral has no biases, ignoring the keys
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

  if (c.arch == ModelArch::kMistral) {
    OFT_ASSIGN_OR_RETURN(c.sliding_window, f.OptionalInt("sliding_window"));
  } else if (c.arch == ModelArch::kQwen2) {
    OFT_ASSIGN_OR_RETURN(bool use_sliding_window, f.Bool("use_sliding_window", false));
    if (use_sliding_window) {
      return f.Error("use_sliding_window", "= true is not supported (only full attention)");
    }
  }
  OFT_ASSIGN_OR_RETURN(c.hidden_act, f.String("hidden_act", "silu"));

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
  if (c.rope_scaling.has_value()) {
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
  if (c.arch == ModelArch::kLlama) {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  if (c.arch == ModelArch::kMistral) {
    j["sliding_window"] = c.sliding_window.has_value() ? json(*c.sliding_window) : json(nullptr);
  }
  if (c.arch == ModelArch::kQwen2) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
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
