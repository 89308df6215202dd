#include "server/service/adapter_service.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/file_util.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"
#include "server/service/adapter_import.h"

namespace oft {
namespace {

using oft::v1::DownloadAdapterResponse;

absl::Status ValidateRef(const oft::v1::AdapterVersionRef& ref, bool allow_latest) {
  if (ref.name().empty()) return absl::InvalidArgumentError("ref.name is required");
  OFT_RETURN_IF_ERROR(ValidateName("ref.name", ref.name()));
  if (ref.version() < 0 || (!allow_latest && ref.version() == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ref.version must be ", allow_latest ? ">= 0 (0 = latest)" : "> 0", ", got ", ref.version()));
  }
  return absl::OkStatus();
}

// Page tokens: "<offset>:<name filter>", bound to the filter they were issued for.
absl::StatusOr<size_t> ParsePageToken(const std::string& token, const std::string& filter) {
  if (token.empty()) return 0;
  std::pair<std::string, std::string> parts = absl::StrSplit(token, absl::MaxSplits(':', 1));
  size_t offset = 0;
  if (!absl::SimpleAtoi(parts.first, &offset) || parts.second != filter) {
    return absl::InvalidArgumentError("page_token is invalid or was issued for another filter");
  }
  return offset;
}

// Streams the files of one version: for each, verify its hash, send its header, then
// 1 MiB chunks. File reads run on the executor; one write is in flight at a time.
class DownloadReactor final : public grpc::ServerWriteReactor<DownloadAdapterResponse> {
 public:
  DownloadReactor(const ServiceEnv* env, grpc::CallbackServerContext* ctx,
                  oft::v1::DownloadAdapterRequest request)
      : env_(env), ctx_(ctx), request_(std::move(request)) {
    if (!env_->executor->Schedule([this] { Prepare(); })) {
      Fail(absl::UnavailableError("server is shutting down"));
    }
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Fail(absl::CancelledError("client stopped reading"));
      return;
    }
    if (!env_->executor->Schedule([this] { Next(); })) {
      Fail(absl::UnavailableError("server is shutting down"));
    }
  }
  void OnDone() override {
    if (fd_ >= 0) close(fd_);
    delete this;
  }

 private:
  void Prepare() {
    absl::Status st = [&]() -> absl::Status {
      OFT_ASSIGN_OR_RETURN(tenant_, env_->auth->Authenticate(*ctx_));
      OFT_RETURN_IF_ERROR(ValidateRef(request_.ref(), /*allow_latest=*/true));
      OFT_ASSIGN_OR_RETURN(manifest_,
                           env_->adapters->Get(tenant_, request_.ref().name(), request_.ref().version()));
      OFT_ASSIGN_OR_RETURN(dir_, env_->adapters->VersionDir(tenant_, manifest_.name, manifest_.version));
      if (request_.file_names().empty()) {
        for (const auto& [name, sha] : manifest_.files) files_.push_back(name);
        // manifest.json itself is part of a version's files.
        files_.push_back("manifest.json");
      } else {
        for (const std::string& f : request_.file_names()) {
          if (f != "manifest.json" && manifest_.files.count(f) == 0) {
            return absl::NotFoundError(absl::StrCat("file_names: version ", manifest_.version, " of '",
                                                    manifest_.name, "' has no file '", f, "'"));
          }
          files_.push_back(f);
        }
      }
      return absl::OkStatus();
    }();
    if (!st.ok()) {
      Fail(st);
      return;
    }
    Next();
  }

  // Sends the next message: a chunk of the open file, or the next file's header, or
  // finishes. Nothing here touches a member after StartWrite: the write may complete and
  // run the next Next() (or OnDone) on another thread at once.
  void Next() {
    bool finish = false;
    absl::Status st = [&]() -> absl::Status {
      if (fd_ >= 0) {
        std::string buf(static_cast<size_t>(env_->limits.max_chunk_bytes), '\0');
        ssize_t n;
        do {
          n = read(fd_, buf.data(), buf.size());
        } while (n < 0 && errno == EINTR);
        if (n < 0) return ErrnoStatus(errno, "reading " + current_);
        if (n > 0) {
          buf.resize(static_cast<size_t>(n));
          out_.Clear();
          out_.set_chunk(std::move(buf));
          StartWrite(&out_);
          return absl::OkStatus();
        }
        close(fd_);
        fd_ = -1;
      }
      if (next_file_ >= files_.size()) {
        finish = true;
        return absl::OkStatus();
      }
      current_ = files_[next_file_++];
      const std::string path = dir_ + "/" + current_;
      OFT_ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
      int64_t size = 0;
      if (current_ != "manifest.json") {
        if (sha != manifest_.files[current_]) {
          return absl::DataLossError(absl::StrCat("stored file ", current_, " of '", manifest_.name,
                                                  "' version ", manifest_.version,
                                                  " no longer matches its manifest hash"));
        }
        size = manifest_.file_sizes[current_];
      } else {
        OFT_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
        size = static_cast<int64_t>(text.size());
      }
      fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_ < 0) return ErrnoStatus(errno, "opening " + current_);
      out_.Clear();
      out_.mutable_file_header()->set_name(current_);
      out_.mutable_file_header()->set_size_bytes(size);
      out_.mutable_file_header()->set_sha256(sha);
      StartWrite(&out_);
      return absl::OkStatus();
    }();
    if (!st.ok()) {
      Fail(st);
    } else if (finish) {
      Finish(grpc::Status::OK);
    }
  }

  void Fail(const absl::Status& st) { Finish(ToGrpcStatus(st)); }

  const ServiceEnv* env_;
  grpc::CallbackServerContext* ctx_;
  const oft::v1::DownloadAdapterRequest request_;
  std::string tenant_;
  AdapterManifest manifest_;
  std::string dir_;
  std::vector<std::string> files_;
  size_t next_file_ = 0;
  std::string current_;
  int fd_ = -1;
  DownloadAdapterResponse out_;
};

}  // namespace

absl::Status AddManifestFile(const ServiceEnv& env, const std::string& tenant,
                             const AdapterManifest& m, oft::v1::Adapter* adapter) {
  OFT_ASSIGN_OR_RETURN(std::string dir, env.adapters->VersionDir(tenant, m.name, m.version));
  OFT_ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/manifest.json"));
  oft::v1::AdapterFile* f = adapter->add_files();
  f->set_name("manifest.json");
  f->set_size_bytes(static_cast<int64_t>(text.size()));
  f->set_sha256(Sha256Hex(text));
  return absl::OkStatus();
}

oft::v1::Adapter ManifestToProto(const AdapterManifest& m) {
  oft::v1::Adapter a;
  a.mutable_ref()->set_name(m.name);
  a.mutable_ref()->set_version(m.version);
  for (const auto& [name, sha] : m.files) {
    oft::v1::AdapterFile* f = a.add_files();
    f->set_name(name);
    f->set_sha256(sha);
    auto it = m.file_sizes.find(name);
    f->set_size_bytes(it == m.file_sizes.end() ? 0 : it->second);
  }
  a.set_base_model(m.base_model);
  a.set_base_model_config_sha256(m.base_model_config_sha256);
  a.set_job_id(m.job_id);
  a.set_hyperparameters_json(m.hyperparameters_json);
  for (const auto& [k, v] : m.metrics) (*a.mutable_metrics())[k] = v;
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, m.created_at, &t, &err)) {
    *a.mutable_create_time() =
        google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
  }
  return a;
}

grpc::ServerUnaryReactor* AdapterServiceImpl::ListAdapters(
    grpc::CallbackServerContext* ctx, const oft::v1::ListAdaptersRequest* request,
    oft::v1::ListAdaptersResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request, response]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    if (!request->name().empty()) OFT_RETURN_IF_ERROR(ValidateName("name", request->name()));
    if (request->page_size() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_size must be >= 0, got ", request->page_size()));
    }
    const size_t page_size = request->page_size() == 0 ? kDefaultPageSize
                                                       : std::min(request->page_size(), kMaxPageSize);
    OFT_ASSIGN_OR_RETURN(size_t offset, ParsePageToken(request->page_token(), request->name()));
    OFT_ASSIGN_OR_RETURN(std::vector<AdapterManifest> all, env_->adapters->List(tenant));
    std::vector<const AdapterManifest*> matching;
    for (const AdapterManifest& m : all) {
      if (request->name().empty() || m.name == request->name()) matching.push_back(&m);
    }
    for (size_t i = offset; i < matching.size() && i < offset + page_size; ++i) {
      oft::v1::Adapter* a = response->add_adapters();
      *a = ManifestToProto(*matching[i]);
      OFT_RETURN_IF_ERROR(AddManifestFile(*env_, tenant, *matching[i], a));
    }
    if (offset + page_size < matching.size()) {
      response->set_next_page_token(absl::StrCat(offset + page_size, ":", request->name()));
    }
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdapterServiceImpl::GetAdapter(grpc::CallbackServerContext* ctx,
                                                         const oft::v1::GetAdapterRequest* request,
                                                         oft::v1::Adapter* response) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request, response]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    OFT_RETURN_IF_ERROR(ValidateRef(request->ref(), /*allow_latest=*/true));
    OFT_ASSIGN_OR_RETURN(AdapterManifest m, env_->adapters->Get(tenant, request->ref().name(),
                                                                request->ref().version()));
    *response = ManifestToProto(m);
    return AddManifestFile(*env_, tenant, m, response);
  });
  return reactor;
}

grpc::ServerWriteReactor<DownloadAdapterResponse>* AdapterServiceImpl::DownloadAdapter(
    grpc::CallbackServerContext* ctx, const oft::v1::DownloadAdapterRequest* request) {
  return new DownloadReactor(env_, ctx, *request);
}

grpc::ServerUnaryReactor* AdapterServiceImpl::DeleteAdapter(
    grpc::CallbackServerContext* ctx, const oft::v1::DeleteAdapterRequest* request,
    google::protobuf::Empty*) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, request]() -> absl::Status {
    OFT_ASSIGN_OR_RETURN(std::string tenant, env_->auth->Authenticate(*ctx));
    OFT_RETURN_IF_ERROR(ValidateRef(request->ref(), /*allow_latest=*/false));
    OFT_RETURN_IF_ERROR(env_->adapters->Get(tenant, request->ref().name(), request->ref().version())
                            .status());
    OFT_RETURN_IF_ERROR(env_->adapter_pinned(tenant, request->ref().name(), request->ref().version()));
    return env_->adapters->Delete(tenant, request->ref().name(), request->ref().version());
  });
  return reactor;
}

grpc::ServerReadReactor<oft::v1::ImportAdapterRequest>* AdapterServiceImpl::ImportAdapter(
    grpc::CallbackServerContext* ctx, oft::v1::Adapter* response) {
  return NewImportAdapterReactor(env_, ctx, response);
}

grpc::ServerUnaryReactor* ModelServiceImpl::ListBaseModels(
    grpc::CallbackServerContext* ctx, const oft::v1::ListBaseModelsRequest*,
    oft::v1::ListBaseModelsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  FinishAsync(*env_, reactor, [this, ctx, response]() -> absl::Status {
    OFT_RETURN_IF_ERROR(env_->auth->Authenticate(*ctx).status());
    for (const CatalogModel& m : env_->models->models()) *response->add_models() = m.info;
    return absl::OkStatus();
  });
  return reactor;
}

}  // namespace oft
