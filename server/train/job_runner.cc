#include "server/train/job_runner.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/runtime.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/data/chat_template.h"
#include "server/data/dataset.h"
#include "server/model/hf_config.h"
#include "server/model/llama.h"
#include "server/model/tokenizer.h"
#include "server/train/block_plan.h"
#include "server/train/precision.h"
#include "server/train/trainer.h"

#include <unistd.h>

#include <fstream>
#include <optional>

#include "c10/core/DeviceGuard.h"

#if defined(OFT_WITH_CUDA)
#include "c10/cuda/CUDACachingAllocator.h"
#include "cuda_runtime_api.h"
#endif

namespace oft {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Status payload carrying "<REASON>\n<field>" for ClassifyFailure.
constexpr char kFailurePayloadUrl[] = "type.googleapis.com/oft.internal.FailureReason";

// Tags `status` with a failure reason (and field) unless it is OK or already tagged.
absl::Status Tag(absl::Status status, absl::string_view reason, absl::string_view field = "") {
  if (status.ok() || status.GetPayload(kFailurePayloadUrl).has_value()) return status;
  status.SetPayload(kFailurePayloadUrl, absl::Cord(absl::StrCat(reason, "\n", field)));
  return status;
}

bool IsDiskFull(const absl::Status& s) {
  return absl::StrContains(s.message(), "No space left on device") ||
         absl::StrContains(s.message(), "Disk quota exceeded") ||
         absl::StrContains(s.message(), "ENOSPC");
}

// File-system failures while writing: DISK_FULL when the disk is full, else `reason`.
absl::Status TagIo(absl::Status status, absl::string_view reason) {
  if (IsDiskFull(status)) return Tag(std::move(status), "DISK_FULL");
  if (absl::IsResourceExhausted(status)) return Tag(std::move(status), "OUT_OF_MEMORY");
  return Tag(std::move(status), reason);
}

absl::Status Prefixed(const absl::Status& s, absl::string_view prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

// An INVALID_ARGUMENT from CheckTrainingJob, tagged with the field the message starts with.
absl::Status FieldError(absl::StatusCode code, absl::string_view field, absl::string_view text,
                        absl::string_view reason = "INVALID_ARGUMENT") {
  return Tag(absl::Status(code, absl::StrCat(field, ": ", text)), reason, field);
}

// The first word of a validation message is the field it names ("batch_size must be ...").
std::string LeadingField(absl::string_view message) {
  const size_t end = message.find_first_of(" :");
  return std::string(message.substr(0, end));
}

// PEFT's default target modules for Llama-family models.
TargetSpec EffectiveTargets(const TargetSpec& spec) {
  TargetSpec t = spec;
  if (t.target_modules.empty() && !t.target_regex.has_value()) t.target_modules = {"q_proj", "v_proj"};
  return t;
}

std::string TargetField(const TargetSpec& spec) {
  return spec.target_regex.has_value() ? "adapter_config.target_regex"
                                       : "adapter_config.target_modules";
}

bool OnCuda(const std::string& device) { return absl::StartsWith(device, "cuda"); }

c10::Device TrainingDevice(const std::string& device) {
  return OnCuda(device) ? c10::Device(device) : c10::Device(c10::kCPU);
}

// Bytes per base weight as the trainer loads it (precision.h).
int64_t DtypeBytes(const ModelConfig& c, const std::string& device, bool bf16) {
  return TrainingBaseDtype(c, TrainingDevice(device), bf16) == at::kBFloat16 ? 2 : 4;
}


// An already published version of this job (a crash between publish and the state
// change), so a rerun does not publish twice. A store that cannot list (e.g. a damaged
// manifest of another adapter) must not block training: treated as "not published".
std::optional<AdapterManifest> FindPublished(const TrainingJob& job, const AdapterStore& store) {
  absl::StatusOr<std::vector<AdapterManifest>> all = store.List(job.tenant);
  if (!all.ok()) return std::nullopt;
  for (AdapterManifest& m : *all) {
    if (m.job_id == job.job_id && m.name == job.output_adapter_name) return std::move(m);
  }
  return std::nullopt;
}

TrainMetrics MetricsFromManifest(const AdapterManifest& m) {
  TrainMetrics t;
  auto get = [&](const char* k, double def) {
    auto it = m.metrics.find(k);
    return it == m.metrics.end() ? def : it->second;
  };
  t.steps_completed = static_cast<int64_t>(get("steps", 0));
  t.total_steps = static_cast<int64_t>(get("total_steps", t.steps_completed));
  t.final_loss = get("loss", 0);
  t.last_eval_loss = get("eval_loss", -1);
  t.best_eval_loss = get("best_eval_loss", -1);
  t.tokens_trained = static_cast<int64_t>(get("tokens", 0));
  t.seconds = get("train_seconds", 0);
  return t;
}

absl::StatusOr<TrainingJobResult> RunTrainingJobImpl(const TrainingJob& job, AdapterStore* store,
                                                     const EventSink& on_event,
                                                     const std::atomic<bool>* stop,
                                                     Collective* collective) {
  if (store == nullptr) {
    return Tag(absl::InvalidArgumentError("RunTrainingJob: store is null"), "INTERNAL");
  }
  if (job.work_dir.empty()) {
    return Tag(absl::InvalidArgumentError("RunTrainingJob: work_dir is empty"), "INTERNAL");
  }
  OFT_ASSIGN_OR_RETURN(JobCheckResult check, CheckTrainingJob(job, job.device_memory_bytes));

  // Published already (the previous attempt crashed after Publish): report that version.
  if (std::optional<AdapterManifest> published = FindPublished(job, *store)) {
    return TrainingJobResult{MetricsFromManifest(*published), *std::move(published)};
  }
  if (stop != nullptr && stop->load()) {
    return absl::CancelledError("training cancelled before it started");
  }

  ConfigureCpuRuntime(std::max(1, job.train_threads));  // torch intra-op threads (process-wide)

  // ---- model and tokenizer ----
  absl::StatusOr<ModelConfig> config = LoadModelConfig(job.model_dir);
  if (!config.ok()) return Tag(config.status(), "BASE_MODEL_UNAVAILABLE", "base_model");
  absl::StatusOr<std::string> config_sha = Sha256File(job.model_dir + "/config.json");
  if (!config_sha.ok()) return Tag(config_sha.status(), "BASE_MODEL_UNAVAILABLE", "base_model");
  LoadOptions lo;
  lo.device = job.device;
  lo.dtype = TrainingBaseDtype(*config, TrainingDevice(job.device), job.options.bf16_autocast);
  lo.quantize_nf4 = job.quantize_base_nf4;
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(job.model_dir, lo);
  if (!model.ok()) {
    if (absl::IsResourceExhausted(model.status())) return Tag(model.status(), "OUT_OF_MEMORY");
    return Tag(model.status(), "BASE_MODEL_UNAVAILABLE", "base_model");
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::FromFile(job.model_dir + "/tokenizer.json");
  if (!tokenizer.ok()) return Tag(tokenizer.status(), "BASE_MODEL_UNAVAILABLE", "base_model");

  TrainerParams p;
  p.model = model->get();
  p.tokenizer = tokenizer->get();
  p.adapter = job.adapter;
  p.targets = EffectiveTargets(job.targets);
  p.adapter_name = "default";
  p.options = job.options;
  if (job.valid_path.empty()) p.options.eval_fraction = job.validation_fraction;
  p.checkpoint_dir = (fs::path(job.work_dir) / "checkpoints").string();
  p.base_model_name = job.base_model_name;
  p.collective = collective;

  // ---- data ----
  for (const std::string& path : job.train_paths) {
    absl::StatusOr<std::vector<Example>> rows = ParseJsonlFile(path);
    if (!rows.ok()) {
      if (absl::IsResourceExhausted(rows.status())) return Tag(rows.status(), "OUT_OF_MEMORY");
      return Tag(Prefixed(rows.status(), absl::StrCat("training data ", path, ": ")),
                 "DATASET_INVALID", "training_dataset_ids");
    }
    for (Example& e : *rows) p.train.push_back(std::move(e));
  }
  if (!job.valid_path.empty()) {
    absl::StatusOr<std::vector<Example>> rows = ParseJsonlFile(job.valid_path);
    if (!rows.ok()) {
      if (absl::IsResourceExhausted(rows.status())) return Tag(rows.status(), "OUT_OF_MEMORY");
      return Tag(Prefixed(rows.status(), "validation data: "), "DATASET_INVALID",
                 "validation_dataset_id");
    }
    p.valid = std::move(*rows);
  }
  {
    bool has_chat = false;
    for (const auto* rows : {&p.train, &p.valid}) {
      for (const Example& e : *rows) has_chat = has_chat || e.format == RowFormat::kChat;
    }
    absl::StatusOr<ChatTemplateKind> kind =
        ResolveTrainingTemplate(job.chat_template, job.model_dir, has_chat);
    if (!kind.ok()) return Tag(kind.status(), "INVALID_ARGUMENT", "chat_template");
    p.chat_template = *kind;
  }

  // ---- train ----
  absl::StatusOr<std::unique_ptr<Trainer>> trainer = Trainer::Create(std::move(p));
  if (!trainer.ok()) {
    const absl::Status& s = trainer.status();
    if (absl::IsResourceExhausted(s)) return Tag(s, "OUT_OF_MEMORY");
    if (absl::IsNotFound(s)) return Tag(s, "INVALID_ARGUMENT", TargetField(job.targets));
    if (absl::IsInvalidArgument(s) &&
        (absl::StrContains(s.message(), "line ") || absl::StrContains(s.message(), "rows"))) {
      return Tag(s, "DATASET_INVALID", "training_dataset_ids");
    }
    return Tag(s, absl::IsInvalidArgument(s) ? "INVALID_ARGUMENT" : "INTERNAL");
  }
  if (on_event) {
    for (const std::string& w : check.warnings) {
      TrainEvent e;
      e.kind = TrainEvent::Kind::kWarning;
      e.warning = WarningCode::kBlockSizeAdjusted;  // CheckTrainingJob's only warnings
      e.message = w;
      e.total_steps = (*trainer)->total_steps();
      on_event(e);
    }
  }
  absl::Status run = (*trainer)->Run(on_event, stop);
  if (absl::IsCancelled(run)) return run;
  if (!run.ok()) {
    if (IsDiskFull(run)) return Tag(run, "DISK_FULL");
    if (absl::IsResourceExhausted(run)) return Tag(run, "OUT_OF_MEMORY");
    if (absl::IsInternal(run) && absl::StrContains(run.message(), "non-finite")) {
      return Tag(run, "TRAINING_DIVERGED");
    }
    if (absl::IsFailedPrecondition(run) || absl::IsDataLoss(run) ||
        absl::StrContains(run.message(), "checkpoint")) {
      return Tag(run, "CHECKPOINT_CORRUPT");
    }
    return Tag(run, "INTERNAL");
  }

  // ---- publish (rank 0 only) ----
  const TrainMetrics& m = (*trainer)->metrics();
  if (collective != nullptr && collective->rank() != 0) return TrainingJobResult{m, {}};
  const fs::path staging = fs::path(job.work_dir) / "staging";
  std::error_code ec;
  fs::remove_all(staging, ec);
  OFT_RETURN_IF_ERROR(TagIo((*trainer)->SaveAdapter(staging.string()), "PUBLISH_FAILED"));
  PublishInfo info;
  info.job_id = job.job_id;
  info.base_model = job.base_model_name;
  info.base_model_config_sha256 = *config_sha;
  info.hyperparameters_json = job.hyperparameters_json.empty() ? "{}" : job.hyperparameters_json;
  info.metrics["loss"] = m.final_loss;
  if (m.last_eval_loss >= 0) info.metrics["eval_loss"] = m.last_eval_loss;
  if (m.best_eval_loss >= 0) info.metrics["best_eval_loss"] = m.best_eval_loss;
  info.metrics["steps"] = static_cast<double>(m.steps_completed);
  info.metrics["total_steps"] = static_cast<double>(m.total_steps);
  info.metrics["train_seconds"] = m.seconds;
  info.metrics["tokens"] = static_cast<double>(m.tokens_trained);
  absl::StatusOr<AdapterManifest> manifest =
      store->Publish(job.tenant, job.output_adapter_name, staging.string(), info);
  if (!manifest.ok()) return TagIo(manifest.status(), "PUBLISH_FAILED");
  fs::remove_all(staging, ec);  // best effort; the version is durable
  return TrainingJobResult{m, *std::move(manifest)};
}

}  // namespace

absl::StatusOr<JobCheckResult> CheckTrainingJob(const TrainingJob& job,
                                                int64_t device_memory_bytes) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  JobCheckResult result;
  if (job.train_paths.empty()) {
    return FieldError(kInvalid, "training_dataset_ids", "at least one training dataset is required");
  }
  if (job.valid_path.empty() &&
      !(job.validation_fraction >= 0 && job.validation_fraction <= 0.5)) {
    return FieldError(kInvalid, "validation_fraction",
                      absl::StrCat("must be in [0, 0.5], got ", job.validation_fraction));
  }
  if (job.output_adapter_name.empty()) {
    return FieldError(kInvalid, "output_adapter_name", "must not be empty");
  }

  // Hyperparameters.
  TrainOptions options = job.options;
  if (job.valid_path.empty()) options.eval_fraction = job.validation_fraction;
  if (absl::Status s = options.Validate(); !s.ok()) {
    const std::string field = absl::StrCat("hyperparameters.", LeadingField(s.message()));
    return Tag(Prefixed(s, "hyperparameters."), "INVALID_ARGUMENT", field);
  }
  if (options.eval_every > 0 && job.valid_path.empty() && job.validation_fraction == 0) {
    return FieldError(kInvalid, "hyperparameters.eval_every",
                      "evaluation needs validation data (a validation dataset or "
                      "validation_fraction > 0)");
  }

  // Adapter config.
  if (absl::Status s = job.adapter.Validate(); !s.ok()) {
    const std::string field = absl::StrCat("adapter_config.", LeadingField(s.message()));
    return Tag(Prefixed(s, "adapter_config."), "INVALID_ARGUMENT", field);
  }
  if (job.adapter.bias != OftBias::kNone) {
    return FieldError(kInvalid, "adapter_config.bias",
                      absl::StrCat("only BIAS_NONE can be trained, got ", OftBiasName(job.adapter.bias)));
  }
  const TargetSpec targets = EffectiveTargets(job.targets);
  if (absl::Status s = ValidateTargetSpec(targets); !s.ok()) {
    const std::string field = absl::StrCat("adapter_config.", LeadingField(s.message()));
    return Tag(Prefixed(s, "adapter_config."), "INVALID_ARGUMENT", field);
  }

  // The base model's shape (config.json only).
  absl::StatusOr<ModelConfig> config = LoadModelConfig(job.model_dir);
  if (!config.ok()) {
    return Tag(absl::FailedPreconditionError(absl::StrCat(
                   "base_model: the base model \"", job.base_model_name,
                   "\" cannot be read: ", config.status().message())),
               "BASE_MODEL_UNAVAILABLE", "base_model");
  }
  const ModelConfig& c = *config;
  const std::map<std::string, int64_t> linears = LinearInputs(c);
  std::vector<std::string> names;
  for (const auto& [name, in] : linears) names.push_back(name);
  absl::StatusOr<std::vector<std::string>> selected = SelectTargets(targets, names, "lm_head");
  if (!selected.ok()) {
    return FieldError(kInvalid, TargetField(job.targets),
                      absl::StrCat("selects no module of the base model (",
                                   selected.status().message(), ")"));
  }

  // Block layouts (PEFT's divisor rule); one warning per adjusted input width.
  const std::string block_field =
      job.adapter.r != 0 ? "adapter_config.r" : "adapter_config.oft_block_size";
  absl::StatusOr<BlockPlan> plan = PlanBlocks(job.adapter, *selected, linears, "adapter_config.");
  if (!plan.ok()) return FieldError(kInvalid, block_field, plan.status().message());
  const int64_t adapter_params = plan->adapter_params;
  const int64_t rotated_inputs = plan->rotated_inputs;  // activations the rotations touch
  result.warnings = plan->warnings;

  // Memory estimate (rough, on the high side): weights + adapter training state +
  // activations of one micro-batch + logits.
  const int64_t wbytes = DtypeBytes(c, job.device, options.bf16_autocast);
  const int64_t q_out = c.num_attention_heads * c.head_dim;
  const int64_t kv_out = c.num_key_value_heads * c.head_dim;
  const int64_t per_layer_linear = c.hidden_size * (q_out + 2 * kv_out) + q_out * c.hidden_size +
                                   3 * c.hidden_size * c.intermediate_size;
  const int64_t embed = c.vocab_size * c.hidden_size;
  const double linear_bytes_per_param = job.quantize_base_nf4 ? 0.5 + 4.0 / 64 : wbytes;
  const double base = static_cast<double>(per_layer_linear * c.num_hidden_layers) *
                          linear_bytes_per_param +
                      static_cast<double>(embed * (c.tie_word_embeddings ? 1 : 2)) * wbytes +
                      static_cast<double>((2 * c.num_hidden_layers + 1) * c.hidden_size) * wbytes;
  // fp32 parameter, gradient, two AdamW moments and a best-adapter copy.
  const double adapter = static_cast<double>(adapter_params) * 4 * 5;
  const double act_bytes = OnCuda(job.device) && options.bf16_autocast ? 2 : 4;
  const double tokens = static_cast<double>(options.batch_size) * options.max_seq_len;
  // SDPA keeps no [T, T] probabilities for backward; count the attention mask once and one
  // layer's transient scores (the CPU math fallback materialises them).
  const double mask = static_cast<double>(options.batch_size) * options.max_seq_len *
                      options.max_seq_len * 4;
  const double scores = static_cast<double>(options.batch_size) * c.num_attention_heads *
                        options.max_seq_len * options.max_seq_len * act_bytes;
  // Saved per layer: norms, q/k/v/o, attention output, MLP (gate, up, act, product).
  const double per_layer_act =
      tokens * (6.0 * c.hidden_size + q_out + 2.0 * kv_out + 4.0 * c.intermediate_size);
  const double rotated = tokens * static_cast<double>(rotated_inputs);  // OFT rotated inputs
  double activations = mask + scores;
  if (options.activation_checkpointing) {
    activations += (tokens * c.hidden_size * c.num_hidden_layers + per_layer_act +
                    rotated / std::max<int64_t>(1, c.num_hidden_layers)) * act_bytes;
  } else {
    activations += (per_layer_act * c.num_hidden_layers + rotated) * act_bytes;
  }
  const double logits = tokens * static_cast<double>(c.vocab_size) * 4 * 3;
  const double total = (base + adapter + activations + logits) * 1.1;
  result.estimated_memory_bytes = static_cast<int64_t>(std::ceil(total));
  if (device_memory_bytes > 0 && result.estimated_memory_bytes > device_memory_bytes) {
    return FieldError(
        absl::StatusCode::kFailedPrecondition, "hyperparameters.batch_size",
        absl::StrCat("training needs about ", result.estimated_memory_bytes >> 20, " MiB on ",
                     job.device, " but ", device_memory_bytes >> 20,
                     " MiB are available; lower hyperparameters.batch_size or max_seq_len, "
                     "enable activation_checkpointing or quantize_base_nf4"),
        "OUT_OF_MEMORY");
  }
  return result;
}

absl::StatusOr<TrainingJobResult> RunTrainingJob(const TrainingJob& job, AdapterStore* store,
                                                 const EventSink& on_event,
                                                 const std::atomic<bool>* stop,
                                                 Collective* collective) {
  absl::StatusOr<TrainingJobResult> r = TorchCall("RunTrainingJob", [&]() {
    // The worker thread running this job targets the job's GPU for every op and allocation
    // that does not name a device (streams, cuBLAS handles, new tensors).
    std::optional<c10::DeviceGuard> device_guard;
    if (OnCuda(job.device)) device_guard.emplace(c10::Device(job.device));
    return RunTrainingJobImpl(job, store, on_event, stop, collective);
  });
  // The job's tensors are gone: hand the allocator's cached blocks back to the device.
  ReleaseCachedDeviceMemory(job.device);
  if (!r.ok() && !absl::IsCancelled(r.status())) {
    // Exceptions converted by TorchCall carry no tag yet.
    absl::Status s = r.status();
    if (absl::IsResourceExhausted(s) && !IsDiskFull(s)) return Tag(std::move(s), "OUT_OF_MEMORY");
    return Tag(std::move(s), ClassifyFailure(s).reason);
  }
  return r;
}

absl::Status WithFailureReason(absl::Status status, absl::string_view reason, absl::string_view field) {
  return Tag(std::move(status), reason, field);
}

TrainingFailure ClassifyFailure(const absl::Status& status) {
  TrainingFailure info;
  info.message = std::string(status.message());
  if (auto tag = status.GetPayload(kFailurePayloadUrl); tag.has_value()) {
    std::vector<std::string> parts = absl::StrSplit(std::string(*tag), absl::MaxSplits('\n', 1));
    info.reason = parts[0];
    if (parts.size() > 1) info.field = parts[1];
    if (!info.reason.empty()) return info;
  }
  if (IsDiskFull(status)) {
    info.reason = "DISK_FULL";
  } else if (absl::IsResourceExhausted(status)) {
    info.reason = "OUT_OF_MEMORY";
  } else if (absl::IsInternal(status) && absl::StrContains(status.message(), "non-finite")) {
    info.reason = "TRAINING_DIVERGED";
  } else if (absl::IsInvalidArgument(status)) {
    info.reason = "INVALID_ARGUMENT";
  } else {
    info.reason = "INTERNAL";
  }
  return info;
}

namespace {

// "cuda:N" -> N; -1 for anything else.
int CudaIndex(const std::string& device) {
  if (device.rfind("cuda", 0) != 0) return -1;
  if (device == "cuda") return 0;
  if (device.size() < 6 || device[4] != ':') return -1;
  int index = 0;
  for (size_t i = 5; i < device.size(); ++i) {
    if (device[i] < '0' || device[i] > '9') return -1;
    index = index * 10 + (device[i] - '0');
  }
  return index;
}

}  // namespace

int64_t DeviceTotalMemoryBytes(const std::string& device) {
  if (device == "cpu") {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
  }
#if defined(OFT_WITH_CUDA)
  const int index = CudaIndex(device);
  int count = 0;
  if (index < 0 || cudaGetDeviceCount(&count) != cudaSuccess || index >= count) return 0;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) return 0;
  return static_cast<int64_t>(prop.totalGlobalMem);
#else
  return 0;
#endif
}

int64_t DeviceMemoryInUseBytes(const std::string& device) {
  if (device == "cpu") {
    std::ifstream statm("/proc/self/statm");
    int64_t size = 0, resident = 0;
    statm >> size >> resident;
    return resident * sysconf(_SC_PAGESIZE);
  }
#if defined(OFT_WITH_CUDA)
  const int index = CudaIndex(device);
  int count = 0;
  if (index < 0 || cudaGetDeviceCount(&count) != cudaSuccess || index >= count) return 0;
  // Before anything initialised CUDA (e.g. --serving_device=cpu and no job ran yet) the
  // allocator has no per-device state and getDeviceStats throws: nothing is in use then.
  try {
    c10::cuda::CUDACachingAllocator::CUDAAllocator* allocator =
        c10::cuda::CUDACachingAllocator::get();
    if (allocator == nullptr || !allocator->initialized()) return 0;
    const auto stats = allocator->getDeviceStats(static_cast<c10::DeviceIndex>(index));
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
        .current;
  } catch (const std::exception&) {
    return 0;
  }
#else
  return 0;
#endif
}

void ReleaseCachedDeviceMemory(const std::string& device) {
  if (CudaIndex(device) >= 0) ReleaseCachedCudaMemory();
}

}  // namespace oft
