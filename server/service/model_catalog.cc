#include "server/service/model_catalog.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/file_util.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"
#include "server/data/chat_template.h"

namespace oft {

int64_t ParameterCount(const ModelConfig& c) {
  const int64_t h = c.hidden_size, hd = c.head_dim > 0 ? c.head_dim : h / c.num_attention_heads;
  const int64_t q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  const int64_t i = c.intermediate_size;
  int64_t per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
  if (c.attention_bias) per_layer += q + 2 * kv;
  if (c.o_proj_bias) per_layer += h;
  if (c.mlp_bias) per_layer += 2 * i + h;
  int64_t total = c.vocab_size * h + c.num_hidden_layers * per_layer + h;
  if (!c.tie_word_embeddings) total += c.vocab_size * h;
  return total;
}

absl::StatusOr<ModelCatalog> ModelCatalog::Create(
    const std::map<std::string, std::string>& models,
    const std::map<std::string, std::string>& chat_templates) {
  if (models.empty()) return absl::InvalidArgumentError("no base model configured (--model)");
  for (const auto& [name, tmpl] : chat_templates) {
    if (!models.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--chat_template names model '", name, "', which no --model configures"));
    }
  }
  ModelCatalog catalog;
  for (const auto& [name, dir] : models) {
    OFT_RETURN_IF_ERROR(ValidateName("--model name", name));
    CatalogModel m;
    m.name = name;
    m.dir = dir;
    absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
    if (!config.ok()) {
      return absl::Status(config.status().code(), "base model '" + name + "' (" + dir +
                                                      "): " + std::string(config.status().message()));
    }
    m.config = *config;
    if (auto named = chat_templates.find(name); named != chat_templates.end()) {
      absl::StatusOr<ChatTemplateKind> kind = ParseTemplateName(named->second);
      if (!kind.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--chat_template for model '", name,
                                                       "': ", kind.status().message()));
      }
      m.chat_template = std::string(TemplateName(*kind));
    } else if (absl::StatusOr<ChatTemplateKind> kind = DetectTemplateInDir(dir); kind.ok()) {
      m.chat_template = std::string(TemplateName(*kind));
    } else if (absl::IsInvalidArgument(kind.status())) {
      m.chat_template_problem = std::string(kind.status().message());
    }
    OFT_ASSIGN_OR_RETURN(std::string sha, Sha256File(dir + "/config.json"));
    oft::v1::BaseModel& info = m.info;
    info.set_name(name);
    info.set_architecture(m.config.architecture);
    info.set_parameter_count(ParameterCount(m.config));
    info.set_hidden_size(m.config.hidden_size);
    info.set_num_layers(m.config.num_hidden_layers);
    info.set_vocab_size(m.config.vocab_size);
    info.set_dtype(m.config.torch_dtype.empty() ? "float32" : m.config.torch_dtype);
    info.set_max_context_tokens(m.config.ContextLength());
    info.set_chat_template(m.chat_template.value_or(""));
    // PEFT's default OFT targets for Llama-family models.
    info.add_default_target_modules("q_proj");
    info.add_default_target_modules("v_proj");
    info.set_config_sha256(sha);
    catalog.models_.push_back(std::move(m));
  }
  return catalog;
}

const CatalogModel* ModelCatalog::Find(const std::string& name) const {
  for (const CatalogModel& m : models_) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

std::string ModelCatalog::Names() const {
  std::vector<std::string> names;
  for (const CatalogModel& m : models_) names.push_back(m.name);
  return absl::StrJoin(names, ", ");
}

}  // namespace oft
