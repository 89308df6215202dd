// gRPC server reflection v1 (grpc.reflection.v1.ServerReflection) for a grpc::ServerBuilder.
//
// Debian 12's gRPC 1.51 serves reflection only as grpc.reflection.v1alpha
// (InitProtoReflectionServerBuilderPlugin); current clients ask for v1 first. AddReflectionV1
// adds the v1 service beside it: same messages, answered by ReflectionResolver from the
// generated descriptor pool (every .proto compiled into the binary), with list_services naming
// every service the built server registered (its own, health, both reflection versions).
//
// The stream answers each request with one response, in order, one write in flight; the client
// ending its side ends the call with OK. No authentication, like v1alpha and health: reflection
// tells only the schema, which clients generate their stubs from anyway.
#ifndef OFT_SERVER_SERVICE_REFLECTION_V1_SERVICE_H_
#define OFT_SERVER_SERVICE_REFLECTION_V1_SERVICE_H_

#include <memory>

#include "google/protobuf/descriptor.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpcpp/server_builder.h"
#include "server/service/reflection_resolver.h"

namespace oft {

// The callback-API service. Thread-safe; handlers never block.
class ReflectionV1Service final : public grpc::reflection::v1::ServerReflection::CallbackService {
 public:
  // `pool` is not owned and must outlive the service.
  explicit ReflectionV1Service(
      const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool());

  // The resolver behind the stream; its SetServices sets what list_services answers.
  ReflectionResolver& resolver() { return resolver_; }

  grpc::ServerBidiReactor<grpc::reflection::v1::ServerReflectionRequest,
                          grpc::reflection::v1::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* context) override;

 private:
  ReflectionResolver resolver_;
};

// Makes `builder` serve a ReflectionV1Service from the generated pool: registers it, and has
// BuildAndStart hand it the built server's list of services. Call before BuildAndStart; the
// caller keeps the returned service alive as long as the server (like any registered service).
std::unique_ptr<ReflectionV1Service> AddReflectionV1(grpc::ServerBuilder& builder);

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_REFLECTION_V1_SERVICE_H_
