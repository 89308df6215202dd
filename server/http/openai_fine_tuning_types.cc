#include "server/http/openai_fine_tuning_types.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"
#include "server/http/json_fields.h"
#include "server/train/train_options.h"

namespace oft {
namespace {

using json = nlohmann::json;
using oft::v1::Hyperparameters;
using oft::v1::Job;
using oft::v1::JobEvent;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

double DefaultLearningRate() { return TrainOptions{}.learning_rate; }

// A field that is "auto" (the server's default: leaves `out` unset) or an integer in range.
absl::Status AutoOrInt(const json& obj, const char* key, int64_t lo, int64_t hi, const std::string& prefix,
                       std::optional<int64_t>* out) {
  auto it = obj.find(key);
  if (it != obj.end() && it->is_string()) {
    if (it->get<std::string>() == "auto") return absl::OkStatus();
    return Invalid(absl::StrCat(prefix, key, " must be \"auto\" or an integer"));
  }
  return OptionalInt(obj, key, lo, hi, out, prefix);
}

absl::Status AutoOrNumber(const json& obj, const char* key, double lo, double hi, const std::string& prefix,
                          std::optional<double>* out) {
  auto it = obj.find(key);
  if (it != obj.end() && it->is_string()) {
    if (it->get<std::string>() == "auto") return absl::OkStatus();
    return Invalid(absl::StrCat(prefix, key, " must be \"auto\" or a number"));
  }
  return OptionalNumber(obj, key, lo, hi, out, prefix);
}

// proto3 JSON (either field-name spelling) merged into `message`; errors name `field`.
absl::Status ProtoFromJson(const json& value, const std::string& field, google::protobuf::Message* message) {
  if (!value.is_object()) return Invalid(absl::StrCat(field, " must be an object"));
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  std::unique_ptr<google::protobuf::Message> parsed(message->New());
  const auto st = google::protobuf::util::JsonStringToMessage(value.dump(), parsed.get(), options);
  if (!st.ok()) return Invalid(absl::StrCat(field, ": ", std::string(st.message())));
  message->MergeFrom(*parsed);  // JsonStringToMessage replaces; fields set before stay
  return absl::OkStatus();
}

// OpenAI's three hyperparameters, plus (allow_more) any oft.v1.Hyperparameters field.
absl::Status ParseHyperparameters(const json& obj, const std::string& prefix, bool allow_more,
                                  Hyperparameters* h) {
  if (!obj.is_object()) return Invalid(absl::StrCat(prefix.substr(0, prefix.size() - 1), " must be an object"));
  std::optional<int64_t> epochs, batch;
  std::optional<double> multiplier;
  OFT_RETURN_IF_ERROR(AutoOrInt(obj, "n_epochs", 1, 1000, prefix, &epochs));
  OFT_RETURN_IF_ERROR(AutoOrInt(obj, "batch_size", 1, 4096, prefix, &batch));
  OFT_RETURN_IF_ERROR(AutoOrNumber(obj, "learning_rate_multiplier", 1e-6, 1000, prefix, &multiplier));
  json rest = json::object();
  for (const auto& [k, v] : obj.items()) {
    if (k == "n_epochs" || k == "batch_size" || k == "learning_rate_multiplier") continue;
    if (!allow_more) {
      return Invalid(absl::StrCat(prefix, k,
                                  " is not supported (n_epochs, batch_size, learning_rate_multiplier; "
                                  "method.oft.hyperparameters takes every oft.v1.Hyperparameters field)"));
    }
    rest[k] = v;
  }
  if (!rest.empty()) OFT_RETURN_IF_ERROR(ProtoFromJson(rest, prefix.substr(0, prefix.size() - 1), h));
  if (epochs) h->set_epochs(*epochs);
  if (batch) h->set_batch_size(*batch);
  if (multiplier) h->set_learning_rate(*multiplier * DefaultLearningRate());
  return absl::OkStatus();
}

// method: {"type": "supervised" | "oft", "<type>": {"hyperparameters": {...}, ...}}.
absl::Status ParseMethod(const json& method, oft::v1::JobSpec* spec) {
  if (!method.is_object()) return Invalid("method must be an object");
  auto type = method.find("type");
  if (type == method.end() || !type->is_string()) return Invalid("method.type must be a string");
  const std::string t = type->get<std::string>();
  if (t != "supervised" && t != "oft") {
    return Invalid(absl::StrCat("method.type \"", t.substr(0, 40),
                                "\" is not supported (supported: supervised, oft; both train an OFTv2 adapter)"));
  }
  for (const auto& [k, v] : method.items()) {
    if (k != "type" && k != t) return Invalid(absl::StrCat("method.", k, " does not belong to method.type \"", t, "\""));
  }
  auto body = method.find(t);
  if (body == method.end() || body->is_null()) return absl::OkStatus();
  const std::string prefix = absl::StrCat("method.", t);
  if (!body->is_object()) return Invalid(absl::StrCat(prefix, " must be an object"));
  for (const auto& [k, v] : body->items()) {
    if (k == "hyperparameters") {
      OFT_RETURN_IF_ERROR(ParseHyperparameters(v, absl::StrCat(prefix, ".hyperparameters."), t == "oft",
                                               spec->mutable_hyperparameters()));
    } else if (k == "adapter_config" && t == "oft") {
      OFT_RETURN_IF_ERROR(ProtoFromJson(v, prefix + ".adapter_config", spec->mutable_adapter_config()));
    } else {
      return Invalid(absl::StrCat(prefix, ".", k, " is not supported (",
                                  t == "oft" ? "hyperparameters, adapter_config" : "hyperparameters", ")"));
    }
  }
  return absl::OkStatus();
}

int64_t Seconds(const google::protobuf::Timestamp& t) { return t.seconds(); }

json ProtoJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(m, &out, options).ok()) return json::object();
  return json::parse(out, nullptr, false);
}

const char* StatusName(Job::State s) {
  switch (s) {
    case Job::QUEUED: return "queued";
    case Job::RUNNING: return "running";
    case Job::SUCCEEDED: return "succeeded";
    case Job::FAILED: return "failed";
    case Job::CANCELLED: return "cancelled";
    default: return "validating_files";
  }
}

std::string ShortJobId(const std::string& job_id) {
  return absl::StartsWith(job_id, "job-") ? job_id.substr(4) : job_id;
}

}  // namespace

absl::StatusOr<oft::v1::CreateJobRequest> ParseFineTuningJobCreate(const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return Invalid("body is not valid JSON");
  if (!j.is_object()) return Invalid("body must be a JSON object");
  static const char* const kKnown[] = {"model", "training_file", "validation_file", "suffix", "seed",
                                       "hyperparameters", "method", "integrations", "metadata"};
  for (const auto& item : j.items()) {
    const std::string k = item.key();  // a named copy: clang cannot capture structured bindings
    if (std::find_if(std::begin(kKnown), std::end(kKnown), [&](const char* f) { return k == f; }) ==
        std::end(kKnown)) {
      return Invalid(absl::StrCat(k.substr(0, 64), " is not a field of a fine-tuning job (fields: ",
                                  absl::StrJoin(kKnown, ", "), ")"));
    }
  }
  for (const char* f : {"integrations", "metadata"}) {
    auto it = j.find(f);
    if (it != j.end() && !it->is_null() && !it->empty()) {
      return Invalid(absl::StrCat(f, " is not supported by this server"));
    }
  }
  oft::v1::CreateJobRequest request;
  oft::v1::JobSpec& spec = *request.mutable_spec();
  std::optional<std::string> model, training, validation, suffix;
  OFT_RETURN_IF_ERROR(OptionalString(j, "model", &model));
  OFT_RETURN_IF_ERROR(OptionalString(j, "training_file", &training));
  OFT_RETURN_IF_ERROR(OptionalString(j, "validation_file", &validation));
  OFT_RETURN_IF_ERROR(OptionalString(j, "suffix", &suffix));
  if (!model || model->empty()) return Invalid("model is required (a base model name)");
  if (!training || training->empty()) return Invalid("training_file is required (a file id)");
  spec.set_base_model(*model);
  spec.add_training_dataset_ids(*training);
  if (validation) spec.set_validation_dataset_id(*validation);
  if (suffix) {
    OFT_RETURN_IF_ERROR(ValidateName("suffix", *suffix));
    spec.set_output_adapter_name(*suffix);
  } else {
    spec.set_output_adapter_name(absl::StrCat(model->substr(0, 61), "-ft"));
  }
  std::optional<int64_t> seed;
  OFT_RETURN_IF_ERROR(OptionalInt(j, "seed", 0, int64_t{1} << 53, &seed));
  if (seed) spec.mutable_hyperparameters()->set_seed(static_cast<uint64_t>(*seed));
  auto hp = j.find("hyperparameters");
  auto method = j.find("method");
  const bool has_hp = hp != j.end() && !hp->is_null();
  const bool has_method = method != j.end() && !method->is_null();
  if (has_hp && has_method) {
    return Invalid("hyperparameters cannot be combined with method (put them in method.<type>.hyperparameters)");
  }
  if (has_hp) OFT_RETURN_IF_ERROR(ParseHyperparameters(*hp, "hyperparameters.", false, spec.mutable_hyperparameters()));
  if (has_method) OFT_RETURN_IF_ERROR(ParseMethod(*method, &spec));
  return request;
}

absl::Status ToFineTuningError(const absl::Status& status) {
  static const std::pair<const char*, const char*> kFields[] = {
      {"spec.base_model", "model"},
      {"spec.training_dataset_ids[0]", "training_file"},
      {"spec.validation_dataset_id", "validation_file"},
      {"spec.output_adapter_name", "suffix"},
      {"spec.hyperparameters.epochs", "hyperparameters.n_epochs"},
      {"spec.hyperparameters.batch_size", "hyperparameters.batch_size"},
      {"spec.hyperparameters.learning_rate", "hyperparameters.learning_rate_multiplier"},
      {"spec.hyperparameters.seed", "seed"},
      {"spec.hyperparameters", "method.oft.hyperparameters"},
      {"spec.adapter_config", "method.oft.adapter_config"},
      {"spec.", ""},
  };
  const absl::string_view m = status.message();
  for (const auto& [from, to] : kFields) {
    if (!absl::StartsWith(m, from)) continue;
    const absl::string_view rest = m.substr(std::string_view(from).size());
    // Only a whole path segment: "spec.hyperparameters.epochs" must not match "..._x".
    if (absl::string_view(from).back() != '.' && !rest.empty() && rest[0] != ' ' && rest[0] != ':' &&
        rest[0] != '.' && rest[0] != '[') {
      continue;
    }
    return absl::Status(status.code(), absl::StrCat(to, rest));
  }
  return status;
}

json FileObject(const oft::v1::Dataset& d) {
  return {{"id", d.id()},
          {"object", "file"},
          {"bytes", d.size_bytes()},
          {"created_at", Seconds(d.create_time())},
          {"filename", d.name()},
          {"purpose", "fine-tune"},
          {"status", "processed"},
          {"status_details", nullptr},
          {"format", oft::v1::DatasetFormat_Name(d.format())},
          {"rows", d.validation().rows()}};
}

json FineTuningJobObject(const Job& job) {
  const oft::v1::JobSpec& spec = job.spec();
  const Hyperparameters& h = spec.hyperparameters();
  json hp = {{"n_epochs", h.has_epochs() ? json(h.epochs()) : json("auto")},
             {"batch_size", h.has_batch_size() ? json(h.batch_size()) : json("auto")},
             {"learning_rate_multiplier",
              h.has_learning_rate() ? json(h.learning_rate() / DefaultLearningRate()) : json("auto")}};
  json error = nullptr;
  if (job.state() == Job::FAILED) {
    error = {{"code", oft::v1::JobFailure::Reason_Name(job.failure().reason())},
             {"message", job.failure().message()},
             {"param", job.failure().field().empty() ? json(nullptr) : json(job.failure().field())}};
  }
  json fine_tuned = nullptr;
  if (job.state() == Job::SUCCEEDED && !job.result().name().empty()) {
    fine_tuned = absl::StrCat(job.result().name(), ":", job.result().version());
  }
  json estimated = nullptr;
  if (job.state() == Job::RUNNING && job.eta_seconds() > 0) {
    estimated = absl::ToUnixSeconds(absl::Now() + absl::Seconds(job.eta_seconds()));
  }
  json out = {
      {"id", job.id()},
      {"object", "fine_tuning.job"},
      {"created_at", Seconds(job.create_time())},
      {"finished_at", job.has_end_time() ? json(Seconds(job.end_time())) : json(nullptr)},
      {"model", spec.base_model()},
      {"fine_tuned_model", fine_tuned},
      {"organization_id", nullptr},
      {"status", StatusName(job.state())},
      {"hyperparameters", hp},
      {"training_file", spec.training_dataset_ids_size() > 0 ? json(spec.training_dataset_ids(0)) : json(nullptr)},
      {"validation_file", spec.has_validation_dataset_id() ? json(spec.validation_dataset_id()) : json(nullptr)},
      {"result_files", json::array()},
      {"trained_tokens", nullptr},
      {"error", error},
      {"seed", h.has_seed() ? json(h.seed()) : json(nullptr)},
      {"estimated_finish", estimated},
      {"integrations", json::array()},
      {"user_provided_suffix", spec.output_adapter_name()},
      {"method", {{"type", "oft"},
                  {"oft", {{"hyperparameters", ProtoJson(h)}, {"adapter_config", ProtoJson(spec.adapter_config())}}}}},
      // Extensions: what the gRPC Job says beyond OpenAI's fields.
      {"queue_position", job.queue_position()},
      {"queue_reason", job.queue_reason()},
      {"progress", ProtoJson(job.progress())},
      {"metrics", ProtoJson(job.metrics())},
  };
  return out;
}

json FineTuningEventObject(const JobEvent& e) {
  std::string level = "info", type = "message", message;
  json data = json::object();
  switch (e.payload_case()) {
    case JobEvent::kStateChanged: {
      const auto& s = e.state_changed();
      message = absl::StrCat("Job ", StatusName(s.state()), s.message().empty() ? "" : ": ", s.message());
      if (s.state() == Job::FAILED) level = "error";
      data = {{"status", StatusName(s.state())}, {"previous_status", StatusName(s.previous_state())}};
      break;
    }
    case JobEvent::kStep: {
      const auto& s = e.step();
      type = "metrics";
      message = absl::StrCat("Step ", s.progress().step(), "/", s.progress().total_steps(),
                             ": training loss=", s.metrics().loss());
      data = {{"step", s.progress().step()},
              {"total_steps", s.progress().total_steps()},
              {"epoch", s.progress().epoch()},
              {"train_loss", s.metrics().loss()},
              {"learning_rate", s.metrics().learning_rate()},
              {"grad_norm", s.metrics().grad_norm()},
              {"tokens_per_second", s.metrics().tokens_per_second()}};
      break;
    }
    case JobEvent::kEval: {
      const auto& s = e.eval();
      type = "metrics";
      message = absl::StrCat("Step ", s.step(), ": validation loss=", s.eval_loss(), s.is_best() ? " (best)" : "");
      data = {{"step", s.step()}, {"valid_loss", s.eval_loss()}, {"is_best", s.is_best()}};
      break;
    }
    case JobEvent::kCheckpointSaved:
      message = absl::StrCat("Checkpoint saved at step ", e.checkpoint_saved().step());
      data = {{"step", e.checkpoint_saved().step()}};
      break;
    case JobEvent::kQueuePositionChanged:
      message = absl::StrCat("Queue position ", e.queue_position_changed().queue_position(),
                             e.queue_position_changed().reason().empty() ? "" : ": ",
                             e.queue_position_changed().reason());
      data = {{"queue_position", e.queue_position_changed().queue_position()}};
      break;
    case JobEvent::kWarning:
      level = "warn";
      message = e.warning().message();
      data = {{"code", e.warning().code()}};
      break;
    default:
      break;
  }
  return {{"id", absl::StrCat("ftevent-", ShortJobId(e.job_id()), "-", e.event_id())},
          {"object", "fine_tuning.job.event"},
          {"created_at", Seconds(e.create_time())},
          {"level", level},
          {"message", message},
          {"type", type},
          {"data", data}};
}

absl::StatusOr<int64_t> ParseEventCursor(const std::string& id) {
  const size_t dash = id.rfind('-');
  int64_t v = 0;
  if (!absl::StartsWith(id, "ftevent-") || dash == std::string::npos ||
      !absl::SimpleAtoi(id.substr(dash + 1), &v) || v < 1) {
    return Invalid("after must be the id of an event of this job (\"ftevent-...\")");
  }
  return v;
}

json CheckpointObject(const Job& job, const JobEvent& saved, double loss) {
  const int64_t step = saved.checkpoint_saved().step();
  return {{"id", absl::StrCat("ftckpt-", ShortJobId(job.id()), "-", step)},
          {"object", "fine_tuning.job.checkpoint"},
          {"created_at", Seconds(saved.create_time())},
          // A resume point of the job, not a published adapter: it cannot be served.
          {"fine_tuned_model_checkpoint", absl::StrCat(job.spec().output_adapter_name(), ":ckpt-step-", step)},
          {"step_number", step},
          {"metrics", {{"step", step}, {"train_loss", loss}}},
          {"fine_tuning_job_id", job.id()}};
}

}  // namespace oft
