#include "server/artifacts/peft_format.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "server/oft/ops.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/echo.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/model/safetensors.h"
#include "server/model/safetensors_torch.h"

namespace oft {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr char kKeyPrefix[] = "base_model.model.";
constexpr char kKeySuffix[] = ".oft_R.weight";

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

std::string ShortName(const std::string& module) {
  const auto pos = module.rfind('.');
  return pos == std::string::npos ? module : module.substr(pos + 1);
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

std::vector<std::string> ExplicitTargetModules(const LlamaModel& model, const std::string& adapter,
                                               const TargetSpec& spec) {
  auto params = model.AdapterParameters(adapter);
  if (!params.ok()) return {};
  std::vector<std::string> attached;
  std::set<std::string> shorts;
  for (const auto& [name, t] : *params) {
    attached.push_back(name);
    shorts.insert(ShortName(name));
  }
  TargetSpec candidate = spec;
  candidate.target_regex.reset();
  candidate.target_modules.assign(shorts.begin(), shorts.end());
  auto selected = SelectTargets(candidate, model.LinearNames(), "lm_head");
  std::sort(attached.begin(), attached.end());
  if (selected.ok()) {
    std::sort(selected->begin(), selected->end());
    if (*selected == attached) return candidate.target_modules;
  }
  return attached;
}

absl::Status SavePeftAdapter(const LlamaModel& model, const std::string& adapter,
                             const TargetSpec& spec, const std::string& base_model_name,
                             const std::string& dir) {
  OFT_ASSIGN_OR_RETURN(auto params, model.AdapterParameters(adapter));
  OFT_ASSIGN_OR_RETURN(OftConfig oft, model.AdapterConfig(adapter));
  PeftAdapterConfig c;
  c.oft = oft;
  c.oft.init_weights = true;
  c.base_model_name_or_path = base_model_name;
  c.targets = spec;
  c.targets.target_regex.reset();
  c.targets.target_modules = ExplicitTargetModules(model, adapter, spec);
  if (c.targets.target_modules.size() == params.size() && !params.empty() &&
      c.targets.target_modules.front().find('.') != std::string::npos) {
    c.targets.layers_to_transform.clear();  // full names already pin the layers
    c.targets.layers_pattern.reset();
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", dir, ": ", ec.message()));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  OFT_RETURN_IF_ERROR(TorchCall("SavePeftAdapter", [&] {
    for (const auto& [name, t] : params) {
      tensors.emplace_back(absl::StrCat(kKeyPrefix, name, kKeySuffix),
                           t.detach().to(at::kCPU, at::kFloat).contiguous());
    }
  }));
  OFT_RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / kAdapterWeightsFile).string(), tensors,
                                       {{"format", "pt"}}));
  return WriteFileAtomic((fs::path(dir) / kAdapterConfigFile).string(), AdapterConfigToJson(c));
}

absl::StatusOr<PeftAdapterFiles> ReadPeftAdapterFiles(const std::string& dir) {
  const std::string cfg_path = (fs::path(dir) / kAdapterConfigFile).string();
  OFT_ASSIGN_OR_RETURN(std::string text, ReadFile(cfg_path, 1 << 20));
  PeftAdapterFiles files;
  OFT_ASSIGN_OR_RETURN(files.config, ParseAdapterConfig(text, cfg_path));
  const std::string w_path = (fs::path(dir) / kAdapterWeightsFile).string();
  OFT_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(w_path));
  for (const auto& key : file->names()) {
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(w_path, ": tensor \"", Echo(key), "\" ", what));
    };
    if (key.find(".oft_r.") != std::string::npos) {
      return bad("is in the PEFT <= 0.15 OFT format (oft_r); retrain or convert it with PEFT >= 0.18");
    }
    const std::string prefix = kKeyPrefix, suffix = kKeySuffix;
    if (key.size() <= prefix.size() + suffix.size() || key.compare(0, prefix.size(), prefix) != 0 ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) {
      return bad("is unexpected (expected base_model.model.<module>.oft_R.weight)");
    }
    OFT_ASSIGN_OR_RETURN(const SafetensorsTensorInfo* info, file->Info(key));
    switch (info->dtype) {
      case SafetensorsDtype::kF32:
      case SafetensorsDtype::kF16:
      case SafetensorsDtype::kBF16:
      case SafetensorsDtype::kF64:
        break;
      default:
        return bad(absl::StrCat("has dtype ", SafetensorsDtypeName(info->dtype),
                                "; oft_R weights are floating point (F32, F16, BF16 or F64)"));
    }
    OFT_ASSIGN_OR_RETURN(at::Tensor t, file->Tensor(key));
    bool finite = true;
    OFT_RETURN_IF_ERROR(TorchCall("ReadPeftAdapterFiles", [&] { finite = at::isfinite(t).all().item<bool>(); }));
    if (!finite) return bad("holds NaN or Inf values");
    files.packed[key.substr(prefix.size(), key.size() - prefix.size() - suffix.size())] = std::move(t);
  }
  return files;
}

absl::StatusOr<PeftAdapterConfig> LoadPeftAdapter(LlamaModel& model, const std::string& dir,
                                                  const std::string& adapter) {
  OFT_ASSIGN_OR_RETURN(PeftAdapterFiles files, ReadPeftAdapterFiles(dir));
  const PeftAdapterConfig& cfg = files.config;
  const std::string w_path = (fs::path(dir) / kAdapterWeightsFile).string();
  std::map<std::string, at::Tensor>& module_to_tensor = files.packed;
  OFT_RETURN_IF_ERROR(model.AddAdapter(adapter, cfg.oft, cfg.targets));
  auto fail = [&](absl::Status s) {
    model.RemoveAdapter(adapter).IgnoreError();
    return s;
  };
  auto params = model.AdapterParameters(adapter);
  if (!params.ok()) return fail(params.status());
  for (auto& [module, param] : *params) {
    auto it = module_to_tensor.find(module);
    if (it == module_to_tensor.end()) {
      return fail(absl::InvalidArgumentError(absl::StrCat(
          w_path, ": no tensor for targeted module ", module, " (expected ", kKeyPrefix, module, kKeySuffix, ")")));
    }
    const at::Tensor& t = it->second;
    if (t.sizes() != param.sizes()) {
      return fail(absl::InvalidArgumentError(absl::StrCat(
          w_path, ": tensor \"", kKeyPrefix, module, kKeySuffix, "\" has shape ", c10::str(t.sizes()),
          " but the config gives ", c10::str(param.sizes()), " for ", module,
          " (r / oft_block_size / block_share mismatch?)")));
    }
    auto s = TorchCall("LoadPeftAdapter", [&] {
      at::NoGradGuard ng;
      param.copy_(t);
    });
    if (!s.ok()) return fail(s);
    module_to_tensor.erase(it);
  }
  if (!module_to_tensor.empty()) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        w_path, ": tensor for module ", module_to_tensor.begin()->first,
        " which the adapter config does not target or the model does not have")));
  }
  return cfg;
}

absl::Status ExportMergedModel(const LlamaModel& model, const std::string& adapter,
                               const std::string& out_dir, at::ScalarType dtype,
                               const std::string& tokenizer_dir) {
  OFT_ASSIGN_OR_RETURN(auto params, model.AdapterParameters(adapter));
  auto& m = const_cast<LlamaModel&>(model);
  if (model.config().tie_word_embeddings && params.count("lm_head")) {
    return absl::FailedPreconditionError("cannot merge an adapter on lm_head into tied embeddings");
  }
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  OFT_RETURN_IF_ERROR(TorchCall("ExportMergedModel", [&] {
    at::NoGradGuard ng;
    for (const auto& [name, t] : model.BaseTensors()) {
      at::Tensor out = t;
      const std::string module = name.size() > 7 && name.substr(name.size() - 7) == ".weight"
                                     ? name.substr(0, name.size() - 7)
                                     : "";
      if (!module.empty() && params.count(module)) {
        OftRotation* rot = m.Linear(module)->Rotation(adapter);
        auto blocks = rot->EvalBlocks().to(at::kFloat);
        // W R^T, block by block: W[:, i] <- W[:, i] R_i^T.
        out = BlockRotate(t.to(at::kFloat), blocks.transpose(1, 2).contiguous());
      }
      tensors.emplace_back(name, out.to(at::kCPU, dtype).contiguous());
    }
  }));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", out_dir, ": ", ec.message()));
  OFT_RETURN_IF_ERROR(WriteSafetensors((fs::path(out_dir) / "model.safetensors").string(), tensors,
                                       {{"format", "pt"}}));
  ModelConfig cfg = model.config();
  cfg.torch_dtype = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  OFT_RETURN_IF_ERROR(WriteFileAtomic((fs::path(out_dir) / "config.json").string(), ToJson(cfg)));
  if (!tokenizer_dir.empty()) {
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                          "generation_config.json"}) {
      const fs::path src = fs::path(tokenizer_dir) / f;
      if (!fs::exists(src)) continue;
      OFT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(src.string()));
      OFT_RETURN_IF_ERROR(WriteFileAtomic((fs::path(out_dir) / f).string(), bytes));
    }
  }
  return absl::OkStatus();
}

}  // namespace oft
