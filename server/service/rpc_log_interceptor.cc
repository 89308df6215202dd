#include "server/service/rpc_log_interceptor.h"

#include <chrono>
#include <string>
#include <utility>

#include "server/common/log.h"
#include "server/service/rpc_metrics_interceptor.h"

namespace oft {
namespace {

using grpc::experimental::InterceptionHookPoints;

class RpcLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcLogInterceptor(grpc::experimental::ServerRpcInfo* info, Authenticator* auth)
      : info_(info), auth_(auth), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
      std::string tenant = "-";
      if (grpc::ServerContextBase* ctx = info_->server_context()) {
        if (absl::StatusOr<std::string> t = auth_->Authenticate(*ctx); t.ok()) tenant = *t;
      }
      const char* method = info_->method();
      LogEvent(LogLevel::kDebug, "rpc",
               {{"method", method != nullptr ? method : "unknown"},
                {"tenant", tenant},
                {"code", GrpcCodeName(status.error_code())},
                {"latency_ms", ms}});
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* const info_;
  Authenticator* const auth_;
  const std::chrono::steady_clock::time_point start_;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(Authenticator* auth) : auth_(auth) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcLogInterceptor(info, auth_);
  }

 private:
  Authenticator* const auth_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRpcLogInterceptorFactory(Authenticator* auth) {
  return std::make_unique<Factory>(auth);
}

}  // namespace oft
