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

std::string ShortName(const std::string& module) {
  const auto pos = module.rfind('.');
  return pos == std::string::npos ? module : module.substr(pos + 1);
}

}  // namespace

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
