// What the gRPC handlers of server/service share: the stores, the model catalog, auth, an
// executor for blocking work, the event fan-out and hooks into the scheduler. Built by the
// composition root (server/server.cc); every pointer is non-owning and outlives the
// services.
#ifndef OFT_SERVER_SERVICE_SERVICE_ENV_H_
#define OFT_SERVER_SERVICE_SERVICE_ENV_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/artifacts/store.h"
#include "server/common/executor.h"
#include "server/common/grpc_status.h"
#include "server/jobs/dataset_store.h"
#include "server/jobs/job_store.h"
#include "server/metrics/metrics.h"
#include "server/service/auth.h"
#include "server/service/event_hub.h"
#include "server/service/job_spec.h"
#include "server/service/model_catalog.h"

namespace oft {

struct ServiceLimits {
  int64_t max_upload_bytes = int64_t{256} << 20;  // largest dataset upload
  int64_t max_chunk_bytes = int64_t{1} << 20;     // largest upload/download chunk
  int64_t max_adapter_config_bytes = int64_t{1} << 20;  // ImportAdapter: adapter_config.json
  int64_t max_adapter_weights_bytes = int64_t{256} << 20;  // ImportAdapter: the safetensors
};

// Deep check of a PEFT adapter directory against a served base model (the adapter loads onto
// it: targeted modules exist, shapes match, tensors finite with a floating dtype). Errors
// INVALID_ARGUMENT / NOT_FOUND naming the file and tensor.
using AdapterChecker =
    std::function<absl::Status(const std::string& base_model, const std::string& adapter_dir)>;

// Deep, trainer-side checks of a resolved job (block sizes per module, memory estimate).
// Returns warnings to publish as events. Errors name the field.
using JobChecker = std::function<absl::StatusOr<std::vector<std::string>>(
    const ResolvedJob& job, const std::vector<std::string>& train_paths,
    const std::string& valid_path)>;

struct ServiceEnv {
  JobStore* store = nullptr;
  DatasetStore* datasets = nullptr;
  AdapterStore* adapters = nullptr;
  const ModelCatalog* models = nullptr;
  Authenticator* auth = nullptr;
  Executor* executor = nullptr;
  EventHub* events = nullptr;
  ServiceMetrics* metrics = nullptr;  // may be null
  std::string data_dir;
  ServiceLimits limits;
  int devices = 1;                                        // training workers
  std::function<int()> busy_devices = [] { return 0; };   // workers running a job now
  // Most devices one job may ask for (spec.num_devices); 1 when jobs run in threads.
  int max_job_devices = 1;
  std::string max_job_devices_why = "this server runs each job on one device";
  std::function<void()> wake_scheduler = [] {};           // a job was queued or cancelled
  std::function<void(const std::string&)> cancel_running = [](const std::string&) {};
  // A QUEUED job was cancelled (it never reaches the scheduler's end-of-job hook; it may hold
  // the checkpoint of a run interrupted by a shutdown).
  std::function<void(const std::string&)> queued_job_cancelled = [](const std::string&) {};
  JobChecker check_job;                                    // empty = no deep checks
  AdapterChecker check_adapter;  // ImportAdapter; empty = the config is parsed, nothing loaded
  // FAILED_PRECONDITION when inference pins the version (an alias points at it).
  std::function<absl::Status(const std::string& tenant, const std::string& name,
                             int64_t version)>
      adapter_pinned = [](const std::string&, const std::string&, int64_t) {
        return absl::OkStatus();
      };
};

// Runs `work` on the executor and finishes the unary `reactor` with its status.
inline void FinishAsync(const ServiceEnv& env, grpc::ServerUnaryReactor* reactor,
                        std::function<absl::Status()> work) {
  const bool queued = env.executor->Schedule([reactor, work = std::move(work)] {
    reactor->Finish(ToGrpcStatus(work()));
  });
  if (!queued) reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
}

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_SERVICE_ENV_H_
