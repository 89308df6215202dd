#include "server/service/job_spec.h"

#include <cctype>
#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/client_regex.h"
#include "server/jobs/job_events.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"

namespace oft {
namespace {

using oft::v1::AdapterConfig;
using oft::v1::Hyperparameters;
using oft::v1::JobSpec;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

// Prefixes a lower layer's message with the spec path of its message. Such messages start
// with the bare field name when they name one ("learning_rate must be ...", "select_best
// needs ..."): then the result reads "spec.hyperparameters.learning_rate must be ...".
absl::Status Prefixed(const absl::Status& st, absl::string_view prefix) {
  if (st.ok()) return st;
  absl::string_view msg = st.message();
  size_t n = 0;
  while (n < msg.size() && (std::islower(static_cast<unsigned char>(msg[n])) ||
                            std::isdigit(static_cast<unsigned char>(msg[n])) || msg[n] == '_')) {
    ++n;
  }
  absl::string_view rest = msg.substr(n);
  const bool names_field = n > 0 && (absl::StartsWith(rest, " must ") ||
                                     absl::StartsWith(rest, " needs "));
  return absl::Status(st.code(), absl::StrCat(prefix, names_field ? "." : ": ", msg));
}

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

}  // namespace

absl::StatusOr<ResolvedJob> ResolveJobSpec(const JobSpec& in, const ModelCatalog& catalog) {
  ResolvedJob out;
  out.spec = in;
  JobSpec& spec = out.spec;

  if (spec.base_model().empty()) return Invalid("spec.base_model", "is required");
  out.model = catalog.Find(spec.base_model());
  if (out.model == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("spec.base_model: unknown base model '", spec.base_model(),
                     "'; this server has: ", catalog.Names()));
  }
  if (spec.training_dataset_ids_size() < 1 || spec.training_dataset_ids_size() > 16) {
    return Invalid("spec.training_dataset_ids",
                   absl::StrCat("must hold 1-16 dataset ids, got ", spec.training_dataset_ids_size()));
  }
  for (int i = 0; i < spec.training_dataset_ids_size(); ++i) {
    OFT_RETURN_IF_ERROR(
        ValidateName(absl::StrCat("spec.training_dataset_ids[", i, "]"), spec.training_dataset_ids(i)));
  }
  if (spec.has_validation_dataset_id()) {
    OFT_RETURN_IF_ERROR(ValidateName("spec.validation_dataset_id", spec.validation_dataset_id()));
  }
  if (spec.has_validation_fraction()) {
    const double f = spec.validation_fraction();
    if (!(f > 0 && f <= 0.5)) {
      return Invalid("spec.validation_fraction", absl::StrCat("must be in (0, 0.5], got ", f));
    }
  }
  if (spec.output_adapter_name().empty()) return Invalid("spec.output_adapter_name", "is required");
  OFT_RETURN_IF_ERROR(ValidateName("spec.output_adapter_name", spec.output_adapter_name()));
  if (spec.priority() < -100 || spec.priority() > 100) {
    return Invalid("spec.priority", absl::StrCat("must be in [-100, 100], got ", spec.priority()));
  }
  if (spec.num_devices() == 0) spec.set_num_devices(1);
  if (spec.num_devices() < 1 || spec.num_devices() > kMaxJobDevices) {
    return Invalid("spec.num_devices",
                   absl::StrCat("must be in [1, ", kMaxJobDevices, "], got ", spec.num_devices()));
  }

  // ---- hyperparameters: fill defaults, then the trainer's own validation ----
  Hyperparameters& h = *spec.mutable_hyperparameters();
  TrainOptions& o = out.options;
  if (!h.has_learning_rate()) h.set_learning_rate(o.learning_rate);
  if (!h.has_beta1()) h.set_beta1(o.beta1);
  if (!h.has_beta2()) h.set_beta2(o.beta2);
  if (!h.has_adam_eps()) h.set_adam_eps(o.adam_eps);
  if (!h.has_weight_decay()) h.set_weight_decay(o.weight_decay);
  if (h.schedule() == Hyperparameters::SCHEDULE_UNSPECIFIED) h.set_schedule(Hyperparameters::LINEAR);
  if (!h.has_warmup_steps()) h.set_warmup_steps(o.warmup_steps);
  if (!h.has_min_lr_ratio()) h.set_min_lr_ratio(o.min_lr_ratio);
  if (!h.has_grad_accum_steps()) h.set_grad_accum_steps(o.grad_accum_steps);
  if (!h.has_max_grad_norm()) h.set_max_grad_norm(o.max_grad_norm);
  if (!h.has_batch_size()) h.set_batch_size(o.batch_size);
  const int64_t max_ctx = out.model->config.ContextLength();
  if (!h.has_max_seq_len()) h.set_max_seq_len(std::min<int64_t>(2048, max_ctx));
  if (h.max_seq_len() < 2 || h.max_seq_len() > max_ctx) {
    return Invalid("spec.hyperparameters.max_seq_len",
                   absl::StrCat("must be in [2, ", max_ctx, "] (the base model's context), got ",
                                h.max_seq_len()));
  }
  if (!h.has_pack()) h.set_pack(false);
  if (h.length_case() == Hyperparameters::LENGTH_NOT_SET) h.set_epochs(1);
  if (h.has_max_steps() && (h.max_steps() < 1 || h.max_steps() > 10'000'000)) {
    return Invalid("spec.hyperparameters.max_steps",
                   absl::StrCat("must be in [1, 10000000], got ", h.max_steps()));
  }
  if (h.has_epochs() && (h.epochs() < 1 || h.epochs() > 1000)) {
    return Invalid("spec.hyperparameters.epochs", absl::StrCat("must be in [1, 1000], got ", h.epochs()));
  }
  if (!h.has_seed()) h.set_seed(o.seed);
  if (!h.has_eval_every()) h.set_eval_every(0);
  if (!h.has_early_stopping_patience()) h.set_early_stopping_patience(0);
  if (!h.has_select_best()) h.set_select_best(false);
  if (!h.has_checkpoint_every()) h.set_checkpoint_every(o.checkpoint_every);
  if (!h.has_keep_checkpoints()) h.set_keep_checkpoints(o.keep_checkpoints);
  if (!h.has_activation_checkpointing()) h.set_activation_checkpointing(false);
  if (!h.has_bf16_autocast()) h.set_bf16_autocast(true);
  const bool has_validation = spec.validation_case() != JobSpec::VALIDATION_NOT_SET;
  if (h.eval_every() > 0 && !has_validation) {
    return Invalid("spec.hyperparameters.eval_every",
                   "needs validation data: set spec.validation_dataset_id or "
                   "spec.validation_fraction, or set eval_every to 0");
  }
  o.learning_rate = h.learning_rate();
  o.beta1 = h.beta1();
  o.beta2 = h.beta2();
  o.adam_eps = h.adam_eps();
  o.weight_decay = h.weight_decay();
  switch (h.schedule()) {
    case Hyperparameters::CONSTANT: o.schedule = LrSchedule::kConstant; break;
    case Hyperparameters::COSINE: o.schedule = LrSchedule::kCosine; break;
    case Hyperparameters::LINEAR: o.schedule = LrSchedule::kLinear; break;
    default:
      return Invalid("spec.hyperparameters.schedule", absl::StrCat("unknown value ", h.schedule()));
  }
  o.warmup_steps = h.warmup_steps();
  o.min_lr_ratio = h.min_lr_ratio();
  o.grad_accum_steps = h.grad_accum_steps();
  o.max_grad_norm = h.max_grad_norm();
  o.batch_size = h.batch_size();
  o.max_seq_len = h.max_seq_len();
  o.pack = h.pack();
  o.max_steps = h.has_max_steps() ? h.max_steps() : 0;
  o.epochs = h.has_epochs() ? h.epochs() : 0;
  o.seed = h.seed();
  o.eval_every = h.eval_every();
  o.eval_fraction = spec.has_validation_fraction() ? spec.validation_fraction() : 0.0;
  o.early_stopping_patience = h.early_stopping_patience();
  o.select_best = h.select_best();
  o.checkpoint_every = h.checkpoint_every();
  o.keep_checkpoints = h.keep_checkpoints();
  o.activation_checkpointing = h.activation_checkpointing();
  o.bf16_autocast = h.bf16_autocast();
  OFT_RETURN_IF_ERROR(Prefixed(o.Validate(), "spec.hyperparameters"));

  // ---- adapter config ----
  AdapterConfig& a = *spec.mutable_adapter_config();
  OftConfig& c = out.adapter;
  if (!a.has_r() && !a.has_oft_block_size()) {
    a.set_r(0);
    a.set_oft_block_size(32);
  } else if (!a.has_oft_block_size()) {
    a.set_oft_block_size(a.r() > 0 ? 0 : 32);
  } else if (!a.has_r()) {
    a.set_r(a.oft_block_size() > 0 ? 0 : a.r());
  }
  if (!a.has_use_cayley_neumann()) a.set_use_cayley_neumann(true);
  if (!a.has_num_cayley_neumann_terms()) a.set_num_cayley_neumann_terms(5);
  if (!a.has_block_share()) a.set_block_share(false);
  if (!a.has_coft()) a.set_coft(false);
  if (!a.has_eps()) a.set_eps(6e-5);
  if (!a.has_module_dropout()) a.set_module_dropout(0.0);
  if (a.bias() == AdapterConfig::BIAS_UNSPECIFIED) a.set_bias(AdapterConfig::BIAS_NONE);
  if (a.bias() != AdapterConfig::BIAS_NONE) {
    return Invalid("spec.adapter_config.bias", "must be BIAS_NONE (training biases is not supported)");
  }
  if (a.oft_block_size() > 1024) {
    return Invalid("spec.adapter_config.oft_block_size",
                   absl::StrCat("must be in [0, 1024], got ", a.oft_block_size()));
  }
  if (a.num_cayley_neumann_terms() > 32) {
    return Invalid("spec.adapter_config.num_cayley_neumann_terms",
                   absl::StrCat("must be in [1, 32], got ", a.num_cayley_neumann_terms()));
  }
  c.r = a.r();
  c.oft_block_size = a.oft_block_size();
  c.use_cayley_neumann = a.use_cayley_neumann();
  c.num_cayley_neumann_terms = a.num_cayley_neumann_terms();
  c.block_share = a.block_share();
  c.coft = a.coft();
  c.eps = a.eps();
  c.module_dropout = a.module_dropout();
  c.bias = OftBias::kNone;
  OFT_RETURN_IF_ERROR(Prefixed(c.Validate(), "spec.adapter_config"));
  if (a.target_modules().empty() && !a.has_target_regex()) {
    for (const std::string& t : out.model->info.default_target_modules()) a.add_target_modules(t);
  }
  TargetSpec& t = out.targets;
  for (int i = 0; i < a.target_modules_size(); ++i) {
    const std::string& m = a.target_modules(i);
    if (m.empty() || m.size() > 128) {
      return Invalid(absl::StrCat("spec.adapter_config.target_modules[", i, "]"),
                     "must be 1-128 characters");
    }
    t.target_modules.push_back(m);
  }
  if (a.has_target_regex()) {
    // Checked here first so the error names the API field (ValidateTargetSpec speaks PEFT's
    // target_modules); RE2 with size limits, so the pattern cannot hang a thread later.
    OFT_RETURN_IF_ERROR(
        ClientRegex::Compile("spec.adapter_config.target_regex", a.target_regex()).status());
    t.target_regex = a.target_regex();
  }
  for (const std::string& m : a.exclude_modules()) t.exclude_modules.push_back(m);
  for (int i = 0; i < a.layers_to_transform_size(); ++i) {
    const int64_t l = a.layers_to_transform(i);
    if (l < 0 || l >= out.model->config.num_hidden_layers) {
      return Invalid(absl::StrCat("spec.adapter_config.layers_to_transform[", i, "]"),
                     absl::StrCat("must be in [0, ", out.model->config.num_hidden_layers - 1,
                                  "] (the base model's layers), got ", l));
    }
    t.layers_to_transform.push_back(l);
  }
  if (a.has_layers_pattern()) t.layers_pattern = a.layers_pattern();
  OFT_RETURN_IF_ERROR(Prefixed(ValidateTargetSpec(t), "spec.adapter_config"));
  if (!a.has_quantize_base_nf4()) a.set_quantize_base_nf4(false);
  out.quantize_base_nf4 = a.quantize_base_nf4();
  return out;
}

absl::StatusOr<std::string> JobSpecToJson(const JobSpec& spec) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  std::string json;
  auto st = google::protobuf::util::MessageToJsonString(spec, &json, opts);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("spec cannot be stored as JSON: ", st.ToString()));
  }
  return json;
}

absl::StatusOr<JobSpec> JobSpecFromJson(const std::string& json) {
  JobSpec spec;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(json, &spec, opts);
  if (!st.ok()) return absl::DataLossError("stored job spec does not parse: " + st.ToString());
  return spec;
}

absl::StatusOr<oft::v1::Job> JobToProto(const JobRecord& r, int busy_devices, int devices) {
  oft::v1::Job job;
  job.set_id(r.id);
  absl::StatusOr<JobSpec> spec = JobSpecFromJson(r.spec_json);
  if (!spec.ok()) {
    return absl::DataLossError(absl::StrCat("job ", r.id, ": ", spec.status().message()));
  }
  *job.mutable_spec() = *std::move(spec);
  oft::v1::Job::State state = oft::v1::Job::STATE_UNSPECIFIED;
  oft::v1::Job::State_Parse(std::string(JobStateName(r.state)), &state);
  job.set_state(state);
  if (r.state == JobState::kQueued) {
    job.set_queue_position(r.queue_position);
    job.set_queue_reason(
        QueueReason(r.queue_position, busy_devices, devices, job.spec().num_devices()));
  }
  job.set_cancel_requested(r.cancel_requested);
  if (r.state == JobState::kFailed) {
    oft::v1::JobFailure::Reason reason = oft::v1::JobFailure::INTERNAL;
    oft::v1::JobFailure::Reason_Parse(r.failure.reason, &reason);
    job.mutable_failure()->set_reason(reason);
    job.mutable_failure()->set_message(r.failure.message);
    job.mutable_failure()->set_field(r.failure.field);
  }
  job.mutable_progress()->set_step(r.progress.step);
  job.mutable_progress()->set_total_steps(r.progress.total_steps);
  job.mutable_progress()->set_epoch(r.progress.epoch);
  job.mutable_metrics()->set_loss(r.progress.loss);
  if (r.progress.eval_loss) job.mutable_metrics()->set_eval_loss(*r.progress.eval_loss);
  job.mutable_metrics()->set_learning_rate(r.progress.learning_rate);
  job.mutable_metrics()->set_grad_norm(r.progress.grad_norm);
  job.mutable_metrics()->set_tokens_per_second(r.progress.tokens_per_second);
  job.set_eta_seconds(IsTerminal(r.state) ? 0.0
                      : r.state == JobState::kQueued ? -1.0
                                                     : r.progress.eta_seconds);
  *job.mutable_create_time() = ToTimestamp(r.created_at);
  if (r.started_at) *job.mutable_start_time() = ToTimestamp(*r.started_at);
  if (r.finished_at) *job.mutable_end_time() = ToTimestamp(*r.finished_at);
  if (r.state == JobState::kSucceeded && !r.result_adapter_name.empty()) {
    job.mutable_result()->set_name(r.result_adapter_name);
    job.mutable_result()->set_version(r.result_adapter_version);
  }
  job.set_latest_event_id(r.latest_event_id);
  return job;
}

}  // namespace oft
