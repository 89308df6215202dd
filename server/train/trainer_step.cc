// The Trainer's step loop body (one optimizer step) and evaluation.
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/train/data_parallel.h"
#include "server/train/lr_schedule.h"
#include "server/train/micro_batch.h"
#include "server/train/precision.h"
#include "server/train/trainer.h"
#include "server/train/trainer_state.h"

namespace oft {
namespace {

constexpr size_t kEtaWindow = 20;

}  // namespace

absl::Status Trainer::Step(const ForwardOptions& forward, const Emit& emit) {
  State& s = *state_;
  const TrainOptions& o = params_.options;
  const LlamaModel& model = *params_.model;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t step_no = s.step + 1;  // 1-based, as reported
  const double lr = LearningRateAt(o, s.step, total_steps_);
  for (auto& group : s.optimizer->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
  Collective* const group = params_.collective;
  std::vector<MicroBatch> micro;
  int64_t trainable = 0, tokens = 0;
  for (int64_t a = 0; a < o.grad_accum_steps; ++a) {
    Batch b = s.train->Next();
    if (group != nullptr) b = RankShard(b, group->rank(), o.batch_size);
    if (b.rows == 0) continue;  // a short last batch left this rank nothing
    micro.push_back(ToMicroBatch(b, s.device));
    trainable += micro.back().trainable;
    tokens += micro.back().tokens;
  }
  if (group != nullptr) {
    // The whole step's token counts, so every rank's loss has the global denominator.
    OFT_ASSIGN_OR_RETURN(const std::vector<double> global,
                         AllReduceScalars(*group, {static_cast<double>(trainable),
                                                   static_cast<double>(tokens)}));
    trainable = static_cast<int64_t>(global[0]);
    tokens = static_cast<int64_t>(global[1]);
  }
  const auto dopts = at::TensorOptions().dtype(at::kDouble).device(s.device);
  // Each micro-batch's loss is summed in fp64 on the device, as the host summed them.
  at::Tensor loss = at::zeros({}, dopts);
  for (const auto& m : micro) {
    at::Tensor l;
    {
      AutocastScope autocast(s.autocast, s.autocast_device);
      l = SumMaskedLoss(model, m, forward) / static_cast<double>(trainable);
    }
    if (params_.inject_nan_for_testing && params_.inject_nan_for_testing(step_no)) {
      l = l * std::numeric_limits<double>::quiet_NaN();
    }
    l.backward();
    if (s.checkpointer) s.checkpointer->Clear();
    loss = loss + l.detach().to(at::kDouble);
  }
  if (group != nullptr) {
    // The global batch's gradient and loss: sums over ranks (data_parallel.h).
    OFT_ASSIGN_OR_RETURN(metrics_.allreduce_bytes_per_step,
                         AllReduceGradients(*group, s.param_tensors));
    OFT_ASSIGN_OR_RETURN(const std::vector<double> global,
                         AllReduceScalars(*group, {loss.item<double>()}));
    loss = at::full({}, global[0], dopts);
  }
  // Global gradient norm in fp64 and the clipping factor, both on the device.
  at::Tensor sq = at::zeros({}, dopts);
  for (const auto& p : s.param_tensors) {
    if (p.grad().defined()) sq = sq + p.grad().to(at::kDouble).pow(2).sum();
  }
  const at::Tensor norm = sq.sqrt();
  if (o.max_grad_norm > 0) {
    const at::Tensor coef =
        at::where(norm > o.max_grad_norm, o.max_grad_norm / (norm + 1e-6), at::ones_like(norm));
    for (auto& p : s.param_tensors) {
      if (p.grad().defined()) p.mutable_grad().mul_(coef.to(p.grad().scalar_type()));
    }
  }
  // The step's one host synchronisation: loss and norm together.
  const at::Tensor host = at::stack({loss, norm}).cpu();
  const double loss_value = host[0].item<double>(), grad_norm = host[1].item<double>();
  auto fail = [&](absl::string_view what, double value) {
    s.optimizer->zero_grad(true);
    return absl::InternalError(absl::StrCat(
        "non-finite ", what, " at step ", step_no, " (", value, "); training stopped, ",
        s.last_checkpoint_dir.empty() ? std::string("no checkpoint was written")
                                      : absl::StrCat("last good checkpoint: ", s.last_checkpoint_dir)));
  };
  if (!std::isfinite(loss_value)) return fail("loss", loss_value);
  if (!std::isfinite(grad_norm)) return fail("gradient norm", grad_norm);
  s.optimizer->step();
  s.optimizer->zero_grad(true);
  s.step = step_no;
  s.final_loss = loss_value;
  s.tokens_trained += tokens;

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.step_seconds.push_back(secs);
  if (s.step_seconds.size() > kEtaWindow) s.step_seconds.pop_front();
  const double mean = std::accumulate(s.step_seconds.begin(), s.step_seconds.end(), 0.0) /
                      static_cast<double>(s.step_seconds.size());
  TrainEvent ev;
  ev.kind = TrainEvent::Kind::kStep;
  ev.loss = loss_value;
  ev.learning_rate = lr;
  ev.grad_norm = grad_norm;
  ev.tokens_per_second = secs > 0 ? static_cast<double>(tokens) / secs : 0;
  ev.eta_seconds = mean * static_cast<double>(total_steps_ - s.step);
  emit(ev);
  return absl::OkStatus();
}

absl::Status Trainer::MaybeEvaluate(const Emit& emit) {
  State& s = *state_;
  const TrainOptions& o = params_.options;
  if (!s.eval || o.eval_every <= 0 || (s.step % o.eval_every != 0 && s.step != total_steps_)) {
    return absl::OkStatus();
  }
  OFT_ASSIGN_OR_RETURN(const double eval_loss, Evaluate());
  s.have_eval = true;
  s.last_eval = eval_loss;
  if (!s.have_best || eval_loss < s.best_eval) {
    s.have_best = true;
    s.best_eval = eval_loss;
    s.best_step = s.step;
    s.evals_since_best = 0;
    s.best_params.clear();
    for (const auto& p : s.param_tensors) s.best_params.push_back(p.detach().clone());
  } else {
    ++s.evals_since_best;
  }
  TrainEvent e;
  e.kind = TrainEvent::Kind::kEval;
  e.eval_loss = eval_loss;
  e.message = absl::StrCat("best ", s.best_eval, " at step ", s.best_step);
  emit(e);
  if (o.early_stopping_patience > 0 && s.evals_since_best >= o.early_stopping_patience) {
    s.stopped_early = true;
    TrainEvent w;
    w.kind = TrainEvent::Kind::kWarning;
    w.warning = WarningCode::kEarlyStopping;
    w.message = absl::StrCat("early stopping at step ", s.step, ": no better eval loss in ",
                             s.evals_since_best, " evaluations (best ", s.best_eval, " at step ",
                             s.best_step, ")");
    emit(w);
  }
  return absl::OkStatus();
}

absl::StatusOr<double> Trainer::Evaluate() {
  State& s = *state_;
  LlamaModel& model = *params_.model;
  model.SetTraining(false);
  OFT_RETURN_IF_ERROR(s.eval->Seek(BatchCursor{0, 0, s.eval->cursor().fingerprint}));
  int64_t count = 0;
  double total = 0;
  {
    at::NoGradGuard no_grad;
    AutocastScope autocast(s.autocast, s.autocast_device);
    at::Tensor sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(s.device));
    Collective* const group = params_.collective;
    for (int64_t i = 0; i < s.eval->batches_per_epoch(); ++i) {
      Batch b = s.eval->Next();
      if (group != nullptr) b = RankShard(b, group->rank(), params_.options.batch_size);
      if (b.rows == 0) continue;
      MicroBatch m = ToMicroBatch(b, s.device);
      sum = sum + SumMaskedLoss(model, m, ForwardOptions{}).to(at::kDouble);
      count += m.trainable;
    }
    total = sum.item<double>();
    if (group != nullptr) {
      OFT_ASSIGN_OR_RETURN(const std::vector<double> global,
                           AllReduceScalars(*group, {total, static_cast<double>(count)}));
      total = global[0];
      count = static_cast<int64_t>(global[1]);
    }
  }
  model.SetTraining(true);
  return count > 0 ? total / static_cast<double>(count) : 0.0;
}

}  // namespace oft
