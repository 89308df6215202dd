// oft.v1.JobService over the JobStore and the scheduler (callback API). Handlers
// authenticate, then run their blocking part on the executor; WatchJob streams from the
// persistent event log with one write in flight, woken by the EventHub.
#ifndef OFT_SERVER_SERVICE_JOB_SERVICE_H_
#define OFT_SERVER_SERVICE_JOB_SERVICE_H_

#include "oft/v1/jobs.grpc.pb.h"
#include "server/service/service_env.h"

namespace oft {

class JobServiceImpl final : public oft::v1::JobService::CallbackService {
 public:
  explicit JobServiceImpl(const ServiceEnv* env) : env_(env) {}

  grpc::ServerUnaryReactor* CreateJob(grpc::CallbackServerContext* ctx,
                                      const oft::v1::CreateJobRequest* request,
                                      oft::v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx,
                                   const oft::v1::GetJobRequest* request,
                                   oft::v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const oft::v1::ListJobsRequest* request,
                                     oft::v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx,
                                      const oft::v1::CancelJobRequest* request,
                                      oft::v1::Job* response) override;
  grpc::ServerWriteReactor<oft::v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* ctx, const oft::v1::WatchJobRequest* request) override;

  // The logic behind CreateJob, GetJob and CancelJob for an authenticated tenant: the HTTP
  // fine-tuning API (server/http/openai_fine_tuning.h) calls these too.
  absl::Status DoCreateJob(const std::string& tenant, const oft::v1::CreateJobRequest& request,
                           oft::v1::Job* response) const;
  absl::Status DoGetJob(const std::string& tenant, const std::string& id, oft::v1::Job* response) const;
  absl::Status DoCancelJob(const std::string& tenant, const std::string& id,
                           oft::v1::Job* response) const;

 private:
  const ServiceEnv* env_;
};

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_JOB_SERVICE_H_
