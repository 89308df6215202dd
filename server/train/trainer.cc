#include "server/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <mutex>
#include <numeric>
#include <set>
#include <sstream>

#include "ATen/ATen.h"
#include "ATen/autocast_mode.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/artifacts/peft_format.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/model/safetensors_torch.h"
#include "server/train/lr_schedule.h"
#include "server/train/text_encoder.h"
#include "torch/csrc/autograd/autograd.h"
#include "torch/csrc/autograd/custom_function.h"
#include "torch/optim/adamw.h"
#include "torch/serialize/archive.h"

namespace oft {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using LayerBody = std::function<at::Tensor(const at::Tensor&)>;

constexpr int kCheckpointFormat = 1;
constexpr size_t kEtaWindow = 20;

// ---------------------------------------------------------------------------------------
// Random-number generator state (CPU default generator, and the CUDA one when used).

at::Tensor GetRngState(const c10::Device& device) {
  at::Generator gen = device.is_cuda() ? at::globalContext().defaultGenerator(device)
                                       : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void SetRngState(const c10::Device& device, const at::Tensor& state) {
  at::Generator gen = device.is_cuda() ? at::globalContext().defaultGenerator(device)
                                       : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// ---------------------------------------------------------------------------------------
// Activation checkpointing: a decoder layer runs without recording a graph; backward
// recomputes it (with the forward's RNG and autocast state) and differentiates the
// recomputation. Bodies are owned by the trainer until the step's backward is done; the
// autograd context carries their address.

class CheckpointFn : public torch::autograd::Function<CheckpointFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                at::Tensor hidden, at::TensorList params,
                                                int64_t body_address) {
    const auto* body = reinterpret_cast<const LayerBody*>(body_address);
    std::vector<at::Tensor> saved{hidden};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["body"] = body_address;
    ctx->saved_data["rng_cpu"] = GetRngState(c10::Device(c10::kCPU));
    if (hidden.is_cuda()) ctx->saved_data["rng_cuda"] = GetRngState(hidden.device());
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(at::kCUDA);
    return {(*body)(hidden)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto* body = reinterpret_cast<const LayerBody*>(ctx->saved_data["body"].toInt());
    at::Tensor hidden = saved[0].detach().requires_grad_(true);
    std::vector<at::Tensor> inputs{hidden};
    std::vector<size_t> param_slots;  // positions in `saved` of params that require grad
    for (size_t i = 1; i < saved.size(); ++i) {
      if (saved[i].requires_grad()) {
        inputs.push_back(saved[i]);
        param_slots.push_back(i);
      }
    }
    const c10::Device dev = hidden.device();
    at::Tensor cpu_now = GetRngState(c10::Device(c10::kCPU));
    at::Tensor cuda_now = dev.is_cuda() ? GetRngState(dev) : at::Tensor();
    SetRngState(c10::Device(c10::kCPU), ctx->saved_data["rng_cpu"].toTensor());
    if (dev.is_cuda()) SetRngState(dev, ctx->saved_data["rng_cuda"].toTensor());
    at::Tensor out;
    {
      at::AutoGradMode grad(true);
      const bool was = at::autocast::is_autocast_enabled(at::kCUDA);
      at::autocast::set_autocast_enabled(at::kCUDA, ctx->saved_data["autocast"].toBool());
      out = (*body)(hidden);
      at::autocast::set_autocast_enabled(at::kCUDA, was);
    }
    SetRngState(c10::Device(c10::kCPU), cpu_now);
    if (dev.is_cuda()) SetRngState(dev, cuda_now);
    auto grads = torch::autograd::grad({out}, inputs, {grad_out[0]}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    // One gradient per forward argument: hidden, each param, body address.
    torch::autograd::variable_list result(saved.size() + 1);
    result[0] = grads[0];
    for (size_t j = 0; j < param_slots.size(); ++j) result[param_slots[j]] = grads[j + 1];
    return result;
  }
};

// bf16 autocast for CUDA, restored on scope exit.
class AutocastScope {
 public:
  explicit AutocastScope(bool on) : on_(on) {
    if (!on_) return;
    was_ = at::autocast::is_autocast_enabled(at::kCUDA);
    dtype_was_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
  }
  ~AutocastScope() {
    if (!on_) return;
    at::autocast::set_autocast_enabled(at::kCUDA, was_);
    at::autocast::set_autocast_dtype(at::kCUDA, dtype_was_);
    at::autocast::clear_cache();
  }

 private:
  bool on_;
  bool was_ = false;
  at::ScalarType dtype_was_ = at::kBFloat16;
};

// A batch as tensors on the model's device.
struct MicroBatch {
  at::Tensor ids;           // [B, T] int64
  at::Tensor loss_mask;     // [B, T] bool
  at::Tensor position_ids;  // [B, T] int64
  at::Tensor document_ids;  // [B, T] int64, -1 = padding
  int64_t tokens = 0;       // non-padding tokens
  int64_t trainable = 0;    // targets (loss_mask == 1)
};

MicroBatch ToMicroBatch(const Batch& b, const c10::Device& dev) {
  auto from = [&](const void* data, at::ScalarType t) {
    return at::from_blob(const_cast<void*>(data), {b.rows, b.seq_len}, t).to(dev, at::kLong);
  };
  MicroBatch m;
  m.ids = from(b.ids.data(), at::kInt);
  m.position_ids = from(b.position_ids.data(), at::kInt);
  m.document_ids = from(b.document_ids.data(), at::kInt);
  m.loss_mask = at::from_blob(const_cast<uint8_t*>(b.loss_mask.data()), {b.rows, b.seq_len}, at::kByte)
                    .to(dev, at::kBool);
  for (int32_t d : b.document_ids) m.tokens += d >= 0;
  for (uint8_t v : b.loss_mask) m.trainable += v;
  return m;
}

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

// Keys whose values differ between two JSON objects, "key (checkpoint X, now Y)".
std::vector<std::string> JsonDiff(const Json& saved, const Json& now) {
  std::vector<std::string> out;
  std::set<std::string> keys;
  for (auto it = saved.begin(); it != saved.end(); ++it) keys.insert(it.key());
  for (auto it = now.begin(); it != now.end(); ++it) keys.insert(it.key());
  for (const auto& k : keys) {
    const Json a = saved.contains(k) ? saved[k] : Json();
    const Json b = now.contains(k) ? now[k] : Json();
    if (a != b) out.push_back(absl::StrCat(k, " (checkpoint ", a.dump(), ", now ", b.dump(), ")"));
  }
  return out;
}

absl::StatusOr<int64_t> CheckpointStep(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5) return absl::NotFoundError(name);
  int64_t n = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return absl::NotFoundError(name);
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

// Complete checkpoints in `dir`, ascending by step.
std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    auto step = CheckpointStep(e.path().filename().string());
    if (step.ok() && fs::exists(e.path() / "state.json", ec)) out.emplace_back(*step, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------

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
  Json j;
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

struct Trainer::State {
  c10::Device device{c10::kCPU};
  bool autocast = false;
  std::unique_ptr<BatchIterator> train;
  std::unique_ptr<BatchIterator> eval;  // null: no eval set
  std::vector<std::pair<std::string, at::Tensor>> params;  // module -> oft_r (model-owned)
  std::vector<at::Tensor> param_tensors;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::string data_sha256;
  Json adapter_identity;
  std::vector<std::string> pending_warnings;
  std::deque<LayerBody> bodies;  // activation-checkpointed layers of the current micro-batch

  // Progress, saved in checkpoints.
  int64_t step = 0;
  int64_t tokens_trained = 0;
  double final_loss = 0;
  bool have_best = false;
  double best_eval = 0;
  int64_t best_step = 0;
  int64_t evals_since_best = 0;
  bool have_eval = false;
  double last_eval = 0;
  bool stopped_early = false;
  std::vector<at::Tensor> best_params;  // clones of params at best_step

  int64_t last_checkpoint_step = -1;
  std::string last_checkpoint_dir;
  bool finished = false;
  std::deque<double> step_seconds;
};

Trainer::Trainer(TrainerParams params) : params_(std::move(params)), state_(std::make_unique<State>()) {}
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
      s.pending_warnings.push_back(absl::StrCat(what, ": ", stats.truncated, " of ", stats.examples,
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
  bo.batch_size = o.batch_size;
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
    at::manual_seed(o.seed);
    OFT_RETURN_IF_ERROR(model.AddAdapter(t->params_.adapter_name, t->params_.adapter, t->params_.targets));
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
    s.autocast = o.bf16_autocast && s.device.is_cuda() && model.dtype() == at::kFloat;
    s.adapter_identity = AdapterIdentity(t->params_.adapter, s.params);
    torch::optim::AdamWOptions ao(o.learning_rate);
    ao.betas({o.beta1, o.beta2}).eps(o.adam_eps).weight_decay(o.weight_decay);
    s.optimizer = std::make_unique<torch::optim::AdamW>(s.param_tensors, ao);
    return absl::OkStatus();
  }));
  return t;
}

// ---------------------------------------------------------------------------------------
// Run

namespace {

// Sum over the batch of the masked next-token cross-entropy (fp32), plus nothing else.
at::Tensor SumLoss(const LlamaModel& model, const MicroBatch& m, const ForwardOptions& base_opts) {
  ForwardOptions fo = base_opts;
  fo.position_ids = m.position_ids;
  fo.document_ids = m.document_ids;
  at::Tensor logits = model.Forward(m.ids, fo);  // [B, T, V]
  const int64_t T = m.ids.size(1), V = logits.size(-1);
  auto flat_logits = logits.narrow(1, 0, T - 1).reshape({-1, V});
  auto targets = m.ids.narrow(1, 1, T - 1).reshape({-1});
  auto sel = at::nonzero(m.loss_mask.narrow(1, 1, T - 1).reshape({-1})).squeeze(1);
  return at::cross_entropy_loss(flat_logits.index_select(0, sel).to(at::kFloat),
                                targets.index_select(0, sel), {}, at::Reduction::Sum);
}

}  // namespace

absl::Status Trainer::Run(const EventSink& sink, const std::atomic<bool>* cancel) {
  State& s = *state_;
  if (s.finished) return absl::FailedPreconditionError("Run() already completed on this Trainer");
  const TrainOptions& o = params_.options;
  LlamaModel& model = *params_.model;
  const auto started = std::chrono::steady_clock::now();
  auto emit = [&](TrainEvent e) {
    e.total_steps = total_steps_;
    if (e.step == 0) e.step = s.step;
    const BatchCursor c = s.train->cursor();
    e.epoch = static_cast<double>(c.epoch) +
              static_cast<double>(c.index) / static_cast<double>(s.train->num_sequences());
    if (sink) sink(e);
  };
  auto warn = [&](std::string msg) {
    TrainEvent e;
    e.kind = TrainEvent::Kind::kWarning;
    e.message = std::move(msg);
    emit(std::move(e));
  };

  absl::Status st = TorchCall("Trainer.Run", [&]() -> absl::Status {
    // ---- resume or start fresh ----
    const auto checkpoints = ListCheckpoints(params_.checkpoint_dir);
    if (!checkpoints.empty()) {
      OFT_RETURN_IF_ERROR(LoadCheckpoint(checkpoints.back().second));
      warn(absl::StrCat("resumed from checkpoint ", checkpoints.back().second));
    } else {
      at::manual_seed(o.seed);
    }
    for (auto& w : s.pending_warnings) warn(w);
    s.pending_warnings.clear();
    model.SetTraining(true);

    ForwardOptions train_fo;
    if (o.activation_checkpointing) {
      train_fo.layer_runner = [&s](int64_t, const LayerBody& body, const at::Tensor& h) {
        s.bodies.push_back(body);
        const auto address = reinterpret_cast<int64_t>(&s.bodies.back());
        return CheckpointFn::apply(h, at::TensorList(s.param_tensors), address)[0];
      };
    }

    while (s.step < total_steps_ && !s.stopped_early) {
      if (cancel != nullptr && cancel->load()) {
        if (s.last_checkpoint_step != s.step) OFT_RETURN_IF_ERROR(WriteCheckpoint(emit));
        return absl::CancelledError(absl::StrCat("training cancelled after step ", s.step, " of ",
                                                 total_steps_));
      }
      const auto t0 = std::chrono::steady_clock::now();
      const int64_t step_no = s.step + 1;  // 1-based, as reported
      const double lr = LearningRateAt(o, s.step, total_steps_);
      for (auto& group : s.optimizer->param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      }
      std::vector<MicroBatch> micro;
      int64_t trainable = 0, tokens = 0;
      for (int64_t a = 0; a < o.grad_accum_steps; ++a) {
        micro.push_back(ToMicroBatch(s.train->Next(), s.device));
        trainable += micro.back().trainable;
        tokens += micro.back().tokens;
      }
      double loss = 0;
      auto fail = [&](absl::string_view what, double value) {
        s.optimizer->zero_grad(true);
        return absl::InternalError(absl::StrCat(
            "non-finite ", what, " at step ", step_no, " (", value, "); training stopped, ",
            s.last_checkpoint_dir.empty() ? std::string("no checkpoint was written")
                                          : absl::StrCat("last good checkpoint: ", s.last_checkpoint_dir)));
      };
      for (const auto& m : micro) {
        at::Tensor l;
        {
          AutocastScope autocast(s.autocast);
          l = SumLoss(model, m, train_fo) / static_cast<double>(trainable);
        }
        if (params_.inject_nan_for_testing && params_.inject_nan_for_testing(step_no)) {
          l = l * std::numeric_limits<double>::quiet_NaN();
        }
        const double v = l.item<double>();
        if (!std::isfinite(v)) {
          s.bodies.clear();
          return fail("loss", v);
        }
        l.backward();
        s.bodies.clear();
        loss += v;
      }
      at::Tensor sq = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(s.device));
      for (const auto& p : s.param_tensors) {
        if (p.grad().defined()) sq = sq + p.grad().to(at::kDouble).pow(2).sum();
      }
      const double grad_norm = std::sqrt(sq.item<double>());
      if (!std::isfinite(grad_norm)) return fail("gradient norm", grad_norm);
      if (o.max_grad_norm > 0 && grad_norm > o.max_grad_norm) {
        const double coef = o.max_grad_norm / (grad_norm + 1e-6);
        for (auto& p : s.param_tensors) {
          if (p.grad().defined()) p.mutable_grad().mul_(coef);
        }
      }
      s.optimizer->step();
      s.optimizer->zero_grad(true);
      s.step = step_no;
      s.final_loss = loss;
      s.tokens_trained += tokens;

      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      s.step_seconds.push_back(secs);
      if (s.step_seconds.size() > kEtaWindow) s.step_seconds.pop_front();
      const double mean = std::accumulate(s.step_seconds.begin(), s.step_seconds.end(), 0.0) /
                          static_cast<double>(s.step_seconds.size());
      TrainEvent ev;
      ev.kind = TrainEvent::Kind::kStep;
      ev.loss = loss;
      ev.learning_rate = lr;
      ev.grad_norm = grad_norm;
      ev.tokens_per_second = secs > 0 ? static_cast<double>(tokens) / secs : 0;
      ev.eta_seconds = mean * static_cast<double>(total_steps_ - s.step);
      emit(ev);

      if (s.eval && o.eval_every > 0 && (s.step % o.eval_every == 0 || s.step == total_steps_)) {
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
          warn(absl::StrCat("early stopping at step ", s.step, ": no better eval loss in ",
                            s.evals_since_best, " evaluations (best ", s.best_eval, " at step ",
                            s.best_step, ")"));
        }
      }
      const bool last = s.step == total_steps_ || s.stopped_early;
      if (!params_.checkpoint_dir.empty() &&
          (last || (o.checkpoint_every > 0 && s.step % o.checkpoint_every == 0))) {
        OFT_RETURN_IF_ERROR(WriteCheckpoint(emit));
      }
    }
    if (!params_.checkpoint_dir.empty() && s.last_checkpoint_step != s.step) {
      OFT_RETURN_IF_ERROR(WriteCheckpoint(emit));
    }

    // ---- result ----
    int64_t result_step = s.step;
    if (o.select_best && s.have_best) {
      at::NoGradGuard no_grad;
      for (size_t i = 0; i < s.param_tensors.size(); ++i) s.param_tensors[i].copy_(s.best_params[i]);
      result_step = s.best_step;
    }
    model.SetTraining(false);
    metrics_.steps_completed = s.step;
    metrics_.final_loss = s.final_loss;
    metrics_.last_eval_loss = s.have_eval ? s.last_eval : -1;
    metrics_.best_eval_loss = s.have_best ? s.best_eval : -1;
    metrics_.best_step = s.best_step;
    metrics_.result_step = result_step;
    metrics_.stopped_early = s.stopped_early;
    metrics_.tokens_trained = s.tokens_trained;
    metrics_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    s.finished = true;
    TrainEvent done;
    done.kind = TrainEvent::Kind::kDone;
    done.loss = s.final_loss;
    done.eval_loss = s.have_best ? s.best_eval : 0;
    done.message = absl::StrCat(s.stopped_early ? "stopped early" : "finished", " after step ",
                                s.step, "; result is the adapter of step ", result_step);
    emit(done);
    return absl::OkStatus();
  });
  s.bodies.clear();
  return st;
}

absl::StatusOr<double> Trainer::Evaluate() {
  State& s = *state_;
  LlamaModel& model = *params_.model;
  model.SetTraining(false);
  OFT_RETURN_IF_ERROR(s.eval->Seek(BatchCursor{0, 0, s.eval->cursor().fingerprint}));
  double total = 0;
  int64_t count = 0;
  {
    at::NoGradGuard no_grad;
    AutocastScope autocast(s.autocast);
    for (int64_t i = 0; i < s.eval->batches_per_epoch(); ++i) {
      MicroBatch m = ToMicroBatch(s.eval->Next(), s.device);
      total += SumLoss(model, m, ForwardOptions{}).item<double>();
      count += m.trainable;
    }
  }
  model.SetTraining(true);
  return count > 0 ? total / static_cast<double>(count) : 0.0;
}

absl::Status Trainer::WriteCheckpoint(const std::function<void(TrainEvent)>& emit) {
  State& s = *state_;
  const std::string& root = params_.checkpoint_dir;
  const std::string name = absl::StrCat("step-", s.step);
  const fs::path final_dir = fs::path(root) / name;
  const fs::path tmp = fs::path(root) / absl::StrCat(".tmp-", name, "-", ::getpid());
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create checkpoint_dir ", root, ": ", ec.message()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [n, t] : s.params) tensors.emplace_back(n, t.detach());
  OFT_RETURN_IF_ERROR(WriteSafetensors((tmp / "adapter.safetensors").string(), tensors));
  if (s.have_best) {
    std::vector<std::pair<std::string, at::Tensor>> best;
    for (size_t i = 0; i < s.params.size(); ++i) best.emplace_back(s.params[i].first, s.best_params[i]);
    OFT_RETURN_IF_ERROR(WriteSafetensors((tmp / "best_adapter.safetensors").string(), best));
  }
  {
    torch::serialize::OutputArchive archive;
    s.optimizer->save(archive);
    std::ostringstream os;
    archive.save_to(os);
    OFT_RETURN_IF_ERROR(WriteFileAtomic((tmp / "optimizer.pt").string(), os.str()));
  }
  auto write_rng = [&](const c10::Device& dev, const std::string& file) -> absl::Status {
    at::Tensor state = GetRngState(dev).contiguous();
    return WriteFileAtomic((tmp / file).string(),
                           absl::string_view(reinterpret_cast<const char*>(state.data_ptr<uint8_t>()),
                                             static_cast<size_t>(state.numel())));
  };
  OFT_RETURN_IF_ERROR(write_rng(c10::Device(c10::kCPU), "rng_cpu.bin"));
  if (s.device.is_cuda()) OFT_RETURN_IF_ERROR(write_rng(s.device, "rng_cuda.bin"));

  const BatchCursor c = s.train->cursor();
  Json j;
  j["format"] = kCheckpointFormat;
  j["step"] = s.step;
  j["total_steps"] = total_steps_;
  j["cursor"] = {{"epoch", c.epoch}, {"index", c.index}, {"fingerprint", c.fingerprint}};
  j["tokens_trained"] = s.tokens_trained;
  j["final_loss"] = s.final_loss;
  j["have_best"] = s.have_best;
  j["best_eval_loss"] = s.best_eval;
  j["best_step"] = s.best_step;
  j["evals_since_best"] = s.evals_since_best;
  j["have_eval"] = s.have_eval;
  j["last_eval_loss"] = s.last_eval;
  j["stopped_early"] = s.stopped_early;
  j["options"] = Json::parse(TrainOptionsToJson(params_.options));
  j["data_sha256"] = s.data_sha256;
  j["adapter"] = s.adapter_identity;
  j["adapter_name"] = params_.adapter_name;
  OFT_RETURN_IF_ERROR(WriteFileAtomic((tmp / "state.json").string(), j.dump(2)));
  OFT_RETURN_IF_ERROR(FsyncDirectory(tmp.string()));

  fs::remove_all(final_dir, ec);  // a re-written step (e.g. cancel right after a checkpoint)
  fs::rename(tmp, final_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename checkpoint into ", final_dir.string(), ": ", ec.message()));
  OFT_RETURN_IF_ERROR(FsyncDirectory(root));
  s.last_checkpoint_step = s.step;
  s.last_checkpoint_dir = final_dir.string();

  if (params_.options.keep_checkpoints > 0) {
    auto all = ListCheckpoints(root);
    const int64_t excess = static_cast<int64_t>(all.size()) - params_.options.keep_checkpoints;
    for (int64_t i = 0; i < excess; ++i) {
      if (all[i].second != s.last_checkpoint_dir) fs::remove_all(all[i].second, ec);
    }
  }
  TrainEvent e;
  e.kind = TrainEvent::Kind::kCheckpoint;
  e.message = s.last_checkpoint_dir;
  emit(e);
  return absl::OkStatus();
}

absl::Status Trainer::LoadCheckpoint(const std::string& dir) {
  State& s = *state_;
  OFT_ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/state.json"));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.value("format", 0) != kCheckpointFormat) {
    return absl::FailedPreconditionError(absl::StrCat(dir, "/state.json is not a checkpoint of this format"));
  }
  const Json options_now = Json::parse(TrainOptionsToJson(params_.options));
  if (auto diff = JsonDiff(j["options"], options_now); !diff.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir, " was written with different train options: ", absl::StrJoin(diff, ", "),
        "; use a new checkpoint_dir or the original options"));
  }
  if (j.value("data_sha256", "") != s.data_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir, " was written for different training/validation data (sha256 ",
        j.value("data_sha256", ""), ", now ", s.data_sha256, ")"));
  }
  if (auto diff = JsonDiff(j["adapter"], s.adapter_identity); !diff.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir, " was written for a different adapter: ", absl::StrJoin(diff, ", ")));
  }

  OFT_ASSIGN_OR_RETURN(auto adapter, SafetensorsFile::Open(dir + "/adapter.safetensors"));
  std::unique_ptr<SafetensorsFile> best;
  if (j.value("have_best", false)) {
    OFT_ASSIGN_OR_RETURN(best, SafetensorsFile::Open(dir + "/best_adapter.safetensors"));
  }
  s.best_params.clear();
  {
    at::NoGradGuard no_grad;
    for (const auto& [name, param] : s.params) {
      OFT_ASSIGN_OR_RETURN(at::Tensor t, adapter->Tensor(name));
      if (t.sizes() != param.sizes()) {
        return absl::FailedPreconditionError(absl::StrCat("checkpoint ", dir, ": tensor ", name,
                                                          " has shape ", c10::str(t.sizes()),
                                                          ", the adapter has ", c10::str(param.sizes())));
      }
      const_cast<at::Tensor&>(param).copy_(t);
      if (best) {
        OFT_ASSIGN_OR_RETURN(at::Tensor b, best->Tensor(name));
        s.best_params.push_back(b.to(param.device(), param.scalar_type()));
      }
    }
  }
  {
    OFT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(dir + "/optimizer.pt"));
    std::istringstream is(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(is, s.device);
    s.optimizer->load(archive);
  }
  auto read_rng = [&](const c10::Device& dev, const std::string& file) -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(dir + "/" + file));
    at::Tensor state = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
    std::memcpy(state.data_ptr<uint8_t>(), bytes.data(), bytes.size());
    SetRngState(dev, state);
    return absl::OkStatus();
  };
  OFT_RETURN_IF_ERROR(read_rng(c10::Device(c10::kCPU), "rng_cpu.bin"));
  if (s.device.is_cuda()) OFT_RETURN_IF_ERROR(read_rng(s.device, "rng_cuda.bin"));

  const Json& c = j["cursor"];
  OFT_RETURN_IF_ERROR(s.train->Seek(BatchCursor{c["epoch"].get<int64_t>(), c["index"].get<int64_t>(),
                                                c["fingerprint"].get<uint64_t>()}));
  s.step = j["step"].get<int64_t>();
  s.tokens_trained = j["tokens_trained"].get<int64_t>();
  s.final_loss = j["final_loss"].get<double>();
  s.have_best = j["have_best"].get<bool>();
  s.best_eval = s.have_best ? j["best_eval_loss"].get<double>() : 0.0;
  s.best_step = j["best_step"].get<int64_t>();
  s.evals_since_best = j["evals_since_best"].get<int64_t>();
  s.have_eval = j["have_eval"].get<bool>();
  s.last_eval = s.have_eval ? j["last_eval_loss"].get<double>() : 0.0;
  s.stopped_early = j["stopped_early"].get<bool>();
  s.last_checkpoint_step = s.step;
  s.last_checkpoint_dir = dir;
  return absl::OkStatus();
}

absl::Status Trainer::SaveAdapter(const std::string& dir) const {
  return TorchCall("Trainer.SaveAdapter", [&]() -> absl::Status {
    return SavePeftAdapter(*params_.model, params_.adapter_name, params_.targets,
                           params_.base_model_name, dir);
  });
}

}  // namespace oft
