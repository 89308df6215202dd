#include "server/service/adapter_import.h"

#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "server/artifacts/adapter_config.h"
#include "server/common/file_util.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"
#include "server/service/adapter_service.h"
#include "server/service/upload_file.h"
#include "server/service/upload_reactor.h"

namespace oft {
namespace {

namespace fs = std::filesystem;
using oft::v1::ImportAdapterRequest;

// peft_format.h's kAdapterWeightsFile; that header pulls in LibTorch, which this layer must not.
constexpr char kAdapterWeightsFile[] = "adapter_model.safetensors";
constexpr size_t kMaxDescriptionBytes = 4096;

// One file of the import: declared by its header, written as its chunks arrive.
struct IncomingFile {
  oft::v1::AdapterFile header;
  std::unique_ptr<UploadFile> file;
  bool complete = false;
};

class ImportReactor final : public UploadReactor<ImportAdapterRequest> {
 public:
  ImportReactor(const ServiceEnv* env, grpc::CallbackServerContext* ctx, oft::v1::Adapter* response)
      : UploadReactor(env, ctx), response_(response) {
    Start();
  }

  void OnDone() override {
    files_.clear();  // closes (and unlinks) what is still open
    if (!staging_.empty()) {
      std::error_code ec;
      fs::remove_all(staging_, ec);
    }
    delete this;
  }

 private:
  absl::Status Consume(const ImportAdapterRequest& request) override {
    if (request.has_metadata()) return StartImport(request.metadata());
    if (!have_metadata_) {
      return absl::InvalidArgumentError("metadata: the first message must carry the import metadata");
    }
    if (request.has_file_header()) return StartFile(request.file_header());
    if (!request.has_chunk()) {
      return absl::InvalidArgumentError("message without metadata, file_header or chunk");
    }
    if (current_ == nullptr) {
      return absl::InvalidArgumentError("chunk: a file_header must precede the file's chunks");
    }
    const std::string& chunk = request.chunk();
    OFT_RETURN_IF_ERROR(ValidateChunkSize(chunk, env_->limits.max_chunk_bytes));
    if (current_->file->size() + static_cast<int64_t>(chunk.size()) > current_->header.size_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat(current_->header.name(),
                                                     " is longer than its file_header.size_bytes (",
                                                     current_->header.size_bytes(), ")"));
    }
    return current_->file->Append(chunk);
  }

  absl::Status StartImport(const oft::v1::ImportAdapterMetadata& m) {
    if (have_metadata_) return absl::InvalidArgumentError("metadata: sent twice (only the first message carries it)");
    have_metadata_ = true;
    metadata_ = m;
    if (m.name().empty()) return absl::InvalidArgumentError("metadata.name is required");
    OFT_RETURN_IF_ERROR(ValidateName("metadata.name", m.name()));
    if (m.base_model().empty()) return absl::InvalidArgumentError("metadata.base_model is required");
    if (env_->models->Find(m.base_model()) == nullptr) {
      return absl::NotFoundError(absl::StrCat("metadata.base_model: this server has no base model \"",
                                              m.base_model(), "\" (it has: ", env_->models->Names(), ")"));
    }
    if (m.description().size() > kMaxDescriptionBytes) {
      return absl::InvalidArgumentError(absl::StrCat("metadata.description is ", m.description().size(),
                                                     " bytes, over the limit of ", kMaxDescriptionBytes));
    }
    const std::string dir = absl::StrFormat("%s/imports/.import-%016x", env_->data_dir,
                                            absl::Uniform<uint64_t>(absl::BitGen()));
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("creating the import staging directory: ", ec.message()));
    staging_ = dir;
    return absl::OkStatus();
  }

  absl::Status StartFile(const oft::v1::AdapterFile& h) {
    OFT_RETURN_IF_ERROR(CloseCurrent());
    int64_t limit = 0;
    if (h.name() == kAdapterConfigFile) {
      limit = env_->limits.max_adapter_config_bytes;
    } else if (h.name() == kAdapterWeightsFile) {
      limit = env_->limits.max_adapter_weights_bytes;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("file_header.name must be ", kAdapterConfigFile, " or ",
                                                     kAdapterWeightsFile, ", got \"", h.name(), "\""));
    }
    if (files_.count(h.name()) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("file_header.name: ", h.name(), " sent twice"));
    }
    if (h.size_bytes() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("file_header.size_bytes of ", h.name(), " must be > 0, got ", h.size_bytes()));
    }
    if (h.size_bytes() > limit) {
      return absl::ResourceExhaustedError(absl::StrCat("file_header.size_bytes of ", h.name(), " is ",
                                                       h.size_bytes(), ", over the limit of ", limit,
                                                       " bytes"));
    }
    if (!h.sha256().empty() && !IsSha256Hex(h.sha256())) {
      return absl::InvalidArgumentError(absl::StrCat("file_header.sha256 of ", h.name(),
                                                     " must be empty or 64 lowercase hex digits"));
    }
    IncomingFile& f = files_[h.name()];
    f.header = h;
    OFT_ASSIGN_OR_RETURN(f.file, UploadFile::Create(absl::StrCat(staging_, "/", h.name()), h.name()));
    current_ = &f;
    return absl::OkStatus();
  }

  // Checks the open file against its header and closes it.
  absl::Status CloseCurrent() {
    if (current_ == nullptr) return absl::OkStatus();
    IncomingFile& f = *current_;
    current_ = nullptr;
    if (f.file->size() != f.header.size_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat("size mismatch: file_header.size_bytes of ",
                                                     f.header.name(), " is ", f.header.size_bytes(),
                                                     ", received ", f.file->size(), " bytes"));
    }
    OFT_RETURN_IF_ERROR(f.file->Finish());
    if (!f.header.sha256().empty() && f.header.sha256() != f.file->sha256()) {
      return absl::InvalidArgumentError(absl::StrCat("sha256 mismatch: file_header.sha256 of ",
                                                     f.header.name(), " is ", f.header.sha256(),
                                                     ", received bytes hash to ", f.file->sha256()));
    }
    f.file->Keep();  // the staging directory goes as a whole
    f.complete = true;
    return absl::OkStatus();
  }

  absl::Status Complete() override {
    if (ctx_->IsCancelled()) return absl::CancelledError("the import was cancelled");
    if (!have_metadata_) {
      return absl::InvalidArgumentError("metadata: the first message must carry the import metadata");
    }
    OFT_RETURN_IF_ERROR(CloseCurrent());
    for (const char* name : {kAdapterConfigFile, kAdapterWeightsFile}) {
      if (files_.count(name) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("file_header: ", name, " was not sent"));
      }
    }
    OFT_ASSIGN_OR_RETURN(std::string config_text,
                         ReadFile(absl::StrCat(staging_, "/", kAdapterConfigFile),
                                  static_cast<size_t>(env_->limits.max_adapter_config_bytes)));
    OFT_ASSIGN_OR_RETURN(PeftAdapterConfig config, ParseAdapterConfig(config_text));
    if (env_->check_adapter) {
      absl::Status loads = env_->check_adapter(metadata_.base_model(), staging_);
      if (!loads.ok()) {
        // Name the files as the client sent them, not by their staging path.
        return absl::Status(loads.code(), absl::StrReplaceAll(loads.message(), {{staging_ + "/", ""},
                                                                                 {staging_, "the import"}}));
      }
    }
    const CatalogModel* base = env_->models->Find(metadata_.base_model());
    if (base == nullptr) return absl::NotFoundError(absl::StrCat("metadata.base_model: ", metadata_.base_model()));
    nlohmann::json record = {
        {"imported", true},
        {"description", metadata_.description()},
        {"adapter_config", nlohmann::json::parse(AdapterConfigToJson(config))},
    };
    PublishInfo info;
    info.base_model = metadata_.base_model();
    info.base_model_config_sha256 = base->info.config_sha256();
    info.hyperparameters_json = record.dump();
    OFT_ASSIGN_OR_RETURN(AdapterManifest m, env_->adapters->Publish(tenant_, metadata_.name(), staging_, info));
    *response_ = ManifestToProto(m);
    return AddManifestFile(*env_, tenant_, m, response_);
  }

  oft::v1::Adapter* response_;
  bool have_metadata_ = false;
  oft::v1::ImportAdapterMetadata metadata_;
  std::string staging_;  // "" until the metadata was accepted
  std::map<std::string, IncomingFile> files_;
  IncomingFile* current_ = nullptr;  // the file whose chunks come next
};

}  // namespace

grpc::ServerReadReactor<ImportAdapterRequest>* NewImportAdapterReactor(const ServiceEnv* env,
                                                                      grpc::CallbackServerContext* ctx,
                                                                      oft::v1::Adapter* response) {
  return new ImportReactor(env, ctx, response);
}

}  // namespace oft
