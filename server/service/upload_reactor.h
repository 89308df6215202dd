// The shape every client-streaming upload RPC shares (UploadDataset, ImportAdapter): the
// caller is authenticated first, each message is handed to Consume() as it arrives (on
// gRPC's thread; the next read starts only after it returns OK), and once the client
// half-closes (or the call breaks) Complete() runs on the executor to check and publish.
// The first error finishes the call; Finish is called exactly once. A derived class calls
// Start() at the end of its constructor and deletes itself in OnDone().
#ifndef OFT_SERVER_SERVICE_UPLOAD_REACTOR_H_
#define OFT_SERVER_SERVICE_UPLOAD_REACTOR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/service/service_env.h"

namespace oft {

template <typename Request>
class UploadReactor : public grpc::ServerReadReactor<Request> {
 public:
  void OnReadDone(bool ok) override {
    if (finished_) return;
    if (!ok) {  // the client closed its side (or the call broke): check and publish
      if (!env_->executor->Schedule([this] { RunComplete(); })) {
        Fail(absl::UnavailableError("server is shutting down"));
      }
      return;
    }
    absl::Status st = Consume(request_);
    if (!st.ok()) {
      Fail(st);
      return;
    }
    this->StartRead(&request_);
  }

 protected:
  UploadReactor(const ServiceEnv* env, grpc::CallbackServerContext* ctx) : env_(env), ctx_(ctx) {}

  // Authenticates the caller and starts reading.
  void Start() {
    absl::StatusOr<std::string> tenant = env_->auth->Authenticate(*ctx_);
    if (!tenant.ok()) {
      Fail(tenant.status());
      return;
    }
    tenant_ = *tenant;
    this->StartRead(&request_);
  }

  // One message; an error ends the call with it.
  virtual absl::Status Consume(const Request& request) = 0;
  // After the last message, on the executor: check, publish and fill the response.
  virtual absl::Status Complete() = 0;

  void Fail(const absl::Status& st) {
    if (finished_) return;
    finished_ = true;
    this->Finish(ToGrpcStatus(st));
  }

  const ServiceEnv* const env_;
  grpc::CallbackServerContext* const ctx_;
  std::string tenant_;

 private:
  void RunComplete() {
    absl::Status st = Complete();
    if (!st.ok()) {
      Fail(st);
      return;
    }
    finished_ = true;
    this->Finish(grpc::Status::OK);
  }

  Request request_;
  bool finished_ = false;  // touched by one thread at a time (reads are sequential)
};

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_UPLOAD_REACTOR_H_
