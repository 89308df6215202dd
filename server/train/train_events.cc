#include "server/train/train_events.h"

#include "nlohmann/json.hpp"

namespace oft {

const char* TrainEventKindName(TrainEvent::Kind kind) {
  switch (kind) {
    case TrainEvent::Kind::kStep: return "step";
    case TrainEvent::Kind::kEval: return "eval";
    case TrainEvent::Kind::kCheckpoint: return "checkpoint";
    case TrainEvent::Kind::kWarning: return "warning";
    case TrainEvent::Kind::kDone: return "done";
  }
  return "?";
}

std::string TrainEventToJson(const TrainEvent& e) {
  nlohmann::json j;
  j["kind"] = TrainEventKindName(e.kind);
  j["step"] = e.step;
  j["total_steps"] = e.total_steps;
  j["epoch"] = e.epoch;
  j["loss"] = e.loss;
  j["learning_rate"] = e.learning_rate;
  j["grad_norm"] = e.grad_norm;
  j["tokens_per_second"] = e.tokens_per_second;
  j["eval_loss"] = e.eval_loss;
  j["eta_seconds"] = e.eta_seconds;
  j["message"] = e.message;
  j["warning"] = static_cast<int>(e.warning);
  return j.dump();
}

absl::StatusOr<TrainEvent> TrainEventFromJson(absl::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("event: not a JSON object");
  TrainEvent e;
  const std::string kind = j.value("kind", "");
  bool known = false;
  for (TrainEvent::Kind k : {TrainEvent::Kind::kStep, TrainEvent::Kind::kEval, TrainEvent::Kind::kCheckpoint,
                             TrainEvent::Kind::kWarning, TrainEvent::Kind::kDone}) {
    if (kind == TrainEventKindName(k)) {
      e.kind = k;
      known = true;
    }
  }
  if (!known) return absl::InvalidArgumentError("event.kind: not a training event kind");
  try {
    e.step = j.value("step", int64_t{0});
    e.total_steps = j.value("total_steps", int64_t{0});
    e.epoch = j.value("epoch", 0.0);
    e.loss = j.value("loss", 0.0);
    e.learning_rate = j.value("learning_rate", 0.0);
    e.grad_norm = j.value("grad_norm", 0.0);
    e.tokens_per_second = j.value("tokens_per_second", 0.0);
    e.eval_loss = j.value("eval_loss", 0.0);
    e.eta_seconds = j.value("eta_seconds", 0.0);
    e.message = j.value("message", "");
    const int w = j.value("warning", 0);
    if (w < 0 || w > static_cast<int>(WarningCode::kCancelRequested)) {
      return absl::InvalidArgumentError("event.warning: out of range");
    }
    e.warning = static_cast<WarningCode>(w);
  } catch (const nlohmann::json::exception& ex) {
    return absl::InvalidArgumentError(std::string("event: a field of the wrong type: ") + ex.what());
  }
  return e;
}

}  // namespace oft
