#include "server/artifacts/adapter_config.h"

#include <algorithm>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/status_macros.h"

namespace oft {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, " ", what));
}

// "0.17.1" < "0.18.0" by numeric components.
bool VersionLess(const std::string& a, const std::string& b) {
  std::vector<std::string> pa = absl::StrSplit(a, '.'), pb = absl::StrSplit(b, '.');
  for (size_t i = 0; i < std::max(pa.size(), pb.size()); ++i) {
    const long x = i < pa.size() ? std::atol(pa[i].c_str()) : 0;
    const long y = i < pb.size() ? std::atol(pb[i].c_str()) : 0;
    if (x != y) return x < y;
  }
  return false;
}

}  // namespace

std::string AdapterConfigToJson(const PeftAdapterConfig& c) {
  json j;
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] =
      c.base_model_name_or_path.empty() ? json(nullptr) : json(c.base_model_name_or_path);
  j["bias"] = OftBiasName(c.oft.bias);
  j["block_share"] = c.oft.block_share;
  j["coft"] = c.oft.coft;
  j["eps"] = c.oft.eps;
  j["exclude_modules"] = c.targets.exclude_regex ? json(*c.targets.exclude_regex)
                         : c.targets.exclude_modules.empty() ? json(nullptr)
                                                             : json(c.targets.exclude_modules);
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_weights"] = true;
  j["layers_pattern"] = c.targets.layers_pattern ? json(*c.targets.layers_pattern) : json(nullptr);
  j["layers_to_transform"] =
      c.targets.layers_to_transform.empty() ? json(nullptr) : json(c.targets.layers_to_transform);
  j["module_dropout"] = c.oft.module_dropout;
  j["modules_to_save"] = nullptr;
  j["num_cayley_neumann_terms"] = c.oft.num_cayley_neumann_terms;
  j["oft_block_size"] = c.oft.oft_block_size;
  j["peft_type"] = "OFT";
  j["peft_version"] = c.peft_version;
  j["r"] = c.oft.r;
  j["revision"] = nullptr;
  j["target_modules"] = c.targets.target_regex ? json(*c.targets.target_regex) : json(c.targets.target_modules);
  j["task_type"] = c.task_type.empty() ? json(nullptr) : json(c.task_type);
  j["use_cayley_neumann"] = c.oft.use_cayley_neumann;
  return j.dump(2) + "\n";
}

absl::StatusOr<PeftAdapterConfig> ParseAdapterConfig(absl::string_view text, absl::string_view src) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": not a JSON object"));
  }
  PeftAdapterConfig c;
  auto get_int = [&](const char* k, int64_t& out) -> absl::Status {
    if (!j.contains(k) || j[k].is_null()) return absl::OkStatus();
    if (!j[k].is_number_integer()) return FieldError(src, k, "must be an integer");
    out = j[k].get<int64_t>();
    return absl::OkStatus();
  };
  auto get_bool = [&](const char* k, bool& out) -> absl::Status {
    if (!j.contains(k) || j[k].is_null()) return absl::OkStatus();
    if (!j[k].is_boolean()) return FieldError(src, k, "must be true or false");
    out = j[k].get<bool>();
    return absl::OkStatus();
  };
  auto get_num = [&](const char* k, double& out) -> absl::Status {
    if (!j.contains(k) || j[k].is_null()) return absl::OkStatus();
    if (!j[k].is_number()) return FieldError(src, k, "must be a number");
    out = j[k].get<double>();
    return absl::OkStatus();
  };
  auto names_or_regex = [&](const char* k, std::vector<std::string>& names,
                            std::optional<std::string>& regex) -> absl::Status {
    if (!j.contains(k) || j[k].is_null()) return absl::OkStatus();
    if (j[k].is_string()) {
      regex = j[k].get<std::string>();
      return absl::OkStatus();
    }
    if (!j[k].is_array()) return FieldError(src, k, "must be a list of module names or a regex string");
    for (const auto& e : j[k]) {
      if (!e.is_string()) return FieldError(src, k, "entries must be strings");
      names.push_back(e.get<std::string>());
    }
    return absl::OkStatus();
  };

  if (!j.contains("peft_type") || j["peft_type"] != "OFT") {
    return FieldError(src, "peft_type", "must be \"OFT\"");
  }
  if (!j.contains("oft_block_size")) {
    return FieldError(src, "oft_block_size", "is missing (PEFT requires the key; pre-0.14 OFT adapters are not supported)");
  }
  OFT_RETURN_IF_ERROR(get_int("r", c.oft.r));
  OFT_RETURN_IF_ERROR(get_int("oft_block_size", c.oft.oft_block_size));
  OFT_RETURN_IF_ERROR(get_bool("use_cayley_neumann", c.oft.use_cayley_neumann));
  OFT_RETURN_IF_ERROR(get_int("num_cayley_neumann_terms", c.oft.num_cayley_neumann_terms));
  OFT_RETURN_IF_ERROR(get_bool("block_share", c.oft.block_share));
  OFT_RETURN_IF_ERROR(get_bool("coft", c.oft.coft));
  OFT_RETURN_IF_ERROR(get_num("eps", c.oft.eps));
  OFT_RETURN_IF_ERROR(get_num("module_dropout", c.oft.module_dropout));
  if (j.contains("bias") && !j["bias"].is_null()) {
    if (!j["bias"].is_string()) return FieldError(src, "bias", "must be a string");
    OFT_ASSIGN_OR_RETURN(c.oft.bias, ParseOftBias(j["bias"].get<std::string>()));
    if (c.oft.bias != OftBias::kNone) {
      return FieldError(src, "bias", "other than \"none\" is not supported yet");
    }
  }
  bool fan_in_fan_out = false;
  OFT_RETURN_IF_ERROR(get_bool("fan_in_fan_out", fan_in_fan_out));
  if (fan_in_fan_out) return FieldError(src, "fan_in_fan_out", "must be false for Linear layers");
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null() &&
      !(j["modules_to_save"].is_array() && j["modules_to_save"].empty())) {
    return FieldError(src, "modules_to_save", "is not supported (only OFT rotations are loaded)");
  }
  OFT_RETURN_IF_ERROR(names_or_regex("target_modules", c.targets.target_modules, c.targets.target_regex));
  OFT_RETURN_IF_ERROR(names_or_regex("exclude_modules", c.targets.exclude_modules, c.targets.exclude_regex));
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
    const auto& l = j["layers_to_transform"];
    if (l.is_number_integer()) {
      c.targets.layers_to_transform.push_back(l.get<int64_t>());
    } else if (l.is_array()) {
      for (const auto& e : l) {
        if (!e.is_number_integer()) return FieldError(src, "layers_to_transform", "entries must be integers");
        c.targets.layers_to_transform.push_back(e.get<int64_t>());
      }
    } else {
      return FieldError(src, "layers_to_transform", "must be an integer or a list of integers");
    }
  }
  if (j.contains("layers_pattern") && j["layers_pattern"].is_string()) {
    c.targets.layers_pattern = j["layers_pattern"].get<std::string>();
  }
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()) {
    c.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
  }
  if (j.contains("task_type") && j["task_type"].is_string()) c.task_type = j["task_type"].get<std::string>();
  c.peft_version = j.contains("peft_version") && j["peft_version"].is_string()
                       ? j["peft_version"].get<std::string>()
                       : "";
  if (c.oft.use_cayley_neumann && (c.peft_version.empty() || VersionLess(c.peft_version, "0.18.0"))) {
    c.warnings.push_back(absl::StrCat(
        "adapter was saved by PEFT ", c.peft_version.empty() ? "(unknown version)" : c.peft_version,
        " whose Cayley-Neumann polynomial differs from PEFT >= 0.18; outputs differ slightly "
        "from what it was trained with (PEFT itself behaves the same way)"));
  }
  if (auto s = c.oft.Validate(); !s.ok()) return absl::InvalidArgumentError(absl::StrCat(src, ": ", s.message()));
  if (auto s = ValidateTargetSpec(c.targets); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": ", s.message()));
  }
  return c;
}

}  // namespace oft
