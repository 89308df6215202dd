// The composition root of oft_server: turns ServerOptions into wired components (stores,
// model catalog, metrics, scheduler, gRPC services, health, reflection) and runs them.
// Nothing else constructs these components in production.
//
// Lifecycle: Start() returns once the gRPC, metrics and HTTP ports are bound and the scheduler
// runs. Shutdown() is graceful: health goes NOT_SERVING, the gRPC server stops accepting
// (in-flight calls get a short grace period), running jobs are checkpointed and go back to
// QUEUED, then everything is torn down. Thread-safe; Shutdown() is idempotent.
#ifndef OFT_SERVER_SERVER_H_
#define OFT_SERVER_SERVER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace oft {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";          // gRPC address; port 0 = any free port
  std::string port_file;                           // bound gRPC port written here ("" = no)
  std::string metrics_listen = "127.0.0.1:9464";   // Prometheus exposer; "" = off
  std::string metrics_port_file;                   // bound metrics port written here
  // HTTP API (OpenAI-compatible /v1, plus /metrics, /healthz, /readyz); "" = off. Uses the
  // same API keys and TLS files as gRPC.
  std::string http_listen;
  std::string http_port_file;                      // bound HTTP port written here
  int http_threads = 16;                           // HTTP handler threads
  std::string data_dir = "./oft-data";             // jobs.db, datasets/, jobs/, adapters/
  std::map<std::string, std::string> models;       // base model name -> HF directory
  std::map<std::string, std::string> chat_templates;  // model name -> built-in template name
  std::vector<std::string> devices = {"cpu"};      // one training worker per entry
  int jobs_per_device = 1;                         // concurrent jobs per device worker
  int train_threads = 1;                           // torch intra-op threads per CPU job
  std::vector<std::pair<std::string, std::string>> api_keys;  // (tenant, key)
  // Every caller is tenant "default". Without it, Start() fails when no API key is stored.
  bool allow_unauthenticated = false;
  std::string tls_cert, tls_key;                   // PEM files: serve TLS when both set
  std::string tls_client_ca;                       // PEM: require verified client certs (mTLS)
  int64_t max_upload_bytes = int64_t{256} << 20;   // largest dataset upload
  int64_t max_message_bytes = int64_t{4} << 20;    // largest gRPC message either way
  int64_t max_active_jobs_per_tenant = 32;         // QUEUED + RUNNING per tenant; 0 = no cap
  int64_t adapter_memory_budget_bytes = int64_t{1} << 30;  // inference adapters
  std::string serving_device = "cpu";              // where inference runs ("cpu", "cuda:N")
  std::string cuda_kernels = "auto";  // custom kernels: auto (self-check, fall back) | on | off
  int serving_threads = 0;                         // torch threads per engine; 0 = as is
  // Served adapter rotations on a CPU fp32 model: "compact" (fp16 R - I, half the bytes per
  // decode row) or "fp32" (exact R); server/model/serving_batch.h.
  std::string served_rotations = "compact";
  int64_t device_memory_bytes = 0;  // memory a job may use; 0 = the machine's RAM (CPU)
  int executor_threads = 8;         // threads for blocking RPC work (SQLite, files)
  // Health is NOT_SERVING while queued blocking work waits longer than this; 0 = never.
  double health_saturation_seconds = 10;
  // What a finished job's checkpoints become: "none" (removed), "last" (the newest kept,
  // optimizer state included) or "all"; applied when a job ends and at start to every job
  // that is not queued. Default "none": a finished job is never resumed and its adapter is
  // published, so its checkpoints only use disk (server/train/checkpoint_retention.h).
  std::string checkpoint_retention = "none";
  // Where a job trains: "process" (default: supervised oft_train_worker children, one per
  // rank: server/train/worker_process.h; a fault in training ends those children only) or
  // "thread" (inside this process, one device per job: no fault isolation, and process-wide
  // settings are shared with the other jobs, so results may depend on them).
  std::string job_isolation = "process";
  std::string worker_binary;             // "" = oft_train_worker next to oft_server
  double worker_grace_seconds = 30;      // a cancelled worker's time to checkpoint, then SIGKILL
  double worker_heartbeat_seconds = 60;  // a worker silent this long is killed as hung
  int worker_max_restarts = 1;           // restarts of a job whose worker died
};

class OftServer {
 public:
  // Errors name the offending option (bad address, unreadable TLS file, model directory).
  static absl::StatusOr<std::unique_ptr<OftServer>> Start(const ServerOptions& options);
  ~OftServer();  // Shutdown()

  int port() const;          // bound gRPC port
  int metrics_port() const;  // bound metrics port; 0 when off
  int http_port() const;     // bound HTTP API port; 0 when off

  // Blocks until Shutdown() has finished.
  void Wait();
  void Shutdown();

 private:
  struct Impl;
  explicit OftServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace oft

#endif  // OFT_SERVER_SERVER_H_
