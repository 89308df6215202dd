// oft.v1 job messages <-> the plain structs below the service layer.
//
// ResolveJobSpec is the one mapping from a JobSpec to trainer options: CreateJob uses it to
// validate and to fill every default (the filled spec is what is stored and echoed), and
// the job executor uses it again on the stored spec, so both always agree.
#ifndef OFT_SERVER_SERVICE_JOB_SPEC_H_
#define OFT_SERVER_SERVICE_JOB_SPEC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "oft/v1/jobs.pb.h"
#include "server/jobs/job_store.h"
#include "server/model/targeting.h"
#include "server/oft/config.h"
#include "server/service/model_catalog.h"
#include "server/train/train_options.h"

namespace oft {

struct ResolvedJob {
  oft::v1::JobSpec spec;  // every default filled in
  const CatalogModel* model = nullptr;
  TrainOptions options;   // eval_fraction = spec.validation_fraction when set
  OftConfig adapter;
  TargetSpec targets;
  bool quantize_base_nf4 = false;
};

// Most devices (data-parallel ranks) one job may ask for: spec.num_devices is in [1, this].
inline constexpr int kMaxJobDevices = 64;

// Checks every field of `spec` that needs no dataset or weights and fills defaults.
// Errors: INVALID_ARGUMENT naming the field ("spec.hyperparameters.learning_rate must be in
// (0, 1], got -3"); FAILED_PRECONDITION for an unknown base model (naming the known ones).
absl::StatusOr<ResolvedJob> ResolveJobSpec(const oft::v1::JobSpec& spec,
                                           const ModelCatalog& catalog);

// Canonical JSON of a spec (proto field names, deterministic): stored as spec_json and
// compared byte for byte for idempotency. Errors: INVALID_ARGUMENT when protobuf cannot
// print it (never an empty or partial spec).
absl::StatusOr<std::string> JobSpecToJson(const oft::v1::JobSpec& spec);
// Errors: DATA_LOSS when the stored JSON does not parse.
absl::StatusOr<oft::v1::JobSpec> JobSpecFromJson(const std::string& json);

// The Job message for a stored record. `busy_devices` / `devices` (slots in use / all slots)
// explain queue waits, with the spec's num_devices (QueueReason).
// Errors: DATA_LOSS naming the job when its stored spec does not parse (never a Job
// without its spec).
absl::StatusOr<oft::v1::Job> JobToProto(const JobRecord& record, int busy_devices, int devices);

// Stored events become oft.v1.JobEvent messages through DecodeJobEvent
// (server/jobs/job_event_proto.h).

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_JOB_SPEC_H_
