#include "server/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/artifacts/peft_format.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/train/data_parallel.h"
#include "server/train/precision.h"
#include "server/train/text_encoder.h"
#include "server/train/trainer_checkpoint.h"
#include "server/train/trainer_state.h"

namespace oft {
namespace {

using Json = nlohmann::json;

// Portable seeded permutation (splitmix64 + Fisher-Yates): the held-out split must not
// depend on the standard library's distributions.
std::vector<size_t> SeededPermutation(size_t n, uint64_t seed) {
  std::vector<size_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  uint64_t x = seed ^ 0x6a09e667f3bcc909ULL;
  auto next = [&x] {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  for (size_t i = n; i > 1; --i) std::swap(p[i - 1], p[next() % i]);
  return p;
}

void HashSequences(Sha256& h, const std::vector<Sequence>& seqs) {
  const uint64_t n = seqs.size();
  h.Update(&n, sizeof(n));
  for (const auto& s : seqs) {
    const uint64_t len = s.ids.size();
    h.Update(&len, sizeof(len));
    h.Update(s.ids.data(), s.ids.size() * sizeof(int32_t));
    h.Update(s.loss_mask.data(), s.loss_mask.size());
    h.Update(s.document_ids.data(), s.document_ids.size() * sizeof(int32_t));
  }
}

Json AdapterIdentity(const OftConfig& c, const std::vector<std::pair<std::string, at::Tensor>>& params) {
  Json j;
  j["r"] = c.r;
  j["oft_block_size"] = c.oft_block_size;
  j["use_cayley_neumann"] = c.use_cayley_neumann;
  j["num_cayley_neumann_terms"] = c.num_cayley_neumann_terms;
  j["block_share"] = c.block_share;
  j["coft"] = c.coft;
  j["eps"] = c.eps;
  j["module_dropout"] = c.module_dropout;
  j["init_weights"] = c.init_weights;
  Json modules = Json::array();
  for (const auto& [name, t] : params) modules.push_back(name);
  j["modules"] = modules;
  return j;
}

}  // namespace

Trainer::Trainer(TrainerParams params)
    : params_(std::move(params)), state_(std::make_unique<State>(params_.options.seed)) {}
Trainer::~Trainer() = default;

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(TrainerParams p) {
  if (p.model == nullptr) return absl::InvalidArgumentError("model must not be null");
  if (p.tokenizer == nullptr) return absl::InvalidArgumentError("tokenizer must not be null");
  OFT_RETURN_IF_ERROR(p.options.Validate());
  OFT_RETURN_IF_ERROR(p.adapter.Validate());
  if (p.adapter.bias != OftBias::kNone) {
    return absl::InvalidArgumentError("adapter bias must be \"none\" for training");
  }
  if (p.train.empty()) return absl::InvalidArgumentError("training data has no rows");
  OFT_RETURN_IF_ERROR(CheckTrainableDtype(p.model->dtype()));
  const TrainOptions& o = p.options;

  // Eval split.
  std::vector<Example> train = std::move(p.train), eval = std::move(p.valid);
  p.train.clear();
  p.valid.clear();
  if (eval.empty() && o.eval_fraction > 0) {
    const size_t n = train.size();
    const size_t n_eval = std::max<size_t>(1, static_cast<size_t>(std::llround(o.eval_fraction * n)));
    if (n_eval >= n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "eval_fraction ", o.eval_fraction, " of ", n, " training rows leaves no training rows"));
    }
    std::vector<size_t> perm = SeededPermutation(n, o.seed);
    std::vector<bool> held(n, false);
    for (size_t i = 0; i < n_eval; ++i) held[perm[i]] = true;
    std::vector<Example> kept;
    for (size_t i = 0; i < n; ++i) (held[i] ? eval : kept).push_back(std::move(train[i]));
    train = std::move(kept);
  }
  if (o.eval_every > 0 && eval.empty()) {
    return absl::InvalidArgumentError(
        "eval_every > 0 needs a validation set or eval_fraction > 0");
  }

  std::unique_ptr<Trainer> t(new Trainer(std::move(p)));
  State& s = *t->state_;
  LlamaModel& model = *t->params_.model;

  // Tokenize, pack, batch.
  TokenizerTextEncoder encoder(*t->params_.tokenizer);
  TokenizeOptions topts;
  topts.max_seq_len = o.max_seq_len;
  topts.chat_template = t->params_.chat_template;
  auto build = [&](const std::vector<Example>& rows, absl::string_view what,
                   std::vector<Sequence>* out) -> absl::Status {
    TokenizeStats stats;
    auto tok = TokenizeExamples(rows, encoder, topts, &stats);
    if (!tok.ok()) {
      return absl::Status(tok.status().code(), absl::StrCat(what, ": ", tok.status().message()));
    }
    for (const auto& ex : *tok) {
      for (int32_t id : ex.ids) {
        if (id < 0 || id >= model.config().vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, ": line ", ex.line, ": token id ", id, " is outside the model's vocab_size ",
              model.config().vocab_size, " (tokenizer and model do not match)"));
        }
      }
    }
    if (stats.truncated > 0) {
      s.pending_warnings.emplace_back(
          WarningCode::kExamplesTruncated,
          absl::StrCat(what, ": ", stats.truncated, " of ", stats.examples,
                       " rows were cut to max_seq_len ", o.max_seq_len));
    }
    if (o.pack) {
      OFT_ASSIGN_OR_RETURN(*out, PackExamples(*tok, o.max_seq_len));
    } else {
      *out = ToSequences(*tok);
    }
    return absl::OkStatus();
  };
  std::vector<Sequence> train_seqs, eval_seqs;
  OFT_RETURN_IF_ERROR(build(train, "training data", &train_seqs));
  if (!eval.empty()) OFT_RETURN_IF_ERROR(build(eval, "validation data", &eval_seqs));
  {
    Sha256 h;
    HashSequences(h, train_seqs);
    HashSequences(h, eval_seqs);
    s.data_sha256 = h.HexDigest();
  }
  t->metrics_.train_sequences = static_cast<int64_t>(train_seqs.size());
  t->metrics_.eval_sequences = static_cast<int64_t>(eval_seqs.size());

  BatchIteratorOptions bo;
  // One iterator over global batches, alike on every rank; each rank trains its shard of
  // every batch (data_parallel.h).
  bo.batch_size = o.batch_size * t->WorldSize();
  bo.seed = o.seed;
  bo.shuffle = true;
  bo.drop_last = false;
  OFT_ASSIGN_OR_RETURN(s.train, BatchIterator::Create(std::move(train_seqs), bo));
  if (!eval_seqs.empty()) {
    bo.shuffle = false;
    OFT_ASSIGN_OR_RETURN(s.eval, BatchIterator::Create(std::move(eval_seqs), bo));
  }
  if (o.max_steps > 0) {
    t->total_steps_ = o.max_steps;
  } else {
    const int64_t batches = o.epochs * s.train->batches_per_epoch();
    t->total_steps_ = std::max<int64_t>(1, (batches + o.grad_accum_steps - 1) / o.grad_accum_steps);
  }
  t->metrics_.total_steps = t->total_steps_;

  // Adapter (seeded: init_weights=false draws from the generator) and optimizer.
  OFT_RETURN_IF_ERROR(TorchCall("Trainer.Create", [&]() -> absl::Status {
    OFT_RETURN_IF_ERROR(model.AddAdapter(t->params_.adapter_name, t->params_.adapter,
                                         t->params_.targets, s.rng.generator()));
    absl::Status st = model.SetActiveAdapters({t->params_.adapter_name});
    if (st.ok()) {
      auto params = model.AdapterParameters(t->params_.adapter_name);
      st = params.status();
      if (st.ok()) {
        for (auto& [name, tensor] : *params) {
          s.params.emplace_back(name, tensor);
          s.param_tensors.push_back(tensor);
        }
      }
    }
    if (!st.ok()) {
      (void)model.RemoveAdapter(t->params_.adapter_name);
      return st;
    }
    s.device = model.device();
    s.autocast = UseBf16Autocast(s.device, model.dtype(), o.bf16_autocast,
                                 t->params_.cpu_autocast_for_testing);
    s.autocast_device = s.device.type();
    ConfigureMatmulPrecision(s.device);
    s.adapter_identity = AdapterIdentity(t->params_.adapter, s.params);
    torch::optim::AdamWOptions ao(o.learning_rate);
    ao.betas({o.beta1, o.beta2}).eps(o.adam_eps).weight_decay(o.weight_decay);
    s.optimizer = std::make_unique<torch::optim::AdamW>(s.param_tensors, ao);
    return absl::OkStatus();
  }));
  return t;
}

absl::Status Trainer::Run(const EventSink& sink, const std::atomic<bool>* cancel) {
  State& s = *state_;
  if (s.finished) return absl::FailedPreconditionError("Run() already completed on this Trainer");
  const auto started = std::chrono::steady_clock::now();
  const Emit emit = [&](TrainEvent e) {
    e.total_steps = total_steps_;
    if (e.step == 0) e.step = s.step;
    const BatchCursor c = s.train->cursor();
    e.epoch = static_cast<double>(c.epoch) +
              static_cast<double>(c.index) / static_cast<double>(s.train->num_sequences());
    if (sink) sink(e);
  };
  absl::Status st = TorchCall("Trainer.Run", [&]() -> absl::Status {
    OFT_RETURN_IF_ERROR(ResumeOrStart(emit));
    const ForwardOptions forward = TrainForwardOptions();
    if (params_.collective != nullptr) OFT_RETURN_IF_ERROR(CheckRanksAgree());
    while (s.step < total_steps_ && !s.stopped_early) {
      OFT_ASSIGN_OR_RETURN(const bool cancelled, AnyRankCancelled(cancel));
      if (cancelled) {
        if (s.last_checkpoint_step != s.step) OFT_RETURN_IF_ERROR(WriteCheckpoint(emit));
        return absl::CancelledError(absl::StrCat("training cancelled after step ", s.step, " of ",
                                                 total_steps_));
      }
      OFT_RETURN_IF_ERROR(Step(forward, emit));
      OFT_RETURN_IF_ERROR(MaybeEvaluate(emit));
      const bool last = s.step == total_steps_ || s.stopped_early;
      const int64_t every = params_.options.checkpoint_every;
      if (!params_.checkpoint_dir.empty() && (last || (every > 0 && s.step % every == 0))) {
        OFT_RETURN_IF_ERROR(WriteCheckpoint(emit));
      }
    }
    return Finish(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                  emit);
  });
  if (s.checkpointer) s.checkpointer->Clear();
  return st;
}

absl::Status Trainer::ResumeOrStart(const Emit& emit) {
  State& s = *state_;
  const auto checkpoints = ListCheckpoints(params_.checkpoint_dir);
  if (!checkpoints.empty()) {
    OFT_RETURN_IF_ERROR(LoadCheckpoint(checkpoints.back().second));
    s.pending_warnings.insert(
        s.pending_warnings.begin(),
        {WarningCode::kResumedFromCheckpoint,
         // The step, not the directory: tenants see this event, the server's paths are not theirs.
         absl::StrCat("resumed from the checkpoint at step ", checkpoints.back().first)});
  } else {
    s.rng.Reseed(params_.options.seed);
  }
  for (auto& [code, message] : s.pending_warnings) {
    TrainEvent e;
    e.kind = TrainEvent::Kind::kWarning;
    e.step = s.step;  // where the run starts: the checkpoint's step after a resume
    e.warning = code;
    e.message = std::move(message);
    emit(std::move(e));
  }
  s.pending_warnings.clear();
  params_.model->SetTraining(true);
  return absl::OkStatus();
}

absl::StatusOr<bool> Trainer::AnyRankCancelled(const std::atomic<bool>* cancel) {
  const bool mine = cancel != nullptr && cancel->load();
  if (params_.collective == nullptr) return mine;
  OFT_ASSIGN_OR_RETURN(const std::vector<double> any,
                       AllReduceScalars(*params_.collective, {mine ? 1.0 : 0.0}));
  return any[0] > 0;
}

absl::Status Trainer::CheckRanksAgree() {
  State& s = *state_;
  Json id;
  id["world_size"] = params_.collective->world_size();
  id["train_options"] = Json::parse(TrainOptionsToJson(params_.options));
  id["data_sha256"] = s.data_sha256;
  id["adapter"] = s.adapter_identity;
  id["base_model"] = params_.base_model_name;
  id["resume_step"] = s.step;  // a rank that did not see rank 0's checkpoint differs here
  return params_.collective->CheckAgreement("the training job", id.dump());
}

ForwardOptions Trainer::TrainForwardOptions() {
  State& s = *state_;
  ForwardOptions fo;
  if (params_.options.activation_checkpointing) {
    s.checkpointer = std::make_unique<LayerCheckpointer>(s.param_tensors, &s.rng);
    LayerCheckpointer* cp = s.checkpointer.get();
    fo.layer_runner = [cp](int64_t, const LayerBody& body, const at::Tensor& h) {
      return cp->Run(body, h);
    };
  }
  return fo;
}

absl::Status Trainer::Finish(double seconds, const Emit& emit) {
  State& s = *state_;
  if (!params_.checkpoint_dir.empty() && s.last_checkpoint_step != s.step) {
    OFT_RETURN_IF_ERROR(WriteCheckpoint(emit));
  }
  int64_t result_step = s.step;
  if (params_.options.select_best && s.have_best) {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < s.param_tensors.size(); ++i) s.param_tensors[i].copy_(s.best_params[i]);
    result_step = s.best_step;
  }
  params_.model->SetTraining(false);
  metrics_.steps_completed = s.step;
  metrics_.final_loss = s.final_loss;
  metrics_.last_eval_loss = s.have_eval ? s.last_eval : -1;
  metrics_.best_eval_loss = s.have_best ? s.best_eval : -1;
  metrics_.best_step = s.best_step;
  metrics_.result_step = result_step;
  metrics_.stopped_early = s.stopped_early;
  metrics_.tokens_trained = s.tokens_trained;
  metrics_.seconds = seconds;
  s.finished = true;
  TrainEvent done;
  done.kind = TrainEvent::Kind::kDone;
  done.loss = s.final_loss;
  done.eval_loss = s.have_best ? s.best_eval : 0;
  done.message = absl::StrCat(s.stopped_early ? "stopped early" : "finished", " after step ",
                              s.step, "; result is the adapter of step ", result_step);
  emit(done);
  return absl::OkStatus();
}

absl::Status Trainer::SaveAdapter(const std::string& dir) const {
  return TorchCall("Trainer.SaveAdapter", [&]() -> absl::Status {
    return SavePeftAdapter(*params_.model, params_.adapter_name, params_.targets,
                           params_.base_model_name, dir);
  });
}

}  // namespace oft
