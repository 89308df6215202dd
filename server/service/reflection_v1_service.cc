#include "server/service/reflection_v1_service.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/impl/server_initializer.h"

namespace oft {
namespace {

namespace refl = grpc::reflection::v1;

// Read a request, write its answer, read the next: one operation in flight at a time, so the
// request and response buffers are never shared between callbacks.
class ReflectionReactor final
    : public grpc::ServerBidiReactor<refl::ServerReflectionRequest, refl::ServerReflectionResponse> {
 public:
  explicit ReflectionReactor(const ReflectionResolver* resolver) : resolver_(resolver) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side (or the call was cancelled)
      Finish(grpc::Status::OK);
      return;
    }
    // In-memory descriptor lookups: cheap enough for the reaction itself.
    response_ = resolver_->Answer(request_);
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "reflection: the response could not be sent"));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  const ReflectionResolver* resolver_;
  refl::ServerReflectionRequest request_;
  refl::ServerReflectionResponse response_;
};

// Hands the service the server's service list once it has started (only ServerInitializer
// exposes that list). Used only inside BuildAndStart, while the service is alive.
class ReflectionV1Plugin final : public grpc::ServerBuilderPlugin {
 public:
  explicit ReflectionV1Plugin(ReflectionV1Service* service) : service_(service) {}
  std::string name() override { return "oft_reflection_v1"; }
  void InitServer(grpc::ServerInitializer* /*si*/) override {}
  void Finish(grpc::ServerInitializer* si) override {
    if (const std::vector<std::string>* names = si->GetServiceList()) {
      service_->resolver().SetServices(*names);
    }
  }
  void ChangeArguments(const std::string& /*name*/, void* /*value*/) override {}

 private:
  ReflectionV1Service* service_;
};

class ReflectionV1Option final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionV1Option(ReflectionV1Service* service) : service_(service) {}
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ReflectionV1Plugin>(service_));
  }

 private:
  ReflectionV1Service* service_;
};

}  // namespace

ReflectionV1Service::ReflectionV1Service(const google::protobuf::DescriptorPool* pool)
    : resolver_(pool) {}

grpc::ServerBidiReactor<refl::ServerReflectionRequest, refl::ServerReflectionResponse>*
ReflectionV1Service::ServerReflectionInfo(grpc::CallbackServerContext* /*context*/) {
  return new ReflectionReactor(&resolver_);
}

std::unique_ptr<ReflectionV1Service> AddReflectionV1(grpc::ServerBuilder& builder) {
  // Registered through the builder, not the plugin's ServerInitializer: BuildAndStart counts
  // only builder-registered callback services when it checks that some queue is polled.
  auto service = std::make_unique<ReflectionV1Service>();
  builder.RegisterService(service.get());
  builder.SetOption(std::make_unique<ReflectionV1Option>(service.get()));
  return service;
}

}  // namespace oft
