// A gRPC server interceptor that records every RPC's latency and final status code in
// ServiceMetrics (oft_rpc_duration_seconds / oft_rpcs_total by method and code), for all
// services at once. Time runs from the interceptor's creation (the call's arrival) to the
// status being sent.
#ifndef OFT_SERVER_SERVICE_RPC_METRICS_INTERCEPTOR_H_
#define OFT_SERVER_SERVICE_RPC_METRICS_INTERCEPTOR_H_

#include <memory>

#include "grpcpp/support/server_interceptor.h"
#include "server/metrics/metrics.h"

namespace oft {

// `metrics` must outlive the server the factory is installed on.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRpcMetricsInterceptorFactory(ServiceMetrics* metrics);

// "OK", "NOT_FOUND", ... for a gRPC status code.
const char* GrpcCodeName(int code);

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_RPC_METRICS_INTERCEPTOR_H_
