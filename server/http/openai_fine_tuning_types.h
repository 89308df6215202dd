// The OpenAI wire format of files and fine-tuning jobs (no HTTP, no stores): request bodies
// of POST /v1/fine_tuning/jobs parsed into oft.v1.CreateJobRequest, and the file, job, event
// and checkpoint objects built from the oft.v1 messages the gRPC API returns. One mapping,
// so both APIs describe a job the same way.
//
// Mapping (OpenAI -> oft.v1.JobSpec): model -> base_model; training_file ->
// training_dataset_ids[0]; validation_file -> validation_dataset_id; suffix ->
// output_adapter_name (default "<model>-ft"); seed -> hyperparameters.seed;
// hyperparameters.n_epochs -> epochs; batch_size -> batch_size; learning_rate_multiplier ->
// learning_rate = multiplier x the trainer's default; "auto" (or absent) = the server's default.
// The same three also come as method.{supervised|oft}.hyperparameters; method.oft may carry
// any oft.v1.Hyperparameters field and an adapter_config (oft.v1.AdapterConfig, proto3 JSON).
// Unknown fields are refused by name, never ignored.
//
// Job status: QUEUED -> "queued", RUNNING -> "running", SUCCEEDED -> "succeeded", FAILED ->
// "failed", CANCELLED -> "cancelled". fine_tuned_model is "name:version", usable as `model`.
#ifndef OFT_SERVER_HTTP_OPENAI_FINE_TUNING_TYPES_H_
#define OFT_SERVER_HTTP_OPENAI_FINE_TUNING_TYPES_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "oft/v1/datasets.pb.h"
#include "oft/v1/jobs.pb.h"

namespace oft {

// Parses a POST /v1/fine_tuning/jobs body (untrusted). INVALID_ARGUMENT naming the field.
absl::StatusOr<oft::v1::CreateJobRequest> ParseFineTuningJobCreate(const std::string& body);

// Renames the JobSpec field an error of CreateJob starts with ("spec.training_dataset_ids[0]:
// no dataset ...") to the OpenAI request field it came from ("training_file: ..."), so
// `param` names what the caller sent.
absl::Status ToFineTuningError(const absl::Status& status);

// {"id", "object": "file", "bytes", "created_at", "filename", "purpose": "fine-tune", "status"}
nlohmann::json FileObject(const oft::v1::Dataset& dataset);
// {"id", "object": "fine_tuning.job", "model", "status", "fine_tuned_model", ...}
nlohmann::json FineTuningJobObject(const oft::v1::Job& job);
// {"id", "object": "fine_tuning.job.event", "created_at", "level", "message", "type", "data"}
nlohmann::json FineTuningEventObject(const oft::v1::JobEvent& event);
// The event id a FineTuningEventObject's "id" encodes, for the `after` cursor.
absl::StatusOr<int64_t> ParseEventCursor(const std::string& id);
// {"id", "object": "fine_tuning.job.checkpoint", "step_number", "metrics", ...} for a
// checkpoint_saved event; `loss` is the training loss of the step event before it.
nlohmann::json CheckpointObject(const oft::v1::Job& job, const oft::v1::JobEvent& saved,
                                double loss);

}  // namespace oft

#endif  // OFT_SERVER_HTTP_OPENAI_FINE_TUNING_TYPES_H_
