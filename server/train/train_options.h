// Hyperparameters of one adapter-training run, their validation, and their JSON form.
//
// Every field has a default. Validate() checks each field's range and the few cross-field
// rules; its INVALID_ARGUMENT message names the field and the allowed range, e.g.
//   "learning_rate must be in (0, 1], got -3".
// The JSON form (TrainOptionsToJson / TrainOptionsFromJson) is what job records and
// checkpoints store; it round-trips exactly (doubles are written with full precision).
// Pure data and functions: no LibTorch, thread-safe.
#ifndef OFT_SERVER_TRAIN_TRAIN_OPTIONS_H_
#define OFT_SERVER_TRAIN_TRAIN_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oft {

enum class LrSchedule { kConstant, kLinear, kCosine };

// "constant" / "linear" / "cosine" <-> LrSchedule. INVALID_ARGUMENT names the known values.
absl::string_view LrScheduleName(LrSchedule schedule);
absl::StatusOr<LrSchedule> ParseLrSchedule(absl::string_view name);

struct TrainOptions {
  // --- optimizer (AdamW over the adapter parameters only) ---
  double learning_rate = 1e-4;   // peak learning rate, in (0, 1]
  double beta1 = 0.9;            // AdamW first-moment decay, in [0, 1)
  double beta2 = 0.999;          // AdamW second-moment decay, in [0, 1)
  double adam_eps = 1e-8;        // AdamW denominator epsilon, in (0, 1e-2]
  double weight_decay = 0.0;     // AdamW decoupled weight decay, in [0, 1]

  // --- learning-rate schedule (see lr_schedule.h) ---
  LrSchedule schedule = LrSchedule::kLinear;  // decay after warmup
  int64_t warmup_steps = 0;      // linear warmup from peak/warmup to peak, >= 0
  double min_lr_ratio = 0.0;     // floor of the linear / cosine decay as a fraction of peak, [0, 1]

  // --- steps and batches ---
  int64_t grad_accum_steps = 1;  // micro-batches per optimizer step, in [1, 1024]
  double max_grad_norm = 1.0;    // clip the global gradient L2 norm to this; 0 = no clipping
  int64_t batch_size = 8;        // sequences per micro-batch, in [1, 4096]
  int64_t max_seq_len = 2048;    // longest sequence in tokens (examples are cut), in [2, 1048576]
  bool pack = false;             // pack several examples into one sequence (block-diagonal attention)
  int64_t max_steps = 0;         // optimizer steps to run; set exactly one of max_steps and epochs
  int64_t epochs = 1;            // passes over the training data (used when max_steps == 0)
  uint64_t seed = 42;            // seeds adapter init, shuffling and dropout: same seed, same run

  // --- evaluation ---
  int64_t eval_every = 0;        // evaluate every N optimizer steps (and at the end); 0 = never
  double eval_fraction = 0.0;    // held out of the training rows when no validation set, [0, 0.5]
  int64_t early_stopping_patience = 0;  // stop after N evals without improvement; 0 = off
  bool select_best = false;      // the result is the adapter of the best eval, not the last step

  // --- checkpoints ---
  int64_t checkpoint_every = 100;  // checkpoint every N optimizer steps; 0 = only at end/cancel
  int64_t keep_checkpoints = 2;    // newest checkpoints kept on disk; 0 = keep all

  // --- memory / speed ---
  bool activation_checkpointing = false;  // recompute decoder layers in backward (less memory)
  bool bf16_autocast = true;              // train in bf16 on CUDA (precision.h); ignored on CPU

  // Checks every field and the cross-field rules; INVALID_ARGUMENT naming the field.
  absl::Status Validate() const;
};

// JSON object with one key per field (schedule as its name, seed as an unsigned integer).
std::string TrainOptionsToJson(const TrainOptions& options);

// Parses TrainOptionsToJson's form. Missing keys keep their defaults; unknown keys and
// mistyped values are INVALID_ARGUMENT naming the key. Does not call Validate().
absl::StatusOr<TrainOptions> TrainOptionsFromJson(absl::string_view json);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_TRAIN_OPTIONS_H_
