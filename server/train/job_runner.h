// One training job end to end, below the service layer: pre-queue checks, the run itself
// (model load, data, Trainer with resume, publish into the AdapterStore), failure
// classification. Below the jobs layer: it reports through the EventSink it is given (the
// jobs layer encodes those events, job_events.h) and never includes the job store.
//
// No gRPC, protobuf or LibTorch in this header: the service converts oft.v1.JobSpec into a
// TrainingJob; only job_runner.cc compiles LibTorch.
//
// Thread-safety: the functions are thread-safe, but RunTrainingJob sets the process-wide
// torch intra-op thread count and the trainer reseeds the default generators (trainer.h):
// run concurrent training jobs only where bitwise reproducibility across them is not needed.
#ifndef OFT_SERVER_TRAIN_JOB_RUNNER_H_
#define OFT_SERVER_TRAIN_JOB_RUNNER_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/artifacts/store.h"
#include "server/model/targeting.h"
#include "server/oft/config.h"
#include "server/train/train_events.h"
#include "server/train/train_options.h"

namespace oft {

class Collective;  // server/dist/collective.h

struct TrainingJob {
  std::string job_id, tenant;
  std::string base_model_name;        // server's name, e.g. "default"
  std::string model_dir;              // HF dir
  std::string device = "cpu";         // "cpu" | "cuda:N"
  int64_t device_memory_bytes = 0;    // memory the job may use on `device`; 0 = unchecked
  int train_threads = 1;              // torch intra-op threads (CPU)
  std::vector<std::string> train_paths;  // JSONL files, concatenated in order
  std::string valid_path;             // "" = none
  double validation_fraction = 0;     // used when valid_path == "" (-> TrainOptions.eval_fraction)
  OftConfig adapter;                  // bias must be kNone for now
  TargetSpec targets;                 // empty target_modules (and no target_regex) = the
                                      // model's defaults (q_proj,v_proj for llama-family, PEFT's default)
  bool quantize_base_nf4 = false;
  std::optional<std::string> chat_template;  // nullopt = detect from tokenizer_config.json, else chatml
  TrainOptions options;
  std::string work_dir;               // jobs/<job_id>: checkpoints/ and staging/ live here
  std::string output_adapter_name;    // published as next version under tenant
  std::string hyperparameters_json = "{}";  // stored in the manifest
};

struct TrainingJobResult {
  TrainMetrics metrics;
  AdapterManifest manifest;  // of the published version
};

// Pre-queue checks that need no weights: reads config.json only (hf_config.h), checks that
// targets select at least one module, the block size is legal for every targeted module
// (PEFT's rule: report adjusted sizes as warnings list), options validate, and the
// estimated memory fits `device_memory_bytes` (0 = unknown: skip). Errors INVALID_ARGUMENT /
// FAILED_PRECONDITION naming the field ("adapter_config.oft_block_size", "hyperparameters.batch_size"...):
//   FAILED_PRECONDITION  base model config.json missing or unreadable ("base_model"); the
//                        estimate exceeds device_memory_bytes ("hyperparameters.batch_size");
//   INVALID_ARGUMENT     bad adapter config / targets ("adapter_config.<field>"), targets that
//                        select nothing ("adapter_config.target_modules"), a block size no
//                        targeted module can use, bias other than none ("adapter_config.bias"),
//                        bad options ("hyperparameters.<field>"), validation_fraction out of
//                        range ("validation_fraction"), no training data ("training_dataset_ids").
struct JobCheckResult {
  int64_t estimated_memory_bytes = 0;  // peak training memory on the job's device, rough
  std::vector<std::string> warnings;   // e.g. block sizes adjusted to a divisor
};
absl::StatusOr<JobCheckResult> CheckTrainingJob(const TrainingJob& job, int64_t device_memory_bytes);

// Loads the model (its own instance per job), parses data, creates the Trainer (resumes from
// work_dir/checkpoints if present), runs it, then publishes the adapter into `store`
// (AdapterStore::Publish with manifest info: job id, base model, sha256 of config.json,
// hyperparameters_json, metrics loss/eval_loss/steps/train_seconds/tokens).
// `on_event` (may be empty) gets every TrainEvent. Returns CANCELLED when *stop became true
// (checkpoint written; a rerun with the same job resumes). `stop` may be null.
// Model dtype: the checkpoint's dtype on CUDA, fp32 on CPU. Sets the torch intra-op thread
// count to train_threads. Every error carries a failure reason for ClassifyFailure.
// Data parallel: with `collective` (not owned; this process's rank of the job's group, one
// rank per device, every rank given the same job but its own device) the Trainer trains
// data-parallel (trainer.h: options.batch_size is per rank). Only rank 0 publishes; the
// other ranks return their metrics with an empty manifest.
absl::StatusOr<TrainingJobResult> RunTrainingJob(const TrainingJob& job, AdapterStore* store,
                                                 const EventSink& on_event,
                                                 const std::atomic<bool>* stop,
                                                 Collective* collective = nullptr);

// Maps a failed RunTrainingJob status to oft.v1.JobFailure.Reason names: RESOURCE_EXHAUSTED ->
// "OUT_OF_MEMORY", "non-finite" INTERNAL -> "TRAINING_DIVERGED", dataset parse errors ->
// "DATASET_INVALID", model load -> "BASE_MODEL_UNAVAILABLE", checkpoint mismatch/corrupt ->
// "CHECKPOINT_CORRUPT", ENOSPC -> "DISK_FULL", publish -> "PUBLISH_FAILED", other
// INVALID_ARGUMENT -> "INVALID_ARGUMENT", else "INTERNAL". RunTrainingJob tags its errors
// (a status payload), so the mapping of its errors does not depend on message text; untagged
// statuses are classified by code and message. message = the status message; field = the
// JobSpec field when known.
struct TrainingFailure {
  std::string reason;   // oft.v1.JobFailure.Reason value name, e.g. "OUT_OF_MEMORY"
  std::string message;  // the status message: says what to fix
  std::string field;    // offending JobSpec field path, "" if none
};
TrainingFailure ClassifyFailure(const absl::Status& status);

// Tags `status` with a failure reason (and JobSpec field) for ClassifyFailure, unless it is OK
// or tagged already: for errors that crossed a process boundary (a training worker's).
absl::Status WithFailureReason(absl::Status status, absl::string_view reason, absl::string_view field = "");

// Memory of a training device: total bytes (the CheckTrainingJob limit) and bytes in use now
// (for the oft_device_memory_bytes metric). "cpu": physical RAM and this process's resident
// set; "cuda:N": the GPU's total memory and LibTorch's allocated bytes on it. 0 when unknown
// (e.g. a CUDA device on a build or machine without CUDA).
int64_t DeviceTotalMemoryBytes(const std::string& device);
int64_t DeviceMemoryInUseBytes(const std::string& device);
// "cuda:N": returns the CUDA caching allocator's unused cached blocks to the driver (after a
// job ended, so the next job and the serving engine on that GPU can use them;
// ReleaseCachedCudaMemory). No-op for "cpu" and before CUDA is initialised. Never throws.
void ReleaseCachedDeviceMemory(const std::string& device);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_JOB_RUNNER_H_
