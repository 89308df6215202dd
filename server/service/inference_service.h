// oft.v1.InferenceService: thin gRPC callback handlers over InferenceBackend
// (server/serving/serving.h), which holds the adapter registry and the generation engines.
// No LibTorch here.
//
// Unary methods finish on a worker thread (loads may read and verify files). Generate is a
// ServerWriteReactor with one write in flight: tokens produced while a write is pending are
// coalesced into the next response; OnCancel (client cancel, deadline) cancels the request
// in the engine, which stops it before its next token.
//
// Thread-safe; the backend must outlive the service and every call in flight.
#ifndef OFT_SERVER_SERVICE_INFERENCE_SERVICE_H_
#define OFT_SERVER_SERVICE_INFERENCE_SERVICE_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "oft/v1/inference.grpc.pb.h"
#include "server/common/executor.h"

namespace oft {

class InferenceBackend;

class InferenceServiceImpl final : public oft::v1::InferenceService::CallbackService {
 public:
  // The caller's tenant, or UNAUTHENTICATED.
  using Authenticate =
      std::function<absl::StatusOr<std::string>(grpc::CallbackServerContext* ctx)>;
  // Called once per RPC when it ends: method like "/oft.v1.InferenceService/Generate".
  using ObserveRpc =
      std::function<void(const std::string& method, const grpc::Status& status, double seconds)>;

  // `backend` and `executor` are not owned; the executor runs the blocking part of every
  // call (authentication, adapter loads, tokenization) and must outlive the gRPC server.
  // `observe_rpc` may be empty.
  InferenceServiceImpl(InferenceBackend* backend, Executor* executor, Authenticate authenticate,
                       ObserveRpc observe_rpc);

  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* ctx,
                                        const oft::v1::LoadAdapterRequest* request,
                                        oft::v1::LoadedAdapter* response) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* ctx,
                                          const oft::v1::UnloadAdapterRequest* request,
                                          oft::v1::UnloadAdapterResponse* response) override;
  grpc::ServerUnaryReactor* ListLoadedAdapters(
      grpc::CallbackServerContext* ctx, const oft::v1::ListLoadedAdaptersRequest* request,
      oft::v1::ListLoadedAdaptersResponse* response) override;
  grpc::ServerUnaryReactor* SetAlias(grpc::CallbackServerContext* ctx,
                                     const oft::v1::SetAliasRequest* request,
                                     oft::v1::Alias* response) override;
  grpc::ServerUnaryReactor* DeleteAlias(grpc::CallbackServerContext* ctx,
                                        const oft::v1::DeleteAliasRequest* request,
                                        oft::v1::DeleteAliasResponse* response) override;
  grpc::ServerWriteReactor<oft::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const oft::v1::GenerateRequest* request) override;

 private:
  class GenerateReactor;
  // Authenticates and runs `fn` (returning the status to send) on the executor, then
  // finishes the call.
  grpc::ServerUnaryReactor* RunUnary(grpc::CallbackServerContext* ctx, const char* method,
                                     std::function<absl::Status(const std::string& tenant)> fn);

  InferenceBackend* const backend_;
  Executor* const executor_;
  const Authenticate authenticate_;
  const ObserveRpc observe_rpc_;
};

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_INFERENCE_SERVICE_H_
