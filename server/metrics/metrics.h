// The service's Prometheus metrics (prefix oft_), registered on a registry the caller owns
// (no singletons: each test can own its own registry). Names and labels are the contract
// with deploy/ (dashboards, alerts); see docs/architecture.md "Metrics".
//
// Thread-safe: prometheus-cpp metrics are atomic; the per-job series map is guarded.
#ifndef OFT_SERVER_METRICS_METRICS_H_
#define OFT_SERVER_METRICS_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace oft {

class ServiceMetrics {
 public:
  // Registers every family on `registry`, which must outlive this object.
  explicit ServiceMetrics(prometheus::Registry& registry);

  ServiceMetrics(const ServiceMetrics&) = delete;
  ServiceMetrics& operator=(const ServiceMetrics&) = delete;

  // One finished RPC: oft_rpc_duration_seconds{method,code} and oft_rpcs_total{method,code}.
  // `code` is the gRPC code name ("OK", "NOT_FOUND", ...).
  void ObserveRpc(const std::string& method, const std::string& code, double seconds);

  // Jobs by state (oft_jobs{state}) and queue depth, as counted by the caller.
  void SetJobCounts(const std::map<std::string, int64_t>& by_state);
  void JobCreated();
  void JobFinished(const std::string& state);

  // A training step of `job_id` on `device`: step histogram + per-job gauges.
  void ObserveTrainStep(const std::string& job_id, const std::string& device, double seconds,
                        double tokens_per_second, double loss);
  // Removes the per-job series (the job ended).
  void ForgetJob(const std::string& job_id);

  void SetDeviceMemory(const std::string& device, double bytes);

  // One outcome of the startup kernel self-check:
  // oft_kernel_self_check{device,kernel,dtype,result} = 1 ("pass", "mismatch", "error",
  // "no_kernel", "disabled"), and oft_kernel_path{device,kernel,path} = 1 ("kernel" or
  // "composite") for the path each kernel takes afterwards.
  void SetKernelSelfCheck(const std::string& device, const std::string& kernel,
                          const std::string& dtype, const std::string& result);
  void SetKernelPath(const std::string& device, const std::string& kernel,
                     const std::string& path);

  // Inference.
  void SetAdaptersLoaded(int64_t count);
  void ObserveAdapterLoad(double seconds);
  void AddGeneratedTokens(int64_t tokens);
  void ObserveTimeToFirstToken(double seconds);
  void GenerateFinished(const std::string& code);

 private:
  struct JobSeries {
    prometheus::Gauge* tokens_per_second = nullptr;
    prometheus::Gauge* loss = nullptr;
  };

  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Gauge& queue_depth_;
  prometheus::Family<prometheus::Histogram>& step_seconds_;
  prometheus::Family<prometheus::Gauge>& tokens_per_second_;
  prometheus::Family<prometheus::Gauge>& loss_;
  prometheus::Family<prometheus::Gauge>& device_memory_;
  prometheus::Family<prometheus::Gauge>& kernel_self_check_;
  prometheus::Family<prometheus::Gauge>& kernel_path_;
  prometheus::Family<prometheus::Histogram>& rpc_seconds_;
  prometheus::Family<prometheus::Counter>& rpcs_;
  prometheus::Counter& jobs_created_;
  prometheus::Family<prometheus::Counter>& jobs_finished_;
  prometheus::Gauge& adapters_loaded_;
  prometheus::Histogram& adapter_load_seconds_;
  prometheus::Counter& generated_tokens_;
  prometheus::Histogram& ttft_seconds_;
  prometheus::Family<prometheus::Counter>& generate_requests_;

  absl::Mutex mu_;
  std::map<std::string, JobSeries> job_series_ ABSL_GUARDED_BY(mu_);
};

}  // namespace oft

#endif  // OFT_SERVER_METRICS_METRICS_H_
