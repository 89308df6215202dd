// oft.v1.DatasetService: validated uploads (client stream), content-addressed under
// <data_dir>/datasets/<sha256>.jsonl, records in the JobStore.
#ifndef OFT_SERVER_SERVICE_DATASET_SERVICE_H_
#define OFT_SERVER_SERVICE_DATASET_SERVICE_H_

#include "oft/v1/datasets.grpc.pb.h"
#include "server/service/dataset_ops.h"
#include "server/service/service_env.h"

namespace oft {

class DatasetServiceImpl final : public oft::v1::DatasetService::CallbackService {
 public:
  explicit DatasetServiceImpl(const ServiceEnv* env) : env_(env) {}

  grpc::ServerReadReactor<oft::v1::UploadDatasetRequest>* UploadDataset(
      grpc::CallbackServerContext* ctx, oft::v1::Dataset* response) override;
  grpc::ServerUnaryReactor* GetDataset(grpc::CallbackServerContext* ctx,
                                       const oft::v1::GetDatasetRequest* request,
                                       oft::v1::Dataset* response) override;
  grpc::ServerUnaryReactor* ListDatasets(grpc::CallbackServerContext* ctx,
                                         const oft::v1::ListDatasetsRequest* request,
                                         oft::v1::ListDatasetsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteDataset(grpc::CallbackServerContext* ctx,
                                          const oft::v1::DeleteDatasetRequest* request,
                                          google::protobuf::Empty* response) override;

 private:
  const ServiceEnv* env_;
};

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_DATASET_SERVICE_H_
