// TrainingJob <-> JSON: how the server hands a resolved job to a training worker process
// (tools/oft_train_worker.cc, server/train/worker_process.h). Every field round-trips; the
// options use TrainOptionsToJson's form. Parsing rejects a missing or mistyped field by name.
#ifndef OFT_SERVER_TRAIN_TRAINING_JOB_JSON_H_
#define OFT_SERVER_TRAIN_TRAINING_JOB_JSON_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/train/job_runner.h"

namespace oft {

std::string TrainingJobToJson(const TrainingJob& job);
absl::StatusOr<TrainingJob> TrainingJobFromJson(absl::string_view json);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_TRAINING_JOB_JSON_H_
