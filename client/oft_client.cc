#include "client/oft_client.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "server/common/grpc_status.h"
#include "server/common/status_macros.h"

namespace oft {
namespace {

constexpr size_t kChunkBytes = size_t{1} << 20;  // the API's chunk limit

absl::Status Errno(int err, absl::string_view what) {
  const std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR: return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS: return absl::PermissionDeniedError(msg);
    case ENOSPC: return absl::ResourceExhaustedError(msg);
    default: return absl::InternalError(msg);
  }
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Errno(errno, absl::StrCat("cannot read ", path));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::InternalError(absl::StrCat("error reading ", path));
  return data;
}

// Incremental lowercase-hex SHA-256 (OpenSSL EVP). The client does not link oft_common,
// which carries LibTorch.
class Sha256Hasher {
 public:
  Sha256Hasher() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256Hasher() { EVP_MD_CTX_free(ctx_); }
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;
  void Update(const void* data, size_t size) { EVP_DigestUpdate(ctx_, data, size); }
  std::string HexDigest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out(2 * len, '0');
    for (unsigned int i = 0; i < len; ++i) {
      out[2 * i] = kHex[md[i] >> 4];
      out[2 * i + 1] = kHex[md[i] & 15];
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// A file name the server sent must stay inside out_dir.
bool SafeFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

// One file being downloaded: a temp file beside the destination, hashed as it is written.
class PendingFile {
 public:
  ~PendingFile() { Abort(); }

  absl::Status Open(const std::string& dir, const v1::AdapterFile& header) {
    header_ = header;
    final_path_ = (std::filesystem::path(dir) / header.name()).string();
    static std::atomic<uint64_t> counter{0};
    tmp_path_ = absl::StrCat(dir, "/.", header.name(), ".tmp.", getpid(), ".", counter++);
    fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) return Errno(errno, absl::StrCat("cannot create ", tmp_path_));
    return absl::OkStatus();
  }

  absl::Status Write(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Errno(errno, absl::StrCat("cannot write ", tmp_path_));
      }
      done += static_cast<size_t>(n);
    }
    hasher_.Update(bytes.data(), bytes.size());
    written_ += static_cast<int64_t>(bytes.size());
    return absl::OkStatus();
  }

  // Verifies size and sha256, then fsyncs and renames into place.
  absl::Status Commit() {
    const std::string digest = hasher_.HexDigest();
    if (written_ != header_.size_bytes()) {
      Abort();
      return absl::DataLossError(absl::StrCat("adapter file ", header_.name(), ": received ",
                                              written_, " bytes, header says ",
                                              header_.size_bytes()));
    }
    if (digest != header_.sha256()) {
      Abort();
      return absl::DataLossError(absl::StrCat("adapter file ", header_.name(),
                                              ": sha256 mismatch (got ", digest, ", header says ",
                                              header_.sha256(), ")"));
    }
    if (::fsync(fd_) != 0) {
      const int err = errno;
      Abort();
      return Errno(err, absl::StrCat("cannot fsync ", tmp_path_));
    }
    ::close(fd_);
    fd_ = -1;
    if (::rename(tmp_path_.c_str(), final_path_.c_str()) != 0) {
      const int err = errno;
      Abort();
      return Errno(err, absl::StrCat("cannot rename to ", final_path_));
    }
    tmp_path_.clear();
    return absl::OkStatus();
  }

  // Closes and removes the temp file, if any.
  void Abort() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
    tmp_path_.clear();
  }

  const v1::AdapterFile& header() const { return header_; }

 private:
  v1::AdapterFile header_;
  std::string final_path_;
  std::string tmp_path_;
  int fd_ = -1;
  int64_t written_ = 0;
  Sha256Hasher hasher_;
};

// Codes on which a broken watch stream is worth reconnecting. CANCELLED counts: the
// client cancels only when it stops on purpose (and then does not retry), so a CANCELLED
// stream was cut by the server going down.
bool Retryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kAborted ||
         code == absl::StatusCode::kCancelled ||
         code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnknown ||
         code == absl::StatusCode::kResourceExhausted;
}

bool IsTerminal(v1::Job::State s) {
  return s == v1::Job::SUCCEEDED || s == v1::Job::FAILED || s == v1::Job::CANCELLED;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Create(const ClientOptions& options) {
  const bool any_tls_file = !options.ca_cert_file.empty() || !options.client_cert_file.empty() ||
                            !options.client_key_file.empty();
  if (any_tls_file && !options.tls) {
    return absl::InvalidArgumentError("ca_cert_file / client_cert_file / client_key_file need tls");
  }
  if (options.client_cert_file.empty() != options.client_key_file.empty()) {
    return absl::InvalidArgumentError(
        "client_cert_file and client_key_file must be given together (mutual TLS)");
  }
  grpc::ChannelArguments args;
  if (options.max_message_bytes > 0) {
    args.SetMaxReceiveMessageSize(options.max_message_bytes);
    args.SetMaxSendMessageSize(options.max_message_bytes);
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.ca_cert_file.empty()) {
      OFT_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadWholeFile(options.ca_cert_file));
    }
    if (!options.client_cert_file.empty()) {
      OFT_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadWholeFile(options.client_cert_file));
      OFT_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadWholeFile(options.client_key_file));
    }
    creds = grpc::SslCredentials(ssl);
    if (!options.tls_server_name_override.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name_override);
    }
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  auto channel = grpc::CreateCustomChannel(options.server, creds, args);
  if (channel == nullptr) return absl::InternalError("cannot create gRPC channel");
  return std::unique_ptr<Client>(new Client(std::move(channel), options));
}

std::unique_ptr<Client> Client::FromChannel(std::shared_ptr<grpc::Channel> channel,
                                            const ClientOptions& options) {
  return std::unique_ptr<Client>(new Client(std::move(channel), options));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, const ClientOptions& options)
    : options_(options),
      channel_(std::move(channel)),
      jobs_(v1::JobService::NewStub(channel_)),
      datasets_(v1::DatasetService::NewStub(channel_)),
      adapters_(v1::AdapterService::NewStub(channel_)),
      models_(v1::ModelService::NewStub(channel_)),
      inference_(v1::InferenceService::NewStub(channel_)) {}

Client::~Client() = default;

std::unique_ptr<grpc::ClientContext> Client::NewContext(absl::Duration timeout) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!options_.api_key.empty()) {
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", options_.api_key));
  }
  if (timeout != absl::InfiniteDuration()) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
  return ctx;
}

absl::Status Client::WaitForConnected(absl::Duration timeout) {
  if (channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout))) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError(
      absl::StrCat("could not connect to ", options_.server, " within ",
                   absl::FormatDuration(timeout)));
}

// ---------------------------------------------------------------------------- datasets

absl::StatusOr<v1::Dataset> Client::UploadDataset(const std::string& path,
                                                  const std::string& name,
                                                  v1::DatasetFormat format) {
  // Size and hash first (the header precedes the bytes), then stream the file again so
  // large datasets never sit in memory.
  std::ifstream in(path, std::ios::binary);
  if (!in) return Errno(errno, absl::StrCat("cannot read ", path));
  Sha256Hasher hasher;
  int64_t size = 0;
  std::string buf(kChunkBytes, '\0');
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    hasher.Update(buf.data(), static_cast<size_t>(n));
    size += n;
  }
  if (in.bad()) return absl::InternalError(absl::StrCat("error reading ", path));
  if (size == 0) return absl::InvalidArgumentError(absl::StrCat(path, " is empty"));
  in.clear();
  in.seekg(0);

  v1::UploadDatasetRequest header_msg;
  auto* header = header_msg.mutable_header();
  header->set_name(name);
  header->set_sha256(hasher.HexDigest());
  header->set_size_bytes(size);
  header->set_format(format);

  auto ctx = NewContext(options_.stream_deadline);
  v1::Dataset dataset;
  auto writer = datasets_->UploadDataset(ctx.get(), &dataset);
  bool ok = writer->Write(header_msg);
  int64_t sent = 0;
  while (ok && sent < size) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    v1::UploadDatasetRequest chunk;
    chunk.set_chunk(buf.data(), static_cast<size_t>(n));
    ok = writer->Write(chunk);  // false: the server failed the stream; Finish says why
    sent += n;
  }
  if (ok && sent != size) {
    ctx->TryCancel();
    writer->Finish().ok();
    return absl::InternalError(absl::StrCat(path, " changed while uploading"));
  }
  writer->WritesDone();
  OFT_RETURN_IF_ERROR(FromGrpcStatus(writer->Finish()));
  return dataset;
}

absl::StatusOr<v1::Dataset> Client::UploadDatasetBytes(absl::string_view contents,
                                                       const std::string& name,
                                                       v1::DatasetFormat format) {
  Sha256Hasher hasher;
  hasher.Update(contents.data(), contents.size());
  v1::UploadDatasetRequest header_msg;
  auto* header = header_msg.mutable_header();
  header->set_name(name);
  header->set_sha256(hasher.HexDigest());
  header->set_size_bytes(static_cast<int64_t>(contents.size()));
  header->set_format(format);

  auto ctx = NewContext(options_.stream_deadline);
  v1::Dataset dataset;
  auto writer = datasets_->UploadDataset(ctx.get(), &dataset);
  bool ok = writer->Write(header_msg);
  for (size_t off = 0; ok && off < contents.size(); off += kChunkBytes) {
    v1::UploadDatasetRequest chunk;
    const absl::string_view piece = contents.substr(off, kChunkBytes);
    chunk.set_chunk(piece.data(), piece.size());
    ok = writer->Write(chunk);
  }
  writer->WritesDone();
  OFT_RETURN_IF_ERROR(FromGrpcStatus(writer->Finish()));
  return dataset;
}

absl::StatusOr<v1::Dataset> Client::GetDataset(const std::string& id) {
  v1::GetDatasetRequest req;
  req.set_id(id);
  return Unary(datasets_.get(), &v1::DatasetService::Stub::GetDataset, req);
}

absl::StatusOr<v1::ListDatasetsResponse> Client::ListDatasets(
    const v1::ListDatasetsRequest& request) {
  return Unary(datasets_.get(), &v1::DatasetService::Stub::ListDatasets, request);
}

absl::Status Client::DeleteDataset(const std::string& id) {
  v1::DeleteDatasetRequest req;
  req.set_id(id);
  return Unary(datasets_.get(), &v1::DatasetService::Stub::DeleteDataset, req).status();
}

// -------------------------------------------------------------------------------- jobs

absl::StatusOr<v1::Job> Client::CreateJob(const v1::CreateJobRequest& request) {
  return Unary(jobs_.get(), &v1::JobService::Stub::CreateJob, request);
}

absl::StatusOr<v1::Job> Client::GetJob(const std::string& id) {
  v1::GetJobRequest req;
  req.set_id(id);
  return Unary(jobs_.get(), &v1::JobService::Stub::GetJob, req);
}

absl::StatusOr<v1::ListJobsResponse> Client::ListJobs(const v1::ListJobsRequest& request) {
  return Unary(jobs_.get(), &v1::JobService::Stub::ListJobs, request);
}

absl::StatusOr<std::vector<v1::Job>> Client::ListAllJobs(
    const std::vector<v1::Job::State>& states) {
  std::vector<v1::Job> jobs;
  v1::ListJobsRequest req;
  for (v1::Job::State s : states) req.add_states(s);
  req.set_page_size(1000);
  while (true) {
    OFT_ASSIGN_OR_RETURN(v1::ListJobsResponse page, ListJobs(req));
    for (auto& job : *page.mutable_jobs()) jobs.push_back(std::move(job));
    if (page.next_page_token().empty()) break;
    req.set_page_token(page.next_page_token());
  }
  return jobs;
}

absl::StatusOr<v1::Job> Client::CancelJob(const std::string& id) {
  v1::CancelJobRequest req;
  req.set_id(id);
  return Unary(jobs_.get(), &v1::JobService::Stub::CancelJob, req);
}

absl::Status Client::WatchJob(const std::string& job_id, int64_t after_event_id,
                              const JobEventCallback& on_event,
                              const WatchOptions& watch_options) {
  const absl::Time deadline = watch_options.deadline == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + watch_options.deadline;
  int64_t last_id = after_event_id;
  int failures = 0;
  absl::Duration backoff = watch_options.backoff;
  while (true) {
    auto ctx = NewContext(absl::InfiniteDuration());
    if (deadline != absl::InfiniteFuture()) ctx->set_deadline(absl::ToChronoTime(deadline));
    v1::WatchJobRequest req;
    req.set_id(job_id);
    req.set_after_event_id(last_id);
    auto reader = jobs_->WatchJob(ctx.get(), req);
    v1::JobEvent event;
    bool terminal = false;
    bool progressed = false;
    while (reader->Read(&event)) {
      if (event.event_id() <= last_id) continue;  // never deliver an event twice
      last_id = event.event_id();
      progressed = true;
      if (event.has_state_changed() && IsTerminal(event.state_changed().state())) {
        terminal = true;
      }
      if (!on_event(event)) {
        ctx->TryCancel();
        reader->Finish().ok();  // CANCELLED by us
        return absl::OkStatus();
      }
    }
    absl::Status status = FromGrpcStatus(reader->Finish());
    if (status.ok()) {
      if (terminal) return absl::OkStatus();
      // The stream ended without a terminal event: either the job was already terminal
      // before after_event_id, or the server went away cleanly (shutdown). Ask.
      absl::StatusOr<v1::Job> job = GetJob(job_id);
      if (job.ok() && IsTerminal(job->state()) && job->latest_event_id() <= last_id) {
        return absl::OkStatus();
      }
      status = job.ok() ? absl::UnavailableError("watch stream ended before the job finished")
                        : job.status();
    }
    if (!Retryable(status.code())) return status;
    if (progressed) {
      failures = 0;
      backoff = watch_options.backoff;
    }
    if (++failures > watch_options.max_reconnects) return status;
    if (absl::Now() + backoff >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("watching job ", job_id, ": ",
                                                      status.message()));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, watch_options.max_backoff);
  }
}

// ---------------------------------------------------------------------------- adapters

absl::StatusOr<v1::ListAdaptersResponse> Client::ListAdapters(
    const v1::ListAdaptersRequest& request) {
  return Unary(adapters_.get(), &v1::AdapterService::Stub::ListAdapters, request);
}

absl::StatusOr<std::vector<v1::Adapter>> Client::ListAllAdapters(const std::string& name) {
  std::vector<v1::Adapter> out;
  v1::ListAdaptersRequest req;
  req.set_name(name);
  req.set_page_size(1000);
  while (true) {
    OFT_ASSIGN_OR_RETURN(v1::ListAdaptersResponse page, ListAdapters(req));
    for (auto& a : *page.mutable_adapters()) out.push_back(std::move(a));
    if (page.next_page_token().empty()) break;
    req.set_page_token(page.next_page_token());
  }
  return out;
}

absl::StatusOr<v1::Adapter> Client::GetAdapter(const v1::AdapterVersionRef& ref) {
  v1::GetAdapterRequest req;
  *req.mutable_ref() = ref;
  return Unary(adapters_.get(), &v1::AdapterService::Stub::GetAdapter, req);
}

absl::Status Client::DeleteAdapter(const v1::AdapterVersionRef& ref) {
  v1::DeleteAdapterRequest req;
  *req.mutable_ref() = ref;
  return Unary(adapters_.get(), &v1::AdapterService::Stub::DeleteAdapter, req).status();
}

absl::StatusOr<v1::Adapter> Client::ImportAdapter(const std::string& dir,
                                                  const v1::ImportAdapterMetadata& metadata) {
  std::vector<std::pair<std::string, std::string>> files;  // name -> bytes
  for (const char* name : {"adapter_config.json", "adapter_model.safetensors"}) {
    OFT_ASSIGN_OR_RETURN(std::string bytes,
                         ReadWholeFile((std::filesystem::path(dir) / name).string()));
    files.emplace_back(name, std::move(bytes));
  }
  auto ctx = NewContext(options_.stream_deadline);
  v1::Adapter adapter;
  auto writer = adapters_->ImportAdapter(ctx.get(), &adapter);
  v1::ImportAdapterRequest msg;
  *msg.mutable_metadata() = metadata;
  bool ok = writer->Write(msg);  // false: the server failed the stream; Finish says why
  for (const auto& [name, bytes] : files) {
    if (!ok) break;
    Sha256Hasher hasher;
    hasher.Update(bytes.data(), bytes.size());
    msg.Clear();
    msg.mutable_file_header()->set_name(name);
    msg.mutable_file_header()->set_size_bytes(static_cast<int64_t>(bytes.size()));
    msg.mutable_file_header()->set_sha256(hasher.HexDigest());
    ok = writer->Write(msg);
    for (size_t off = 0; ok && off < bytes.size(); off += kChunkBytes) {
      msg.Clear();
      const absl::string_view piece = absl::string_view(bytes).substr(off, kChunkBytes);
      msg.set_chunk(piece.data(), piece.size());
      ok = writer->Write(msg);
    }
  }
  writer->WritesDone();
  OFT_RETURN_IF_ERROR(FromGrpcStatus(writer->Finish()));
  return adapter;
}

absl::StatusOr<std::vector<v1::AdapterFile>> Client::DownloadAdapter(
    const v1::AdapterVersionRef& ref, const std::string& out_dir,
    const std::vector<std::string>& file_names) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return Errno(ec.value(), absl::StrCat("cannot create directory ", out_dir));

  v1::DownloadAdapterRequest req;
  *req.mutable_ref() = ref;
  for (const auto& f : file_names) req.add_file_names(f);
  auto ctx = NewContext(options_.stream_deadline);
  auto reader = adapters_->DownloadAdapter(ctx.get(), req);

  std::vector<v1::AdapterFile> done;
  std::unique_ptr<PendingFile> current;
  absl::Status local;  // first client-side failure; the stream is cancelled on it
  v1::DownloadAdapterResponse msg;
  while (local.ok() && reader->Read(&msg)) {
    if (msg.has_file_header()) {
      if (current != nullptr) {
        local = current->Commit();
        if (!local.ok()) break;
        done.push_back(current->header());
        current.reset();
      }
      if (!SafeFileName(msg.file_header().name())) {
        local = absl::InternalError(
            absl::StrCat("server sent an unsafe file name \"", msg.file_header().name(), "\""));
        break;
      }
      current = std::make_unique<PendingFile>();
      local = current->Open(out_dir, msg.file_header());
    } else if (msg.payload_case() == v1::DownloadAdapterResponse::kChunk) {
      if (current == nullptr) {
        local = absl::InternalError("download stream sent bytes before a file header");
        break;
      }
      local = current->Write(msg.chunk());
    }
  }
  if (!local.ok()) {
    ctx->TryCancel();
    reader->Finish().ok();
    return local;  // `current` (if any) removes its temp file
  }
  OFT_RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  if (current != nullptr) {
    OFT_RETURN_IF_ERROR(current->Commit());
    done.push_back(current->header());
  }
  if (done.empty()) return absl::InternalError("download stream sent no files");
  return done;
}

// ------------------------------------------------------------------------------ models

absl::StatusOr<v1::ListBaseModelsResponse> Client::ListBaseModels() {
  v1::ListBaseModelsRequest req;
  return Unary(models_.get(), &v1::ModelService::Stub::ListBaseModels, req);
}

// --------------------------------------------------------------------------- inference

absl::StatusOr<v1::LoadedAdapter> Client::LoadAdapter(const v1::AdapterVersionRef& ref) {
  v1::LoadAdapterRequest req;
  *req.mutable_ref() = ref;
  return Unary(inference_.get(), &v1::InferenceService::Stub::LoadAdapter, req);
}

absl::Status Client::UnloadAdapter(const v1::AdapterVersionRef& ref) {
  v1::UnloadAdapterRequest req;
  *req.mutable_ref() = ref;
  return Unary(inference_.get(), &v1::InferenceService::Stub::UnloadAdapter, req).status();
}

absl::StatusOr<v1::ListLoadedAdaptersResponse> Client::ListLoadedAdapters() {
  v1::ListLoadedAdaptersRequest req;
  return Unary(inference_.get(), &v1::InferenceService::Stub::ListLoadedAdapters, req);
}

absl::StatusOr<v1::Alias> Client::SetAlias(const std::string& alias,
                                           const v1::AdapterVersionRef& target) {
  v1::SetAliasRequest req;
  req.set_alias(alias);
  *req.mutable_target() = target;
  return Unary(inference_.get(), &v1::InferenceService::Stub::SetAlias, req);
}

absl::Status Client::DeleteAlias(const std::string& alias) {
  v1::DeleteAliasRequest req;
  req.set_alias(alias);
  return Unary(inference_.get(), &v1::InferenceService::Stub::DeleteAlias, req).status();
}

absl::Status Client::Generate(const v1::GenerateRequest& request,
                              const GenerateCallback& on_response) {
  auto ctx = NewContext(options_.stream_deadline);
  auto reader = inference_->Generate(ctx.get(), request);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (!on_response(resp)) {
      ctx->TryCancel();
      reader->Finish().ok();
      return absl::OkStatus();
    }
  }
  return FromGrpcStatus(reader->Finish());
}

// ------------------------------------------------------------------------------ helpers

absl::StatusOr<v1::AdapterVersionRef> ParseAdapterRef(absl::string_view text) {
  v1::AdapterVersionRef ref;
  const size_t colon = text.rfind(':');
  absl::string_view name = text.substr(0, colon);
  if (name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter reference \"", text, "\" has no name (want NAME[:VERSION])"));
  }
  ref.set_name(std::string(name));
  if (colon != absl::string_view::npos) {
    absl::string_view v = text.substr(colon + 1);
    int64_t version = 0;
    if (v == "latest") {
      version = 0;
    } else if (!absl::SimpleAtoi(v, &version) || version < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapter version in \"", text, "\" must be an integer >= 1 or \"latest\", got \"", v,
          "\""));
    }
    ref.set_version(version);
  }
  return ref;
}

std::string FormatAdapterRef(const v1::AdapterVersionRef& ref) {
  if (ref.version() == 0) return ref.name();
  return absl::StrCat(ref.name(), ":", ref.version());
}

}  // namespace oft
