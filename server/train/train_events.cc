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
  return j.dump();
}

}  // namespace oft
