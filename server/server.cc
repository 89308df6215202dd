#include "server/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/registry.h"
#include "server/artifacts/store.h"
#include "server/common/data_dir.h"
#include "server/common/executor.h"
#include "server/common/file_util.h"
#include "server/common/log.h"
#include "server/common/path_redact.h"
#include "server/common/status_macros.h"
#include "server/jobs/api_key_store.h"
#include "server/jobs/dataset_store.h"
#include "server/jobs/job_events.h"
#include "server/jobs/job_store.h"
#include "server/jobs/store_db.h"
#include "server/jobs/scheduler.h"
#include "server/http/http_frontend.h"
#include "server/http/openai_api.h"
#include "server/metrics/kernel_check_export.h"
#include "server/metrics/metrics.h"
#include "server/oft/kernel_mode.h"
#include "server/oft/self_check.h"
#include "server/service/adapter_service.h"
#include "server/service/auth.h"
#include "server/service/dataset_service.h"
#include "server/service/event_hub.h"
#include "server/service/job_service.h"
#include "server/service/job_spec.h"
#include "server/service/model_catalog.h"
#include "server/service/reflection_v1_service.h"
#include "server/service/rpc_log_interceptor.h"
#include "server/service/rpc_metrics_interceptor.h"
#include "server/service/service_env.h"
#include "server/serving/serving.h"
#include "server/service/inference_service.h"
#include "server/train/checkpoint_retention.h"
#include "server/train/job_runner.h"
#include "server/train/worker_process.h"

namespace oft {
namespace {

// Plain service lines (server/common/log.h carries the format); job lifecycle and RPC lines
// are structured (LogEvent with fields).
void Log(const std::string& line) { LogEvent(LogLevel::kInfo, line); }
void Warn(const std::string& line) { LogEvent(LogLevel::kWarn, line); }

absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path, 1 << 20);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path, ": ",
                                                   text.status().message()));
  }
  return text;
}

// A resolved spec as the job runner's plain struct.
absl::StatusOr<TrainingJob> ToTrainingJob(const ResolvedJob& r, const std::string& job_id,
                                          const std::string& tenant,
                                          const std::vector<std::string>& train_paths,
                                          const std::string& valid_path) {
  TrainingJob j;
  j.job_id = job_id;
  j.tenant = tenant;
  j.base_model_name = r.model->name;
  j.model_dir = r.model->dir;
  j.train_paths = train_paths;
  j.valid_path = valid_path;
  j.validation_fraction = r.spec.has_validation_fraction() ? r.spec.validation_fraction() : 0.0;
  j.adapter = r.adapter;
  j.targets = r.targets;
  j.quantize_base_nf4 = r.quantize_base_nf4;
  j.chat_template = r.model->chat_template;
  j.options = r.options;
  j.output_adapter_name = r.spec.output_adapter_name();
  oft::v1::JobSpec for_manifest;
  *for_manifest.mutable_hyperparameters() = r.spec.hyperparameters();
  *for_manifest.mutable_adapter_config() = r.spec.adapter_config();
  OFT_ASSIGN_OR_RETURN(j.hyperparameters_json, JobSpecToJson(for_manifest));
  return j;
}

JobFailureInfo ToJobFailure(const TrainingFailure& f) { return {f.reason, f.message, f.field}; }

}  // namespace

struct OftServer::Impl {
  // Declared first, so it is released last: the data dir stays ours until everything that
  // writes into it is gone.
  std::unique_ptr<DataDirLock> data_dir_lock;
  ServerOptions options;
  CheckpointRetention retention = CheckpointRetention::kNone;
  std::unique_ptr<JobStore> store;
  std::unique_ptr<DatasetStore> datasets;
  std::unique_ptr<ApiKeyStore> api_keys;
  std::unique_ptr<AdapterStore> adapters;
  ModelCatalog catalog;
  // What tenants see (job events, failures, job-check errors) never holds the data dir's or a
  // model directory's path.
  PathRedactor redactor;
  WorkerOptions worker;  // --job_isolation=process; empty binary: jobs train in this process
  std::shared_ptr<prometheus::Registry> registry;
  std::atomic<bool> ready{false};  // /readyz: serving and not saturated (before its readers)
  std::unique_ptr<ServiceMetrics> metrics;
  std::unique_ptr<HttpFrontend> exposer;          // --metrics_listen: /metrics, /healthz, /readyz
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<Executor> executor;
  EventHub events;
  ServiceEnv env;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<JobServiceImpl> job_service;
  std::unique_ptr<DatasetServiceImpl> dataset_service;
  std::unique_ptr<AdapterServiceImpl> adapter_service;
  std::unique_ptr<ModelServiceImpl> model_service;
  std::vector<LoadedServingBase> serving_bases;     // outlive the backend
  std::unique_ptr<InferenceBackend> inference;      // outlives the gRPC server
  std::unique_ptr<InferenceServiceImpl> inference_service;
  std::unique_ptr<ReflectionV1Service> reflection_v1;
  std::unique_ptr<grpc::Server> grpc_server;
  OpenAiEnv openai;                                 // outlives the HTTP server
  std::unique_ptr<HttpFrontend> http;               // --http_listen
  int port = 0;
  int metrics_port = 0;
  int http_port = 0;
  // Memory a job may use on each training device (--device_memory_bytes or the device's).
  std::map<std::string, int64_t> device_memory;  // written before any worker starts
  int64_t MemoryOf(const std::string& device) const {
    auto it = device_memory.find(device);
    return it == device_memory.end() ? 0 : it->second;
  }
  std::vector<std::string> health_names;  // "oft.kernel/<device>/<kernel>"
  std::vector<bool> kernel_health;        // per health_names entry: the optimized kernel runs

  std::thread stats_thread;
  std::thread saturation_thread;
  absl::Notification stop_stats;
  absl::Mutex shutdown_mu;
  bool shut_down ABSL_GUARDED_BY(shutdown_mu) = false;
  absl::Notification done;

  JobOutcome Execute(const JobRecord& job, const std::vector<std::string>& devices,
                     JobControl& control);
  absl::StatusOr<TrainingJob> TrainingJobFor(const JobRecord& job) const;
  void StatsLoop();
  void SaturationLoop();
  void SetHealth(bool serving);
  void RefreshJobCounts();
  void ApplyRetention(const std::string& job_id);
  void SweepFinishedJobs();
};

namespace {

std::string WorkDirOf(const ServerOptions& options, const std::string& job_id) {
  return options.data_dir + "/jobs/" + job_id;
}

}  // namespace

void OftServer::Impl::ApplyRetention(const std::string& job_id) {
  absl::StatusOr<int64_t> removed = ApplyCheckpointRetention(WorkDirOf(options, job_id), retention);
  if (!removed.ok()) {
    Warn(absl::StrCat("job ", job_id, ": checkpoint retention '", CheckpointRetentionName(retention),
                     "': ", removed.status().message()));
  }
}

// At start, before the scheduler runs: every job directory whose job is not queued (after
// RecoverAfterRestart nothing is RUNNING) belongs to a finished job, or to none; apply the
// policy there too (a crash between a job's end and its cleanup, or a stricter policy now).
void OftServer::Impl::SweepFinishedJobs() {
  if (retention == CheckpointRetention::kAll) return;
  absl::StatusOr<std::vector<JobRecord>> queued = store->QueuedJobs();
  if (!queued.ok()) {
    Warn(absl::StrCat("checkpoint retention sweep skipped: ", queued.status().message()));
    return;
  }
  std::set<std::string> active;
  for (const JobRecord& j : *queued) active.insert(j.id);
  std::error_code ec;
  int64_t removed = 0;
  for (const auto& e : std::filesystem::directory_iterator(options.data_dir + "/jobs", ec)) {
    const std::string id = e.path().filename().string();
    if (active.count(id) != 0 || !e.is_directory(ec)) continue;
    absl::StatusOr<int64_t> n = ApplyCheckpointRetention(e.path().string(), retention);
    if (n.ok()) removed += *n;
    else Warn(absl::StrCat("job ", id, ": checkpoint retention: ", n.status().message()));
  }
  if (removed > 0) {
    Log(absl::StrCat("checkpoint retention '", CheckpointRetentionName(retention), "': removed ",
                     removed, " checkpoint(s) of finished jobs"));
  }
}

void OftServer::Impl::RefreshJobCounts() {
  if (absl::StatusOr<std::map<std::string, int64_t>> counts = store->CountJobsByState(); counts.ok()) {
    metrics->SetJobCounts(*counts);
  }
}

absl::StatusOr<TrainingJob> OftServer::Impl::TrainingJobFor(const JobRecord& job) const {
  OFT_ASSIGN_OR_RETURN(oft::v1::JobSpec spec, JobSpecFromJson(job.spec_json));
  OFT_ASSIGN_OR_RETURN(ResolvedJob resolved, ResolveJobSpec(spec, catalog));
  std::vector<std::string> train_paths;
  for (const std::string& id : resolved.spec.training_dataset_ids()) {
    OFT_ASSIGN_OR_RETURN(DatasetRecord ds, datasets->GetDataset(job.tenant, id));
    train_paths.push_back(ds.path);
  }
  std::string valid_path;
  if (resolved.spec.has_validation_dataset_id()) {
    OFT_ASSIGN_OR_RETURN(DatasetRecord ds,
                         datasets->GetDataset(job.tenant, resolved.spec.validation_dataset_id()));
    valid_path = ds.path;
  }
  OFT_ASSIGN_OR_RETURN(TrainingJob tj,
                       ToTrainingJob(resolved, job.id, job.tenant, train_paths, valid_path));
  tj.work_dir = WorkDirOf(options, job.id);
  tj.train_threads = options.train_threads;
  return tj;
}

JobOutcome OftServer::Impl::Execute(const JobRecord& job, const std::vector<std::string>& devices,
                                    JobControl& control) {
  JobOutcome out;
  const std::string& device = devices.at(0);  // rank 0's
  if (devices.size() > 1 && worker.binary.empty()) {
    // Queued under --job_isolation=process, started by a server running jobs in threads.
    out.kind = JobOutcome::Kind::kFailed;
    out.failure = {"INVALID_ARGUMENT",
                   absl::StrCat("spec.num_devices: ", devices.size(),
                                " devices need --job_isolation=process (this server trains jobs in threads)"),
                   "num_devices"};
    return out;
  }
  absl::StatusOr<TrainingJob> tj = TrainingJobFor(job);
  if (!tj.ok()) {
    out.kind = JobOutcome::Kind::kFailed;
    out.failure = ToJobFailure(ClassifyFailure(tj.status()));
    if (absl::IsNotFound(tj.status())) out.failure.reason = "DATASET_INVALID";
    LogEvent(LogLevel::kWarn, "job finished",
             {{"job_id", job.id}, {"tenant", job.tenant}, {"state", "FAILED"},
              {"reason", out.failure.reason}, {"message", tj.status().ToString()}});
    out.failure.message = redactor.Redact(out.failure.message);
    return out;
  }
  tj->device = device;
  LogEvent(LogLevel::kInfo, "job started",
           {{"job_id", job.id}, {"tenant", job.tenant}, {"device", device},
            {"from_step", job.progress.step}});
  // The memory-fit check again, against the device this job actually got.
  tj->device_memory_bytes = MemoryOf(device);
  // The server's view of the run: progress columns and eval verdicts (is_best,
  // evals_without_improvement) continue from the job's stored log after a restart.
  JobProgressInfo progress = job.progress;
  EvalTracker evals;
  for (int64_t after = 0;;) {
    absl::StatusOr<std::vector<EventRecord>> events = store->EventsAfter(job.id, after, 1000);
    if (!events.ok() || events->empty()) break;
    for (const EventRecord& e : *events) {
      if (std::optional<double> loss = StoredEvalLoss(e)) evals.Observe(*loss);
    }
    after = events->back().event_id;
  }
  auto last_step_write = std::chrono::steady_clock::time_point{};
  auto last_step_seen = std::chrono::steady_clock::now();
  const EventSink sink = [&](const TrainEvent& event) {
    TrainEvent e = event;
    if (e.kind == TrainEvent::Kind::kCheckpoint) {
      LogEvent(LogLevel::kInfo, "job checkpoint", {{"job_id", job.id}, {"step", e.step}});
    } else if (e.kind == TrainEvent::Kind::kWarning) {
      const bool resumed = e.warning == WarningCode::kResumedFromCheckpoint;
      LogEvent(LogLevel::kInfo, resumed ? "job resumed" : "job warning",
               {{"job_id", job.id}, {"step", e.step}, {"message", e.message}});
    }
    e.message = redactor.Redact(e.message);
    std::optional<EncodedEvent> encoded = EncodeTrainEvent(e, &progress, &evals);
    if (!encoded) return;
    const auto now = std::chrono::steady_clock::now();
    if (e.kind == TrainEvent::Kind::kStep) {
      const double seconds = std::chrono::duration<double>(now - last_step_seen).count();
      last_step_seen = now;
      if (metrics) metrics->ObserveTrainStep(job.id, device, seconds, e.tokens_per_second, e.loss);
      // Step events are throttled to about four a second; the last step always goes out.
      if (now - last_step_write < std::chrono::milliseconds(250) && e.step != e.total_steps) return;
      last_step_write = now;
    }
    absl::StatusOr<int64_t> id = store->AppendEvent(job.id, *encoded);
    if (!id.ok()) Warn(absl::StrCat("job ", job.id, ": event not stored: ", id.status().ToString()));
  };
  absl::StatusOr<TrainingJobResult> result =
      worker.binary.empty() ? RunTrainingJob(*tj, adapters.get(), sink, &control.stop)
                            : RunTrainingJobInWorker(*tj, worker, *adapters, sink, &control.stop, devices);
  if (metrics) metrics->ForgetJob(job.id);
  if (result.ok()) {
    out.kind = JobOutcome::Kind::kSucceeded;
    out.result_adapter_name = result->manifest.name;
    out.result_adapter_version = result->manifest.version;
    out.message = absl::StrCat("published ", result->manifest.name, " version ",
                               result->manifest.version);
    LogEvent(LogLevel::kInfo, "job finished",
             {{"job_id", job.id}, {"tenant", job.tenant}, {"state", "SUCCEEDED"},
              {"reason", out.message}, {"adapter", out.result_adapter_name},
              {"version", out.result_adapter_version},
              {"steps", result->metrics.steps_completed}});
    return out;
  }
  if (absl::IsCancelled(result.status())) {
    const bool shutting_down = control.shutting_down.load();
    out.kind = shutting_down ? JobOutcome::Kind::kInterrupted : JobOutcome::Kind::kCancelled;
    out.message = shutting_down ? "requeued at shutdown (checkpoint saved)"
                                : "cancelled by the user (checkpoint saved)";
    LogEvent(LogLevel::kInfo, shutting_down ? "job requeued" : "job finished",
             {{"job_id", job.id}, {"tenant", job.tenant},
              {"state", shutting_down ? "QUEUED" : "CANCELLED"}, {"reason", out.message}});
    return out;
  }
  out.kind = JobOutcome::Kind::kFailed;
  out.failure = ToJobFailure(ClassifyFailure(result.status()));
  LogEvent(LogLevel::kWarn, "job finished",
           {{"job_id", job.id}, {"tenant", job.tenant}, {"state", "FAILED"},
            {"reason", out.failure.reason}, {"field", out.failure.field},
            {"message", result.status().ToString()}});
  out.failure.message = redactor.Redact(out.failure.message);
  return out;
}

void OftServer::Impl::StatsLoop() {
  do {
    // A failure here (a device query before CUDA is initialised, a metrics error) must never
    // end the process: skip this round.
    try {
      RefreshJobCounts();
      for (const std::string& device : options.devices) {
        metrics->SetDeviceMemory(device, static_cast<double>(DeviceMemoryInUseBytes(device)));
      }
    } catch (const std::exception& e) {
      Warn(absl::StrCat("stats: ", e.what()));
    }
  } while (!stop_stats.WaitForNotificationWithTimeout(absl::Seconds(2)));
}

// The gRPC health services every component reports under.
constexpr const char* kHealthServices[] = {"", "oft.v1.JobService", "oft.v1.DatasetService",
                                           "oft.v1.AdapterService", "oft.v1.ModelService",
                                           "oft.v1.InferenceService"};

void OftServer::Impl::SetHealth(bool serving) {
  ready = serving;
  if (grpc::HealthCheckServiceInterface* health = grpc_server->GetHealthCheckService()) {
    for (const char* name : kHealthServices) health->SetServingStatus(name, serving);
  }
}

// Health says NOT_SERVING while blocking RPC work (auth, SQLite, validation, loads) waits
// longer than the threshold for an executor thread, so a load balancer stops sending traffic
// to a saturated replica instead of letting every call run into its deadline.
void OftServer::Impl::SaturationLoop() {
  const absl::Duration threshold = absl::Seconds(options.health_saturation_seconds);
  const absl::Duration period = std::min(absl::Milliseconds(250), threshold / 2);
  bool serving = true;
  do {
    const absl::Duration wait = executor->OldestQueuedWait();
    if (serving && wait > threshold) {
      serving = false;
      Warn(absl::StrCat("health: NOT_SERVING: blocking work has waited ", absl::FormatDuration(wait),
                       " for an executor thread (threshold ", absl::FormatDuration(threshold), ")"));
      SetHealth(false);
    } else if (!serving && wait <= threshold / 2) {
      serving = true;
      Log("health: SERVING again: the executor keeps up");
      SetHealth(true);
    }
  } while (!stop_stats.WaitForNotificationWithTimeout(period));
}

OftServer::OftServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OftServer::~OftServer() { Shutdown(); }
int OftServer::port() const { return impl_->port; }
int OftServer::metrics_port() const { return impl_->metrics_port; }
int OftServer::http_port() const { return impl_->http_port; }
void OftServer::Wait() { impl_->done.WaitForNotification(); }

absl::StatusOr<std::unique_ptr<OftServer>> OftServer::Start(const ServerOptions& options) {
  auto impl = std::make_unique<Impl>();
  Impl& s = *impl;
  s.options = options;
  if (options.devices.empty()) return absl::InvalidArgumentError("--devices: at least one device");
  OFT_ASSIGN_OR_RETURN(s.retention, ParseCheckpointRetention(options.checkpoint_retention));
  if (options.served_rotations != "compact" && options.served_rotations != "fp32") {
    return absl::InvalidArgumentError(absl::StrCat(
        "served_rotations must be compact or fp32, got \"", options.served_rotations, "\""));
  }
  std::error_code ec;
  for (const char* sub : {"", "/datasets", "/jobs"}) {
    std::filesystem::create_directories(options.data_dir + sub, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("--data_dir: cannot create ", options.data_dir, sub, ": ", ec.message()));
    }
  }
  // Before anything reads or writes the data dir: one server per data dir, then sweep what a
  // crashed predecessor left half-written.
  OFT_ASSIGN_OR_RETURN(s.data_dir_lock, DataDirLock::Acquire(options.data_dir));
  if (int64_t swept = SweepTemporaryFiles(options.data_dir); swept > 0) {
    Log(absl::StrCat("removed ", swept, " partial upload(s) and temporary file(s) from ", options.data_dir));
  }
  OFT_ASSIGN_OR_RETURN(s.catalog, ModelCatalog::Create(options.models, options.chat_templates));
  s.redactor.Add(options.data_dir, "<data_dir>");
  for (const CatalogModel& m : s.catalog.models()) s.redactor.Add(m.dir, "<model " + m.name + ">");
  JobStoreOptions store_options;
  store_options.max_active_jobs_per_tenant = options.max_active_jobs_per_tenant;
  OFT_ASSIGN_OR_RETURN(std::shared_ptr<SqliteDb> db, OpenStoreDb(options.data_dir + "/jobs.db"));
  OFT_ASSIGN_OR_RETURN(s.store, JobStore::Create(db, store_options));
  s.datasets = std::make_unique<DatasetStore>(db);
  s.api_keys = std::make_unique<ApiKeyStore>(db);
  OFT_ASSIGN_OR_RETURN(s.adapters, AdapterStore::Open(options.data_dir));
  if (options.job_isolation == "process") {
    std::error_code ec;
    s.worker.binary = !options.worker_binary.empty()
                          ? options.worker_binary
                          : DefaultWorkerBinary(std::filesystem::read_symlink("/proc/self/exe", ec).string());
    if (s.worker.binary.empty() || access(s.worker.binary.c_str(), X_OK) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--job_isolation=process: no executable training worker at \"", s.worker.binary,
          "\" (build oft_train_worker, or name it with --worker_binary)"));
    }
    s.worker.data_dir = options.data_dir;
    s.worker.grace = absl::Seconds(options.worker_grace_seconds);
    s.worker.heartbeat_timeout = absl::Seconds(options.worker_heartbeat_seconds);
    s.worker.max_restarts = options.worker_max_restarts;
  }
  for (const auto& [tenant, key] : options.api_keys) {
    absl::Status st = s.api_keys->AddApiKey(key, tenant);
    if (absl::IsAlreadyExists(st)) {
      absl::StatusOr<std::string> owner = s.api_keys->LookupApiKey(key);
      if (owner.ok() && *owner == tenant) continue;
      return absl::InvalidArgumentError(
          absl::StrCat("--api_key for tenant '", tenant, "': the key already belongs to another tenant"));
    }
    if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("--api_key: ", st.message()));
  }
  // A server nobody can call is a misconfiguration, not a state to run in silently.
  if (!options.allow_unauthenticated) {
    OFT_ASSIGN_OR_RETURN(int64_t keys, s.api_keys->CountApiKeys());
    if (keys == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "no API keys: every call would be refused. Give keys with --api_key=TENANT:KEY or "
          "--api_keys_file=FILE (keys given once are kept in ", options.data_dir,
          "/jobs.db), or pass --allow_unauthenticated to let every caller in as tenant "
          "'default' (trusted networks only)"));
    }
  }
  OFT_ASSIGN_OR_RETURN(RecoveryReport recovery, s.store->RecoverAfterRestart());
  for (const std::string& id : recovery.requeued) {
    LogEvent(LogLevel::kInfo, "job requeued", {{"job_id", id}, {"reason", "requeued after restart"}});
  }
  s.SweepFinishedJobs();

  s.registry = std::make_shared<prometheus::Registry>();
  s.metrics = std::make_unique<ServiceMetrics>(*s.registry);
  if (!options.metrics_listen.empty()) {
    HttpFrontendOptions mo;
    mo.listen = options.metrics_listen;
    mo.threads = 2;
    mo.registry = s.registry;
    mo.ready = [&s] { return s.ready.load(); };
    absl::StatusOr<std::unique_ptr<HttpFrontend>> exposer = HttpFrontend::Start(mo);
    if (!exposer.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metrics_listen: ", exposer.status().message()));
    }
    s.exposer = std::move(*exposer);
    s.metrics_port = s.exposer->port();
  }

  // Before any kernel runs for a job or a request: check the custom kernels of every device
  // this server uses (and the CPU) against their composite paths; see server/oft/self_check.h.
  {
    OFT_ASSIGN_OR_RETURN(KernelMode mode, ParseKernelMode(options.cuda_kernels));
    std::vector<std::string> names = options.devices;
    names.push_back(options.serving_device);
    names.push_back("cpu");
    KernelSelfCheckOptions check;
    check.mode = mode;
    check.devices = names;
    check.log = [](const std::string& line) { Log("kernel self-check: " + line); };
    absl::StatusOr<KernelSelfCheckReport> report = RunKernelSelfCheck(check);
    if (!report.ok()) return report.status();
    ExportKernelSelfCheck(*report, *s.metrics);
    for (const KernelPathEntry& p : report->paths) {
      // Health names "oft.kernel/<device>/<kernel>": SERVING when the optimized kernel is in
      // use, NOT_SERVING when the composite path is (after a failed check, or mode off).
      s.health_names.push_back(absl::StrCat("oft.kernel/", p.device, "/", KernelName(p.kernel)));
      s.kernel_health.push_back(p.path == KernelPath::kOptimized);
    }
  }

  AuthOptions auth_options;
  auth_options.allow_unauthenticated = options.allow_unauthenticated;
  s.auth = std::make_unique<Authenticator>(s.api_keys.get(), auth_options);
  s.executor = std::make_unique<Executor>(options.executor_threads);
  for (const std::string& device : options.devices) {
    s.device_memory[device] = options.device_memory_bytes > 0 ? options.device_memory_bytes
                                                              : DeviceTotalMemoryBytes(device);
  }

  Impl* self = &s;
  SchedulerOptions sched_options;
  sched_options.devices = options.devices;
  sched_options.jobs_per_device = options.jobs_per_device;
  sched_options.devices_needed = [](const JobRecord& job) {
    absl::StatusOr<oft::v1::JobSpec> spec = JobSpecFromJson(job.spec_json);
    return spec.ok() ? std::max(1, spec->num_devices()) : 1;
  };
  SchedulerObserver observer;
  observer.on_job_finished = [self](const std::string& job_id, JobState state) {
    self->metrics->JobFinished(std::string(JobStateName(state)));
    self->metrics->ForgetJob(job_id);
    self->RefreshJobCounts();
    self->ApplyRetention(job_id);
  };
  observer.on_queue_changed = [self](int64_t, int64_t) { self->RefreshJobCounts(); };
  OFT_ASSIGN_OR_RETURN(
      s.scheduler,
      Scheduler::Create(
          s.store.get(), sched_options,
          [self](const JobRecord& job, const std::vector<std::string>& devices,
                 JobControl& control) { return self->Execute(job, devices, control); },
          observer));

  ServiceEnv& env = s.env;
  env.store = s.store.get();
  env.datasets = s.datasets.get();
  env.adapters = s.adapters.get();
  env.models = &s.catalog;
  env.auth = s.auth.get();
  env.executor = s.executor.get();
  env.events = &s.events;
  env.metrics = s.metrics.get();
  env.data_dir = options.data_dir;
  env.limits.max_upload_bytes = options.max_upload_bytes;
  env.devices = static_cast<int>(options.devices.size()) * options.jobs_per_device;
  env.busy_devices = [self] { return static_cast<int>(self->scheduler->BusySlots()); };
  if (options.job_isolation == "process") {
    env.max_job_devices = static_cast<int>(options.devices.size());
    env.max_job_devices_why = absl::StrCat("--devices lists ", options.devices.size());
  } else {
    env.max_job_devices = 1;
    env.max_job_devices_why =
        "--job_isolation=thread trains each job on one device; multi-device jobs need "
        "--job_isolation=process";
  }
  env.wake_scheduler = [self] { self->scheduler->Wake(); };
  env.cancel_running = [self](const std::string& id) { self->scheduler->Cancel(id); };
  env.queued_job_cancelled = [self](const std::string& id) { self->ApplyRetention(id); };
  env.check_job = [self](const ResolvedJob& job, const std::vector<std::string>& train_paths,
                         const std::string& valid_path) -> absl::StatusOr<std::vector<std::string>> {
    OFT_ASSIGN_OR_RETURN(TrainingJob tj, ToTrainingJob(job, "", "", train_paths, valid_path));
    // Any worker may run the job: it must fit the largest device (the worker that gets it
    // checks its own device again before training).
    tj.device = self->options.devices[0];
    for (const auto& [device, bytes] : self->device_memory) {
      if (bytes > self->MemoryOf(tj.device)) tj.device = device;
    }
    absl::StatusOr<JobCheckResult> check = CheckTrainingJob(tj, self->MemoryOf(tj.device));
    if (!check.ok()) {
      // The runner names fields relative to the spec ("adapter_config.r"): say "spec.".
      return absl::Status(check.status().code(),
                          self->redactor.Redact(absl::StrCat("spec.", check.status().message())));
    }
    for (std::string& w : check->warnings) w = self->redactor.Redact(w);
    return check->warnings;
  };
  env.limits.max_adapter_weights_bytes = options.max_upload_bytes;
  // ImportAdapter: the adapter must load onto the served base it names (serving_bases are
  // filled below, before any RPC is served).
  env.check_adapter = [self](const std::string& base_model, const std::string& dir) -> absl::Status {
    for (const LoadedServingBase& b : self->serving_bases) {
      // Errors name the file and tensor; ImportAdapter replaces its staging path.
      if (b.served.name == base_model) return CheckAdapterLoads(b.served, dir);
    }
    return absl::NotFoundError(absl::StrCat("metadata.base_model: \"", base_model, "\" is not served"));
  };
  s.store->SetEventListener([self](const std::string& job_id, int64_t) { self->events.Publish(job_id); });

  s.job_service = std::make_unique<JobServiceImpl>(&env);
  s.dataset_service = std::make_unique<DatasetServiceImpl>(&env);
  s.adapter_service = std::make_unique<AdapterServiceImpl>(&env);
  s.model_service = std::make_unique<ModelServiceImpl>(&env);

  // Inference: every base model loaded once for serving (its own instance, no adapters).
  {
    InferenceOptions io;
    io.store = s.adapters.get();
    for (const CatalogModel& m : s.catalog.models()) {
      std::optional<ChatTemplateKind> kind;
      if (m.chat_template) {
        if (auto k = ParseTemplateName(*m.chat_template); k.ok()) kind = *k;
      }
      OFT_ASSIGN_OR_RETURN(LoadedServingBase base,
                           LoadServingBase(m.name, m.dir, options.serving_device, kind,
                                           m.info.config_sha256()));
      s.serving_bases.push_back(std::move(base));
      io.bases.push_back(s.serving_bases.back().served);
    }
    io.adapter_memory_budget_bytes = options.adapter_memory_budget_bytes;
    io.state_dir = options.data_dir + "/serving";
    io.engine_threads = options.serving_threads;
    io.served_rotations =
        options.served_rotations == "fp32" ? ServedRotations::kFp32 : ServedRotations::kCompact;
    ServiceMetrics* m = s.metrics.get();
    io.on_adapter_load = [m](double seconds) { m->ObserveAdapterLoad(seconds); };
    io.on_adapters_loaded = [m](int64_t n) { m->SetAdaptersLoaded(n); };
    io.on_tokens = [m](int64_t n) { m->AddGeneratedTokens(n); };
    io.on_first_token = [m](double seconds) { m->ObserveTimeToFirstToken(seconds); };
    OFT_ASSIGN_OR_RETURN(s.inference, InferenceBackend::Create(std::move(io)));
    s.inference_service = std::make_unique<InferenceServiceImpl>(
        s.inference.get(), s.executor.get(),
        [self](grpc::CallbackServerContext* ctx) { return self->auth->Authenticate(*ctx); },
        [m](const std::string& method, const grpc::Status& status, double) {
          if (method == "/oft.v1.InferenceService/Generate") {
            m->GenerateFinished(GrpcCodeName(status.error_code()));
          }
        });
    // An adapter version an alias points at cannot be deleted (move the alias first).
    env.adapter_pinned = [self](const std::string& tenant, const std::string& name,
                                int64_t version) -> absl::Status {
      for (const AliasInfo& a : self->inference->ListLoadedAdapters(tenant).aliases) {
        if (a.target.name == name && a.target.version == version) {
          return absl::FailedPreconditionError(absl::StrCat(
              "alias '", a.alias, "' points at ", name, ":", version, "; move or delete it first"));
        }
      }
      return absl::OkStatus();
    };
  }

  grpc::EnableDefaultHealthCheckService(true);
  // Reflection in both versions: v1alpha from gRPC's plugin, v1 (not in gRPC 1.51) our own.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  s.reflection_v1 = AddReflectionV1(builder);
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!options.tls_cert.empty() || !options.tls_key.empty()) {
    if (options.tls_cert.empty() || options.tls_key.empty()) {
      return absl::InvalidArgumentError("--tls_cert and --tls_key must be given together");
    }
    grpc::SslServerCredentialsOptions ssl;
    OFT_ASSIGN_OR_RETURN(std::string cert, ReadPem("--tls_cert", options.tls_cert));
    OFT_ASSIGN_OR_RETURN(std::string key, ReadPem("--tls_key", options.tls_key));
    ssl.pem_key_cert_pairs.push_back({key, cert});
    if (!options.tls_client_ca.empty()) {
      OFT_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem("--tls_client_ca", options.tls_client_ca));
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc::SslServerCredentials(ssl);
  } else if (!options.tls_client_ca.empty()) {
    return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
  }
  // gRPC sets SO_REUSEPORT by default, which would let a second server bind this same port and
  // share its connections; a port in use must make the second start fail instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.listen, creds, &s.port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  builder.RegisterService(s.job_service.get());
  builder.RegisterService(s.dataset_service.get());
  builder.RegisterService(s.adapter_service.get());
  builder.RegisterService(s.model_service.get());
  builder.RegisterService(s.inference_service.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(MakeRpcMetricsInterceptorFactory(s.metrics.get()));
  if (LogEnabled(LogLevel::kDebug)) interceptors.push_back(MakeRpcLogInterceptorFactory(s.auth.get()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  s.grpc_server = builder.BuildAndStart();
  if (!s.grpc_server || s.port == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen=", options.listen, ": cannot listen there (address in use or invalid)"));
  }
  if (!options.http_listen.empty()) {
    s.openai.backend = s.inference.get();
    s.openai.adapters = s.adapters.get();
    s.openai.service = &s.env;
    s.openai.jobs = s.job_service.get();
    for (const CatalogModel& m : s.catalog.models()) s.openai.base_models.push_back(m.name);
    s.openai.authenticate = [self](const std::vector<std::string>& values) {
      return self->auth->AuthenticateBearer(values);
    };
    HttpFrontendOptions ho;
    ho.listen = options.http_listen;
    ho.tls_cert = options.tls_cert;
    ho.tls_key = options.tls_key;
    ho.tls_client_ca = options.tls_client_ca;
    ho.threads = options.http_threads;
    ho.max_body_bytes = options.max_message_bytes;
    ho.max_upload_bytes = options.max_upload_bytes;
    ho.registry = s.registry;
    ho.ready = [self] { return self->ready.load(); };
    ho.request_metrics = true;
    ho.log = [](const HttpAccess& a) {
      LogEvent(LogLevel::kInfo, "http request",
               {{"method", a.method}, {"path", a.path}, {"route", a.route}, {"status", a.status},
                {"bytes", a.bytes}, {"peer", a.peer}, {"latency_ms", a.latency_ms}});
    };
    ho.openai = &s.openai;
    absl::StatusOr<std::unique_ptr<HttpFrontend>> http = HttpFrontend::Start(ho);
    if (!http.ok()) {
      return absl::Status(http.status().code(), absl::StrCat("--http_listen: ", http.status().message()));
    }
    s.http = std::move(*http);
    s.http_port = s.http->port();
  }
  s.SetHealth(true);
  if (grpc::HealthCheckServiceInterface* health = s.grpc_server->GetHealthCheckService()) {
    // Not touched by SetHealth (saturation): which path each custom kernel takes.
    for (size_t i = 0; i < s.health_names.size(); ++i) {
      health->SetServingStatus(s.health_names[i], s.kernel_health[i]);
    }
  }
  s.scheduler->Start();
  s.stats_thread = std::thread([self] { self->StatsLoop(); });
  if (options.health_saturation_seconds > 0) {
    s.saturation_thread = std::thread([self] { self->SaturationLoop(); });
  }

  // Logged before the port files are written: whoever waits for a port file
  // (tests, scripts) then finds this line in the log.
  Log(absl::StrCat("serving gRPC on port ", s.port, ", metrics on port ", s.metrics_port,
                   ", HTTP API on port ", s.http_port,
                   ", models: ", s.catalog.Names(), ", data_dir ", options.data_dir));
  if (!options.port_file.empty()) {
    OFT_RETURN_IF_ERROR(WriteFileAtomic(options.port_file, absl::StrCat(s.port, "\n")));
  }
  if (!options.metrics_port_file.empty() && s.metrics_port != 0) {
    OFT_RETURN_IF_ERROR(WriteFileAtomic(options.metrics_port_file, absl::StrCat(s.metrics_port, "\n")));
  }
  if (!options.http_port_file.empty() && s.http_port != 0) {
    OFT_RETURN_IF_ERROR(WriteFileAtomic(options.http_port_file, absl::StrCat(s.http_port, "\n")));
  }
  return std::unique_ptr<OftServer>(new OftServer(std::move(impl)));
}

void OftServer::Shutdown() {
  Impl& s = *impl_;
  {
    absl::MutexLock lock(&s.shutdown_mu);
    if (s.shut_down) return;
    s.shut_down = true;
  }
  Log("shutting down: no new calls; checkpointing running jobs");
  if (grpc::HealthCheckServiceInterface* h = s.grpc_server->GetHealthCheckService()) {
    h->Shutdown();
  }
  s.ready = false;
  // Running jobs checkpoint while the API winds down (waiting for in-flight calls first
  // could let a short job run to its end instead of being checkpointed and requeued).
  s.scheduler->StopRunning();
  // HTTP handlers end first: their streams end when the engines stop (UNAVAILABLE).
  if (s.http) {
    s.openai.stopping->store(true);
    s.http->Stop();
  }
  s.grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(3));
  s.scheduler->Shutdown();
  s.store->SetEventListener(nullptr);
  s.executor->Shutdown();
  s.stop_stats.Notify();
  if (s.stats_thread.joinable()) s.stats_thread.join();
  if (s.saturation_thread.joinable()) s.saturation_thread.join();
  s.grpc_server->Wait();
  if (s.exposer) s.exposer->Stop();
  Log("stopped");
  s.done.Notify();
}

}  // namespace oft
