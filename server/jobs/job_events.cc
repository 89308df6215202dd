#include "server/jobs/job_events.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "oft/v1/jobs.pb.h"
#include "server/jobs/job_event_proto.h"

namespace oft {
namespace {

namespace pb = google::protobuf;
using v1::JobEvent;

// Proto3 JSON of a payload message, camelCase names (the API's JSON form). Invalid UTF-8 in
// strings from callers (messages) is replaced before encoding, since proto3 JSON refuses it.
std::string ToJson(const pb::Message& message) {
  pb::util::JsonPrintOptions opts;
  std::string out;
  if (!pb::util::MessageToJsonString(message, &out, opts).ok()) return "{}";
  return out;
}

std::string ValidUtf8(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (ok) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      ++i;
    }
  }
  return out;
}

EncodedEvent Encoded(absl::string_view kind, const pb::Message& payload) {
  EncodedEvent e;
  e.kind = std::string(kind);
  e.payload_json = ToJson(payload);
  return e;
}

v1::Job::State ProtoState(JobState s) {
  v1::Job::State out = v1::Job::STATE_UNSPECIFIED;
  v1::Job::State_Parse(std::string(JobStateName(s)), &out);
  return out;
}

}  // namespace

absl::string_view WarningCodeName(WarningCode code) {
  switch (code) {
    case WarningCode::kTrainingWarning:
      return "TRAINING_WARNING";
    case WarningCode::kBlockSizeAdjusted:
      return "BLOCK_SIZE_ADJUSTED";
    case WarningCode::kExamplesTruncated:
      return "EXAMPLES_TRUNCATED";
    case WarningCode::kResumedFromCheckpoint:
      return "RESUMED_FROM_CHECKPOINT";
    case WarningCode::kEarlyStopping:
      return "EARLY_STOPPING";
    case WarningCode::kCancelRequested:
      return "CANCEL_REQUESTED";
  }
  return "CODE_UNSPECIFIED";
}

EncodedEvent EncodeStateChanged(std::optional<JobState> from, JobState to,
                                absl::string_view message,
                                const std::optional<JobFailureInfo>& failure) {
  JobEvent::StateChanged p;
  p.set_previous_state(from ? ProtoState(*from) : v1::Job::STATE_UNSPECIFIED);
  p.set_state(ProtoState(to));
  p.set_message(ValidUtf8(message));
  if (failure) {
    v1::JobFailure::Reason reason = v1::JobFailure::INTERNAL;
    v1::JobFailure::Reason_Parse(failure->reason, &reason);
    p.mutable_failure()->set_reason(reason);
    p.mutable_failure()->set_message(ValidUtf8(failure->message));
    p.mutable_failure()->set_field(ValidUtf8(failure->field));
  }
  return Encoded(kEventStateChanged, p);
}

EncodedEvent EncodeStep(const JobProgressInfo& progress) {
  JobEvent::Step p;
  p.mutable_progress()->set_step(progress.step);
  p.mutable_progress()->set_total_steps(progress.total_steps);
  p.mutable_progress()->set_epoch(progress.epoch);
  p.mutable_metrics()->set_loss(progress.loss);
  if (progress.eval_loss) p.mutable_metrics()->set_eval_loss(*progress.eval_loss);
  p.mutable_metrics()->set_learning_rate(progress.learning_rate);
  p.mutable_metrics()->set_grad_norm(progress.grad_norm);
  p.mutable_metrics()->set_tokens_per_second(progress.tokens_per_second);
  p.set_eta_seconds(progress.eta_seconds);
  EncodedEvent e = Encoded(kEventStep, p);
  e.progress = progress;
  return e;
}

EncodedEvent EncodeEval(int64_t step, double eval_loss, bool is_best,
                        int64_t evals_without_improvement) {
  JobEvent::Eval p;
  p.set_step(step);
  p.set_eval_loss(eval_loss);
  p.set_is_best(is_best);
  p.set_evals_without_improvement(evals_without_improvement);
  return Encoded(kEventEval, p);
}

EncodedEvent EncodeCheckpointSaved(int64_t step) {
  JobEvent::CheckpointSaved p;
  p.set_step(step);
  return Encoded(kEventCheckpointSaved, p);
}

EncodedEvent EncodeQueuePositionChanged(int64_t queue_position, absl::string_view reason) {
  JobEvent::QueuePositionChanged p;
  p.set_queue_position(queue_position);
  p.set_reason(ValidUtf8(reason));
  return Encoded(kEventQueuePositionChanged, p);
}

EncodedEvent EncodeWarning(WarningCode code, absl::string_view message) {
  JobEvent::Warning p;
  p.set_code(std::string(WarningCodeName(code)));
  v1::JobEvent::Warning::Code kind = v1::JobEvent::Warning::CODE_UNSPECIFIED;
  v1::JobEvent::Warning::Code_Parse(std::string(WarningCodeName(code)), &kind);
  p.set_kind(kind);
  p.set_message(ValidUtf8(message));
  return Encoded(kEventWarning, p);
}

std::string QueueReason(int64_t queue_position, int64_t busy_devices, int64_t devices,
                        int64_t needed) {
  const int64_t ahead = queue_position > 0 ? queue_position - 1 : 0;
  const int64_t free = std::max<int64_t>(0, devices - busy_devices);
  return absl::StrCat(needed > 1 ? absl::StrCat("waiting for ", needed, " devices, ", free, " free; ")
                                 : std::string(),
                      ahead, ahead == 1 ? " job" : " jobs", " ahead; ", busy_devices, " of ",
                      devices, devices == 1 ? " device" : " devices", " busy");
}

EvalTracker::Verdict EvalTracker::Observe(double eval_loss) {
  Verdict v;
  // A NaN loss never improves; the first finite evaluation is the first best.
  if (!best_.has_value() || eval_loss < *best_) {
    if (eval_loss == eval_loss) {
      best_ = eval_loss;
      without_improvement_ = 0;
      v.is_best = true;
      return v;
    }
  }
  ++without_improvement_;
  v.evals_without_improvement = without_improvement_;
  return v;
}

std::optional<EncodedEvent> EncodeTrainEvent(const TrainEvent& event, JobProgressInfo* progress,
                                             EvalTracker* evals) {
  switch (event.kind) {
    case TrainEvent::Kind::kStep: {
      JobProgressInfo& p = *progress;
      p.step = event.step;
      p.total_steps = event.total_steps;
      p.epoch = event.epoch;
      p.loss = event.loss;
      p.learning_rate = event.learning_rate;
      p.grad_norm = event.grad_norm;
      p.tokens_per_second = event.tokens_per_second;
      p.eta_seconds = event.eta_seconds;
      return EncodeStep(p);
    }
    case TrainEvent::Kind::kEval: {
      progress->eval_loss = event.eval_loss;
      if (event.total_steps > 0) progress->total_steps = event.total_steps;
      const EvalTracker::Verdict v = evals->Observe(event.eval_loss);
      EncodedEvent e =
          EncodeEval(event.step, event.eval_loss, v.is_best, v.evals_without_improvement);
      e.progress = *progress;
      return e;
    }
    case TrainEvent::Kind::kCheckpoint:
      return EncodeCheckpointSaved(event.step);
    case TrainEvent::Kind::kWarning:
      return EncodeWarning(event.warning, event.message);
    case TrainEvent::Kind::kDone:
      return std::nullopt;
  }
  return std::nullopt;
}

std::optional<double> StoredEvalLoss(const EventRecord& record) {
  if (record.kind != kEventEval) return std::nullopt;
  absl::StatusOr<JobEvent> e = DecodeJobEvent(record);
  if (!e.ok() || !e->has_eval()) return std::nullopt;
  return e->eval().eval_loss();
}

absl::StatusOr<JobEvent> DecodeJobEvent(const EventRecord& r) {
  JobEvent event;
  const pb::FieldDescriptor* field = JobEvent::descriptor()->FindFieldByName(r.kind);
  if (field == nullptr || field->containing_oneof() == nullptr) {
    return absl::DataLossError(absl::StrCat("job ", r.job_id, " event ", r.event_id,
                                            ": unknown event kind \"", r.kind, "\""));
  }
  pb::Message* payload = event.GetReflection()->MutableMessage(&event, field);
  pb::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;  // written by a newer server
  const auto st = pb::util::JsonStringToMessage(r.payload_json, payload, opts);
  if (!st.ok()) {
    return absl::DataLossError(absl::StrCat("job ", r.job_id, " event ", r.event_id, " (",
                                            r.kind, "): payload does not decode: ",
                                            std::string(st.message())));
  }
  event.set_event_id(r.event_id);
  event.set_job_id(r.job_id);
  *event.mutable_create_time() =
      pb::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(r.created_at));
  return event;
}

}  // namespace oft
