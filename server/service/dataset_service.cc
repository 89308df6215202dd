#include "server/service/dataset_service.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/file_util.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"
#include "server/service/dataset_ops.h"
#include "server/service/upload_file.h"
#include "server/service/upload_reactor.h"

namespace oft {
namespace {

using oft::v1::UploadDatasetRequest;

// Receives one upload into a temp file, then validates and publishes it on the executor.
class DatasetUploadReactor final : public UploadReactor<UploadDatasetRequest> {
 public:
  DatasetUploadReactor(const ServiceEnv* env, grpc::CallbackServerContext* ctx,
                       oft::v1::Dataset* response)
      : UploadReactor(env, ctx), response_(response) {
    Start();
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Consume(const UploadDatasetRequest& request) override {
    if (request.has_header()) {
      if (have_header_) return absl::InvalidArgumentError("header: sent twice (only the first message carries it)");
      have_header_ = true;
      header_ = request.header();
      OFT_RETURN_IF_ERROR(ValidateName("header.name", header_.name()));
      if (!IsSha256Hex(header_.sha256())) {
        return absl::InvalidArgumentError("header.sha256 must be 64 lowercase hex digits");
      }
      if (header_.size_bytes() <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("header.size_bytes must be > 0, got ", header_.size_bytes()));
      }
      if (header_.size_bytes() > env_->limits.max_upload_bytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("header.size_bytes ", header_.size_bytes(), " is over the upload limit of ",
                         env_->limits.max_upload_bytes, " bytes"));
      }
      OFT_ASSIGN_OR_RETURN(file_, UploadFile::Create(NewUploadTempPath(*env_), "the upload file"));
      return absl::OkStatus();
    }
    if (!request.has_chunk()) return absl::InvalidArgumentError("message without header or chunk");
    if (!have_header_) {
      return absl::InvalidArgumentError("header: the first message must carry the upload header");
    }
    const std::string& chunk = request.chunk();
    OFT_RETURN_IF_ERROR(ValidateChunkSize(chunk, env_->limits.max_chunk_bytes));
    const int64_t received = file_->size() + static_cast<int64_t>(chunk.size());
    if (received > env_->limits.max_upload_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "upload is over the limit of ", env_->limits.max_upload_bytes, " bytes"));
    }
    if (received > header_.size_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat("upload is longer than header.size_bytes (",
                                                     header_.size_bytes(), ")"));
    }
    return file_->Append(chunk);
  }

  absl::Status Complete() override {
    if (!have_header_) {
      return absl::InvalidArgumentError("header: the first message must carry the upload header");
    }
    if (file_->size() != header_.size_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat("size mismatch: header.size_bytes is ",
                                                     header_.size_bytes(), ", received ", file_->size(),
                                                     " bytes"));
    }
    OFT_RETURN_IF_ERROR(file_->Finish());
    const std::string sha = file_->sha256();
    if (sha != header_.sha256()) {
      return absl::InvalidArgumentError(absl::StrCat("sha256 mismatch: header.sha256 is ",
                                                     header_.sha256(), ", received bytes hash to ", sha));
    }
    ReceivedUpload upload;
    upload.tenant = tenant_;
    upload.name = header_.name();
    upload.temp_path = file_->path();
    upload.sha256 = sha;
    upload.size_bytes = file_->size();
    upload.requested_format = header_.format();
    absl::StatusOr<DatasetRecord> stored = PublishUpload(*env_, upload);
    if (upload.temp_path.empty()) file_->Keep();  // moved to its final path
    OFT_RETURN_IF_ERROR(stored.status());
    *response_ = DatasetToProto(*stored);
    return absl::OkStatus();
  }

  oft::v1::Dataset* response_;
  oft::v1::UploadDatasetHeader header_;
  bool have_header_ = false;
  std::unique_ptr<UploadFile> file_;  // set by the header
};

absl::Status ValidateDatasetId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("id is required");
  return ValidateName("id", id);
}

}  // namespace

grpc::ServerReadReactor<UploadDatasetRequest>* DatasetServiceImpl::UploadDataset(
    grpc::CallbackServerContext* ctx, oft::v1::Dataset* response) {
  return new DatasetUploadReactor(env_, ctx, response);
}

grpc::ServerUnaryReactor* DatasetServiceImpl::GetDataset(grpc::CallbackServerContext* ctx,
                                                         const oft::v1::GetDatasetRequest* request,
                                                         oft::v1::Dataset* response) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request, response]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    OFT_RETURN_IF_ERROR(ValidateDatasetId(request->id()));
    OFT_ASSIGN_OR_RETURN(DatasetRecord r, env_->datasets->GetDataset(tenant, request->id()));
    *response = DatasetToProto(r);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* DatasetServiceImpl::ListDatasets(
    grpc::CallbackServerContext* ctx, const oft::v1::ListDatasetsRequest* request,
    oft::v1::ListDatasetsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request, response]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    OFT_ASSIGN_OR_RETURN(DatasetPage page, env_->datasets->ListDatasets(tenant, request->page_size(),
                                                                     request->page_token()));
    for (const DatasetRecord& r : page.datasets) *response->add_datasets() = DatasetToProto(r);
    response->set_next_page_token(page.next_page_token);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* DatasetServiceImpl::DeleteDataset(
    grpc::CallbackServerContext* ctx, const oft::v1::DeleteDatasetRequest* request,
    google::protobuf::Empty*) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    OFT_RETURN_IF_ERROR(ValidateDatasetId(request->id()));
    return DeleteDatasetAndFile(*env_, tenant, request->id()).status();
  });
  return reactor;
}

}  // namespace oft
