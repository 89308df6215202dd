// A gRPC server interceptor that logs every RPC at debug level (server/common/log.h):
// method, tenant, status code and latency, one "rpc" line per call when it ends. Installed
// only when the log level is debug, so it costs nothing otherwise.
//
// The tenant is the one the call's API key maps to, read back through the Authenticator
// when the status is sent (a cache hit for a call its handler authenticated); "-" when the
// call carried no valid key. Time runs from the call's arrival to its status being sent.
#ifndef OFT_SERVER_SERVICE_RPC_LOG_INTERCEPTOR_H_
#define OFT_SERVER_SERVICE_RPC_LOG_INTERCEPTOR_H_

#include <memory>

#include "grpcpp/support/server_interceptor.h"
#include "server/service/auth.h"

namespace oft {

// `auth` must outlive the server the factory is installed on.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRpcLogInterceptorFactory(Authenticator* auth);

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_RPC_LOG_INTERCEPTOR_H_
