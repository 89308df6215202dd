// Internal to the Trainer (trainer*.cc): its LibTorch-side state. Not part of the API.
#ifndef OFT_SERVER_TRAIN_TRAINER_STATE_H_
#define OFT_SERVER_TRAIN_TRAINER_STATE_H_

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ATen/core/Tensor.h"
#include "c10/core/Device.h"
#include "nlohmann/json.hpp"
#include "server/data/batching.h"
#include "server/train/activation_checkpoint.h"
#include "server/train/job_rng.h"
#include "server/train/trainer.h"
#include "torch/optim/adamw.h"

namespace oft {

struct Trainer::State {
  explicit State(uint64_t seed) : rng(seed) {}

  c10::Device device{c10::kCPU};
  bool autocast = false;                  // bf16 autocast around forward passes
  c10::DeviceType autocast_device = c10::kCUDA;
  JobRng rng;                             // every random draw of this job
  std::unique_ptr<BatchIterator> train;
  std::unique_ptr<BatchIterator> eval;  // null: no eval set
  std::vector<std::pair<std::string, at::Tensor>> params;  // module -> oft_r (model-owned)
  std::vector<at::Tensor> param_tensors;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::string data_sha256;
  nlohmann::json adapter_identity;
  // Emitted by Run() as kWarning events, with their codes.
  std::vector<std::pair<WarningCode, std::string>> pending_warnings;
  std::unique_ptr<LayerCheckpointer> checkpointer;  // activation checkpointing, or null

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

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_TRAINER_STATE_H_
