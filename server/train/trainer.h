// The training engine: trains one OFTv2 adapter on a LlamaModel whose base stays frozen.
//
// What a run does:
//   * AdamW over the adapter's parameters only (the packed skew `oft_r` of every targeted
//     Linear); base weights never require grad and are never written.
//   * Learning rate per optimizer step from lr_schedule.h; grad_accum_steps micro-batches per
//     step; global gradient-norm clipping; bf16 autocast when the model is on CUDA;
//     optional activation checkpointing (decoder layers recomputed in backward).
//   * Loss: masked next-token cross-entropy. Logits at position i-1 score ids[i] wherever
//     loss_mask[i] == 1 (batching.h conventions), summed over all micro-batches of one
//     optimizer step and divided by the number of such trainable tokens in the whole step.
//     So accumulating 2 micro-batches of 1 sequence equals one batch of the 2 sequences.
//     Packed sequences get a block-diagonal causal mask by document id.
//   * Evaluation (mean masked cross-entropy over every trainable token of the eval set,
//     module dropout off) every `eval_every` steps and after the last step, on the
//     validation rows, or, when none are given, on `eval_fraction` of the training rows
//     (chosen by a seeded permutation, removed from training). Early stopping after
//     `early_stopping_patience` evals without a new best; with `select_best` the adapter of
//     the best eval becomes the result.
//   * Checkpoints <checkpoint_dir>/step-<n>/ every `checkpoint_every` steps, after the last
//     step, and on cancel: adapter, best adapter, AdamW state, RNG states, data cursor, eval
//     bookkeeping, the options and a hash of the tokenized data. Each is written into a temp
//     dir, fsynced, renamed into place and the parent fsynced, so a directory named step-<n>
//     is always complete. Only the newest `keep_checkpoints` are kept.
//   * Run() resumes from the newest checkpoint. Resuming is exact: a run killed at any point
//     and resumed ends with the same adapter as an uninterrupted run (bitwise on CPU with the
//     same seed and thread count).
//
// Adapter ownership: Create() attaches a fresh adapter `adapter_name` (from `adapter` and
// `targets`) to the model and makes it the only active adapter; after the Trainer is gone
// the adapter stays attached and holds the trained (or best) values. The model is not
// owned, must outlive the Trainer, and must not be used by anyone else while Run() runs.
// The trainer reseeds the process-wide default CPU (and CUDA) generators: run one training
// job per process at a time.
//
// Thread-compatibility: one thread calls Run(); `cancel` may be set from any thread.
#ifndef OFT_SERVER_TRAIN_TRAINER_H_
#define OFT_SERVER_TRAIN_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/data/batching.h"
#include "server/data/chat_template.h"
#include "server/data/dataset.h"
#include "server/model/llama.h"
#include "server/model/targeting.h"
#include "server/model/tokenizer.h"
#include "server/oft/config.h"
#include "server/train/train_events.h"
#include "server/train/train_options.h"

namespace oft {

struct TrainerParams {
  LlamaModel* model = nullptr;          // not owned; frozen base, must outlive the Trainer
  const Tokenizer* tokenizer = nullptr; // not owned; must outlive Create()
  std::vector<Example> train;           // parsed training rows (ParseJsonl)
  std::vector<Example> valid;           // validation rows; empty: eval_fraction of train
  OftConfig adapter;                    // the adapter to train (bias must be kNone)
  TargetSpec targets;                   // where to attach it (PEFT rules)
  std::string adapter_name = "default"; // name of the adapter on the model
  ChatTemplateKind chat_template = ChatTemplateKind::kChatml;  // renders chat rows
  TrainOptions options;                 // validated by Create()
  std::string checkpoint_dir;           // "" : no checkpoints and no resume
  std::string base_model_name;          // base_model_name_or_path in adapter_config.json
  // Test hook: when set and it returns true for a (1-based) step, that step's loss is
  // made NaN before backward. Never set in production.
  std::function<bool(int64_t step)> inject_nan_for_testing;
};

class Trainer {
 public:
  // Tokenizes the data, attaches the adapter and builds the optimizer. Errors:
  //   INVALID_ARGUMENT: bad options (naming the field), null model/tokenizer, no training
  //     rows, rows that tokenize to nothing trainable (naming their lines), an eval split
  //     that leaves no training or no eval rows, adapter.bias != none, a bad adapter config;
  //   ALREADY_EXISTS: the model already has an adapter named adapter_name;
  //   NOT_FOUND: `targets` select no module.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(TrainerParams params);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains to the end (resuming from the newest checkpoint first). Returns
  //   OK when all steps ran or early stopping ended the run (a kDone event is emitted);
  //   CANCELLED when *cancel became true: checked before every step, after a checkpoint of
  //     the steps done so far is written;
  //   INTERNAL "non-finite loss at step N ..." (or "non-finite gradient norm ...") when a
  //     step's loss or gradient is NaN/Inf: nothing of that step is applied or checkpointed,
  //     the newest checkpoint on disk is the last good state;
  //   FAILED_PRECONDITION when the newest checkpoint was written with other options, other
  //     data or another adapter config (the message names what differs), or Run() already
  //     returned OK on this Trainer;
  //   RESOURCE_EXHAUSTED on out-of-memory; file-system errors from checkpoint I/O.
  // `cancel` may be null.
  absl::Status Run(const EventSink& sink, const std::atomic<bool>* cancel = nullptr);

  // Writes the adapter (the result after Run(); the current values before) in PEFT format
  // to `dir` (adapter_config.json + adapter_model.safetensors).
  absl::Status SaveAdapter(const std::string& dir) const;

  const TrainMetrics& metrics() const { return metrics_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  struct State;
  explicit Trainer(TrainerParams params);
  // Writes <checkpoint_dir>/step-<step>/ atomically, prunes old ones, emits kCheckpoint.
  absl::Status WriteCheckpoint(const std::function<void(TrainEvent)>& emit);
  // Restores everything WriteCheckpoint saved; FAILED_PRECONDITION on a mismatch.
  absl::Status LoadCheckpoint(const std::string& dir);
  // Mean masked loss over the eval set, dropout off, no grad.
  absl::StatusOr<double> Evaluate();

  TrainerParams params_;
  int64_t total_steps_ = 0;
  TrainMetrics metrics_;
  std::unique_ptr<State> state_;  // LibTorch-side state (optimizer, data, bookkeeping)
};

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_TRAINER_H_
