// oft.v1.AdapterService (published adapter versions: list, manifest, download, delete) and
// oft.v1.ModelService (the base models of this server).
#ifndef OFT_SERVER_SERVICE_ADAPTER_SERVICE_H_
#define OFT_SERVER_SERVICE_ADAPTER_SERVICE_H_

#include "oft/v1/adapters.grpc.pb.h"
#include "oft/v1/models.grpc.pb.h"
#include "server/service/service_env.h"

namespace oft {

class AdapterServiceImpl final : public oft::v1::AdapterService::CallbackService {
 public:
  explicit AdapterServiceImpl(const ServiceEnv* env) : env_(env) {}

  grpc::ServerUnaryReactor* ListAdapters(grpc::CallbackServerContext* ctx,
                                         const oft::v1::ListAdaptersRequest* request,
                                         oft::v1::ListAdaptersResponse* response) override;
  grpc::ServerUnaryReactor* GetAdapter(grpc::CallbackServerContext* ctx,
                                       const oft::v1::GetAdapterRequest* request,
                                       oft::v1::Adapter* response) override;
  grpc::ServerWriteReactor<oft::v1::DownloadAdapterResponse>* DownloadAdapter(
      grpc::CallbackServerContext* ctx, const oft::v1::DownloadAdapterRequest* request) override;
  grpc::ServerUnaryReactor* DeleteAdapter(grpc::CallbackServerContext* ctx,
                                          const oft::v1::DeleteAdapterRequest* request,
                                          google::protobuf::Empty* response) override;
  grpc::ServerReadReactor<oft::v1::ImportAdapterRequest>* ImportAdapter(
      grpc::CallbackServerContext* ctx, oft::v1::Adapter* response) override;

 private:
  const ServiceEnv* env_;
};

class ModelServiceImpl final : public oft::v1::ModelService::CallbackService {
 public:
  explicit ModelServiceImpl(const ServiceEnv* env) : env_(env) {}
  grpc::ServerUnaryReactor* ListBaseModels(grpc::CallbackServerContext* ctx,
                                           const oft::v1::ListBaseModelsRequest* request,
                                           oft::v1::ListBaseModelsResponse* response) override;

 private:
  const ServiceEnv* env_;
};

oft::v1::Adapter ManifestToProto(const AdapterManifest& manifest);

// Appends manifest.json (size and sha256, read from the version directory) to adapter.files:
// Adapter.files lists it too, and the manifest cannot hold its own hash.
absl::Status AddManifestFile(const ServiceEnv& env, const std::string& tenant,
                             const AdapterManifest& manifest, oft::v1::Adapter* adapter);

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_ADAPTER_SERVICE_H_
