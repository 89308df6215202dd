// oft.v1.AdapterService.ImportAdapter: receives an externally trained PEFT OFT adapter
// (adapter_config.json + adapter_model.safetensors) into a private staging directory
// <data_dir>/imports/.import-<random>, validates it (strict config parse, known base model,
// ServiceEnv::check_adapter loads it onto that base) and publishes it through
// AdapterStore::Publish, the path a finished job takes. Nothing is visible before every
// check passed; the staging directory is removed when the call ends, whatever the outcome,
// and SweepTemporaryFiles removes one a crash left. Contract: proto/oft/v1/adapters.proto.
#ifndef OFT_SERVER_SERVICE_ADAPTER_IMPORT_H_
#define OFT_SERVER_SERVICE_ADAPTER_IMPORT_H_

#include "grpcpp/grpcpp.h"
#include "oft/v1/adapters.pb.h"
#include "server/service/service_env.h"

namespace oft {

// The reactor for one ImportAdapter call; it deletes itself when the call is done.
grpc::ServerReadReactor<oft::v1::ImportAdapterRequest>* NewImportAdapterReactor(
    const ServiceEnv* env, grpc::CallbackServerContext* ctx, oft::v1::Adapter* response);

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_ADAPTER_IMPORT_H_
