#include "server/train/training_job_json.h"

#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"

namespace oft {
namespace {

using Json = nlohmann::json;

Json Optional(const std::optional<std::string>& v) { return v ? Json(*v) : Json(nullptr); }

// Reads `key` of `j` into `out`, INVALID_ARGUMENT naming it when absent or mistyped.
template <typename T>
absl::Status Read(const Json& j, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end()) return absl::InvalidArgumentError(absl::StrCat("training job: ", key, " is missing"));
  try {
    *out = it->get<T>();
  } catch (const Json::exception&) {
    return absl::InvalidArgumentError(absl::StrCat("training job: ", key, " has the wrong type"));
  }
  return absl::OkStatus();
}

absl::Status ReadOptional(const Json& j, const char* key, std::optional<std::string>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    out->reset();
    return absl::OkStatus();
  }
  if (!it->is_string()) return absl::InvalidArgumentError(absl::StrCat("training job: ", key, " has the wrong type"));
  *out = it->get<std::string>();
  return absl::OkStatus();
}

}  // namespace

std::string TrainingJobToJson(const TrainingJob& job) {
  Json j;
  j["job_id"] = job.job_id;
  j["tenant"] = job.tenant;
  j["base_model_name"] = job.base_model_name;
  j["model_dir"] = job.model_dir;
  j["device"] = job.device;
  j["device_memory_bytes"] = job.device_memory_bytes;
  j["train_threads"] = job.train_threads;
  j["train_paths"] = job.train_paths;
  j["valid_path"] = job.valid_path;
  j["validation_fraction"] = job.validation_fraction;
  const OftConfig& a = job.adapter;
  j["adapter"] = {{"r", a.r},
                  {"oft_block_size", a.oft_block_size},
                  {"use_cayley_neumann", a.use_cayley_neumann},
                  {"num_cayley_neumann_terms", a.num_cayley_neumann_terms},
                  {"block_share", a.block_share},
                  {"coft", a.coft},
                  {"eps", a.eps},
                  {"module_dropout", a.module_dropout},
                  {"bias", static_cast<int>(a.bias)},
                  {"init_weights", a.init_weights}};
  const TargetSpec& t = job.targets;
  j["targets"] = {{"target_modules", t.target_modules},
                  {"target_regex", Optional(t.target_regex)},
                  {"exclude_modules", t.exclude_modules},
                  {"exclude_regex", Optional(t.exclude_regex)},
                  {"layers_to_transform", t.layers_to_transform},
                  {"layers_pattern", Optional(t.layers_pattern)}};
  j["quantize_base_nf4"] = job.quantize_base_nf4;
  j["chat_template"] = Optional(job.chat_template);
  j["options"] = Json::parse(TrainOptionsToJson(job.options));
  j["work_dir"] = job.work_dir;
  j["output_adapter_name"] = job.output_adapter_name;
  j["hyperparameters_json"] = job.hyperparameters_json;
  return j.dump();
}

absl::StatusOr<TrainingJob> TrainingJobFromJson(absl::string_view text) {
  const Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("training job: not a JSON object");
  TrainingJob job;
  OFT_RETURN_IF_ERROR(Read(j, "job_id", &job.job_id));
  OFT_RETURN_IF_ERROR(Read(j, "tenant", &job.tenant));
  OFT_RETURN_IF_ERROR(Read(j, "base_model_name", &job.base_model_name));
  OFT_RETURN_IF_ERROR(Read(j, "model_dir", &job.model_dir));
  OFT_RETURN_IF_ERROR(Read(j, "device", &job.device));
  OFT_RETURN_IF_ERROR(Read(j, "device_memory_bytes", &job.device_memory_bytes));
  OFT_RETURN_IF_ERROR(Read(j, "train_threads", &job.train_threads));
  OFT_RETURN_IF_ERROR(Read(j, "train_paths", &job.train_paths));
  OFT_RETURN_IF_ERROR(Read(j, "valid_path", &job.valid_path));
  OFT_RETURN_IF_ERROR(Read(j, "validation_fraction", &job.validation_fraction));
  Json a, t, options;
  OFT_RETURN_IF_ERROR(Read(j, "adapter", &a));
  OFT_RETURN_IF_ERROR(Read(a, "r", &job.adapter.r));
  OFT_RETURN_IF_ERROR(Read(a, "oft_block_size", &job.adapter.oft_block_size));
  OFT_RETURN_IF_ERROR(Read(a, "use_cayley_neumann", &job.adapter.use_cayley_neumann));
  OFT_RETURN_IF_ERROR(Read(a, "num_cayley_neumann_terms", &job.adapter.num_cayley_neumann_terms));
  OFT_RETURN_IF_ERROR(Read(a, "block_share", &job.adapter.block_share));
  OFT_RETURN_IF_ERROR(Read(a, "coft", &job.adapter.coft));
  OFT_RETURN_IF_ERROR(Read(a, "eps", &job.adapter.eps));
  OFT_RETURN_IF_ERROR(Read(a, "module_dropout", &job.adapter.module_dropout));
  int bias = 0;
  OFT_RETURN_IF_ERROR(Read(a, "bias", &bias));
  if (bias < 0 || bias > static_cast<int>(OftBias::kOftOnly)) {
    return absl::InvalidArgumentError("training job: adapter.bias is out of range");
  }
  job.adapter.bias = static_cast<OftBias>(bias);
  OFT_RETURN_IF_ERROR(Read(a, "init_weights", &job.adapter.init_weights));
  OFT_RETURN_IF_ERROR(Read(j, "targets", &t));
  OFT_RETURN_IF_ERROR(Read(t, "target_modules", &job.targets.target_modules));
  OFT_RETURN_IF_ERROR(ReadOptional(t, "target_regex", &job.targets.target_regex));
  OFT_RETURN_IF_ERROR(Read(t, "exclude_modules", &job.targets.exclude_modules));
  OFT_RETURN_IF_ERROR(ReadOptional(t, "exclude_regex", &job.targets.exclude_regex));
  OFT_RETURN_IF_ERROR(Read(t, "layers_to_transform", &job.targets.layers_to_transform));
  OFT_RETURN_IF_ERROR(ReadOptional(t, "layers_pattern", &job.targets.layers_pattern));
  OFT_RETURN_IF_ERROR(Read(j, "quantize_base_nf4", &job.quantize_base_nf4));
  OFT_RETURN_IF_ERROR(ReadOptional(j, "chat_template", &job.chat_template));
  OFT_RETURN_IF_ERROR(Read(j, "options", &options));
  OFT_ASSIGN_OR_RETURN(job.options, TrainOptionsFromJson(options.dump()));
  OFT_RETURN_IF_ERROR(Read(j, "work_dir", &job.work_dir));
  OFT_RETURN_IF_ERROR(Read(j, "output_adapter_name", &job.output_adapter_name));
  OFT_RETURN_IF_ERROR(Read(j, "hyperparameters_json", &job.hyperparameters_json));
  return job;
}

}  // namespace oft
