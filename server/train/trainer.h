// The training engine: trains one OFTv2 adapter on a LlamaModel whose base stays frozen.
//
// What a run does:
//   * AdamW over the adapter's parameters only (the packed skew `oft_r` of every targeted
//     Linear); base weights never require grad and are never written.
//   * Learning rate per optimizer step from lr_schedule.h; grad_accum_steps micro-batches per
//     step; global gradient-norm clipping; precision per precision.h (bf16 autocast only for
//     an fp32 base on CUDA; float16 bases are refused: no loss scaling); optional activation
//     checkpointing (decoder layers recomputed in backward, activation_checkpoint.h).
//   * One host synchronisation per optimizer step: the step's loss and gradient norm are
//     read together after backward, when the finite check and the clipping (both computed
//     on the device) are already done; batches are uploaded without blocking (micro_batch.h).
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
// Randomness: every draw of a run (adapter init, module dropout) comes from the trainer's
// own generator (job_rng.h), seeded with options.seed and saved in checkpoints; the
// process-wide generators are not touched. Trainers of different models may therefore run
// concurrently in different threads, each giving the result it gives alone.
//
// Data parallel (params.collective set; data_parallel.h has the semantics): every rank builds
// a Trainer from the same data and options; options.batch_size is the per-rank micro-batch,
// so a step's global batch is world_size x batch_size x grad_accum_steps sequences, each rank
// training its own shard. Run() first checks through the group that every rank has the same
// options, data, adapter, world size and resume step (FAILED_PRECONDITION naming what differs,
// on every rank). Gradients are summed over ranks before clipping, so every rank takes the
// same AdamW step; the step's loss, tokens/s and eval loss in events are global. Only rank 0
// writes checkpoints (all ranks resume from the newest one, so checkpoint_dir must be shared
// storage); a cancel seen by any rank stops every rank after the same step. A peer that dies
// or hangs makes Run() fail with the group's error (UNAVAILABLE / DEADLINE_EXCEEDED) within
// the group's timeout. A checkpoint resumes exactly at the world size that wrote it. At another
// world size it continues from the same sample position (epoch and sequence of the epoch's
// seeded order), with a warning event; what changes: each later step takes world_size x
// batch_size x grad_accum_steps sequences of the new world size, so later steps see other
// batches, an epochs-based total_steps is recomputed for the new global batch while the step
// counter, learning-rate schedule position, AdamW moments and RNG carry over, and the result
// equals neither world size's uninterrupted run.
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
#include "server/dist/collective.h"
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
  Collective* collective = nullptr;     // not owned; this rank's data-parallel group; null: alone
  // Test hook: when set and it returns true for a (1-based) step, that step's loss is
  // made NaN before backward. Never set in production.
  std::function<bool(int64_t step)> inject_nan_for_testing;
  // Test hook: bf16 autocast on the CPU for an fp32 model (the CUDA path's logic, testable
  // without a GPU). Never set in production.
  bool cpu_autocast_for_testing = false;
};

class Trainer {
 public:
  // Tokenizes the data, attaches the adapter and builds the optimizer. Errors:
  //   INVALID_ARGUMENT: bad options (naming the field), null model/tokenizer, a float16
  //     model (CheckTrainableDtype), no training
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
  using Emit = std::function<void(TrainEvent)>;
  explicit Trainer(TrainerParams params);

  // trainer.cc: the run's phases.
  // Resumes from the newest checkpoint or reseeds for a fresh start; emits pending warnings.
  absl::Status ResumeOrStart(const Emit& emit);
  // Options of training forward passes (activation checkpointing's layer runner).
  ForwardOptions TrainForwardOptions();
  // Final checkpoint, best-adapter selection, metrics, kDone.
  absl::Status Finish(double seconds, const Emit& emit);

  // trainer_step.cc: one optimizer step (micro-batches, backward, finite check, clipping,
  // AdamW, kStep event); INTERNAL on a non-finite loss or gradient norm.
  absl::Status Step(const ForwardOptions& forward, const Emit& emit);
  // Evaluates when due after a step; tracks the best eval and early stopping (kEval).
  absl::Status MaybeEvaluate(const Emit& emit);
  // Mean masked loss over the eval set, dropout off, no grad (sharded over ranks by batch).
  absl::StatusOr<double> Evaluate();
  // Data parallel: whether any rank's `cancel` is set (false when alone: Run() checks itself).
  absl::StatusOr<bool> AnyRankCancelled(const std::atomic<bool>* cancel);
  // Data parallel: every rank runs the same job from the same step (see above).
  absl::Status CheckRanksAgree();

  // Ranks in the data-parallel group (1 when alone).
  int WorldSize() const { return params_.collective != nullptr ? params_.collective->world_size() : 1; }

  // trainer_checkpoint.cc.
  // Writes <checkpoint_dir>/step-<step>/ atomically, prunes old ones, emits kCheckpoint.
  absl::Status WriteCheckpoint(const Emit& emit);
  // Restores everything WriteCheckpoint saved; FAILED_PRECONDITION on a mismatch. A
  // checkpoint written on another device resumes with a warning (pending_warnings).
  absl::Status LoadCheckpoint(const std::string& dir);

  TrainerParams params_;
  int64_t total_steps_ = 0;
  TrainMetrics metrics_;
  std::unique_ptr<State> state_;  // LibTorch-side state (optimizer, data, bookkeeping)
};

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_TRAINER_H_
