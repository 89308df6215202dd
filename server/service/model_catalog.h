// The base models this server trains on and serves (--model=NAME=DIR), read once at
// start-up from each directory's config.json and tokenizer_config.json (no weights).
// Immutable after Create: thread-safe.
#ifndef OFT_SERVER_SERVICE_MODEL_CATALOG_H_
#define OFT_SERVER_SERVICE_MODEL_CATALOG_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "oft/v1/models.pb.h"
#include "server/model/hf_config.h"

namespace oft {

struct CatalogModel {
  std::string name;
  std::string dir;
  ModelConfig config;
  std::optional<std::string> chat_template;  // built-in template name; nullopt = none found
  // Why there is none when the model ships a template that is not a built-in one (the
  // detection error: the known names and how to name one); empty otherwise.
  std::string chat_template_problem;
  oft::v1::BaseModel info;                   // what ListBaseModels reports
};

class ModelCatalog {
 public:
  // `models`: name -> HF model directory. `chat_templates`: model name -> built-in chat
  // template name (--chat_template), which replaces detection from the model's files
  // (DetectTemplateInDir). Errors: INVALID_ARGUMENT (bad name, no models, an unknown
  // template name or a template for a model not configured), NOT_FOUND / INVALID_ARGUMENT
  // from reading a config.json (naming the directory).
  static absl::StatusOr<ModelCatalog> Create(
      const std::map<std::string, std::string>& models,
      const std::map<std::string, std::string>& chat_templates = {});

  // nullptr when unknown.
  const CatalogModel* Find(const std::string& name) const;
  // By name.
  const std::vector<CatalogModel>& models() const { return models_; }
  // Comma-separated names, for error messages.
  std::string Names() const;

 private:
  std::vector<CatalogModel> models_;
};

// Parameters of a Llama-family model with `config` (embeddings and biases included).
int64_t ParameterCount(const ModelConfig& config);

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_MODEL_CATALOG_H_
