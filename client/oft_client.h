// oft::Client: a blocking, StatusOr-returning C++ API over the oft.v1 gRPC services
// (JobService, DatasetService, AdapterService, ModelService, InferenceService).
//
// Every call attaches `authorization: Bearer <api_key>` (when an API key is set) and a
// deadline: ClientOptions::deadline for unary calls, ClientOptions::stream_deadline for
// uploads, downloads and generation; WatchJob runs without a deadline unless
// WatchOptions::deadline is set (a job may train for days).
//
// Errors are the server's gRPC status turned into absl::Status (server/common/grpc_status.h):
// the code and message pass through unchanged, so the method comments in
// proto/oft/v1/*.proto list what each call can return. Besides those, every method may
// return UNAVAILABLE (server unreachable) and DEADLINE_EXCEEDED. Local problems (files that
// cannot be read or written) come back as NOT_FOUND / PERMISSION_DENIED / INTERNAL with the
// path in the message.
//
// Thread safety: a Client is thread-safe; any number of threads may call it at once (each
// call has its own grpc::ClientContext). Callbacks run on the calling thread. The library
// keeps no global state and never exits the process.
//
// Example:
//   OFT_ASSIGN_OR_RETURN(std::unique_ptr<oft::Client> client,
//                        oft::Client::Create({.server = "127.0.0.1:50051", .api_key = "k"}));
//   OFT_ASSIGN_OR_RETURN(oft::v1::Dataset ds, client->UploadDataset("train.jsonl", "train"));
#ifndef OFT_CLIENT_OFT_CLIENT_H_
#define OFT_CLIENT_OFT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "oft/v1/adapters.grpc.pb.h"
#include "oft/v1/datasets.grpc.pb.h"
#include "oft/v1/inference.grpc.pb.h"
#include "oft/v1/jobs.grpc.pb.h"
#include "oft/v1/models.grpc.pb.h"
#include "server/common/grpc_status.h"

namespace oft {

struct ClientOptions {
  // gRPC target, "HOST:PORT" (or any gRPC target URI).
  std::string server = "127.0.0.1:50051";
  // Sent as `authorization: Bearer <api_key>` on every call; "" = send no key.
  std::string api_key;
  // Use TLS. The CA defaults to the system roots when ca_cert_file is "".
  bool tls = false;
  // PEM file with the CA certificate(s) that signed the server's certificate.
  std::string ca_cert_file;
  // PEM client certificate chain for mutual TLS; needs client_key_file.
  std::string client_cert_file;
  // PEM private key of client_cert_file.
  std::string client_key_file;
  // Expected server name in the certificate, when it differs from the host (tests).
  std::string tls_server_name_override;
  // Deadline of every unary call.
  absl::Duration deadline = absl::Seconds(30);
  // Deadline of UploadDataset, DownloadAdapter and Generate streams.
  absl::Duration stream_deadline = absl::Hours(1);
  // Largest message sent or received; 0 = gRPC's defaults (4 MiB received).
  int max_message_bytes = 0;
};

struct WatchOptions {
  // Reconnect attempts in a row without receiving an event before WatchJob gives up and
  // returns the last error. Receiving an event resets the count.
  int max_reconnects = 10;
  // Wait before the first reconnect; doubles per failed attempt up to max_backoff.
  absl::Duration backoff = absl::Milliseconds(200);
  // Longest wait between reconnects.
  absl::Duration max_backoff = absl::Seconds(5);
  // Overall deadline of the watch; InfiniteDuration = none.
  absl::Duration deadline = absl::InfiniteDuration();
};

// Called once per job event, in event_id order. Return true to keep watching, false to stop
// (WatchJob then returns OK).
using JobEventCallback = std::function<bool(const v1::JobEvent&)>;
// Called once per Generate response. Return true to keep generating, false to cancel the
// request (Generate then returns OK).
using GenerateCallback = std::function<bool(const v1::GenerateResponse&)>;

class Client {
 public:
  // Builds the channel (TLS / mTLS credentials read from the PEM files in `options`). Does
  // not connect: the first call does. Errors: INVALID_ARGUMENT (client cert without key or
  // key without cert, TLS files given without `tls`), NOT_FOUND / PERMISSION_DENIED (a PEM
  // file cannot be read).
  static absl::StatusOr<std::unique_ptr<Client>> Create(const ClientOptions& options);

  // Uses an existing channel (in-process servers, tests). TLS fields of `options` are
  // ignored; api_key and deadlines apply.
  static std::unique_ptr<Client> FromChannel(std::shared_ptr<grpc::Channel> channel,
                                             const ClientOptions& options);

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  const ClientOptions& options() const { return options_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // Blocks until the channel is connected or `timeout` passes (DEADLINE_EXCEEDED).
  absl::Status WaitForConnected(absl::Duration timeout);

  // --- Datasets ---------------------------------------------------------------------
  // Uploads the file at `path`: computes its size and sha256, sends the header and then
  // the bytes in 1 MiB chunks. Errors: local NOT_FOUND / INVALID_ARGUMENT (empty file),
  // and the server's (INVALID_ARGUMENT listing bad lines, RESOURCE_EXHAUSTED, ...).
  absl::StatusOr<v1::Dataset> UploadDataset(
      const std::string& path, const std::string& name,
      v1::DatasetFormat format = v1::DATASET_FORMAT_UNSPECIFIED);
  // Same, with the dataset's bytes in memory.
  absl::StatusOr<v1::Dataset> UploadDatasetBytes(
      absl::string_view contents, const std::string& name,
      v1::DatasetFormat format = v1::DATASET_FORMAT_UNSPECIFIED);
  absl::StatusOr<v1::Dataset> GetDataset(const std::string& id);
  absl::StatusOr<v1::ListDatasetsResponse> ListDatasets(const v1::ListDatasetsRequest& request);
  absl::Status DeleteDataset(const std::string& id);

  // --- Jobs -------------------------------------------------------------------------
  absl::StatusOr<v1::Job> CreateJob(const v1::CreateJobRequest& request);
  absl::StatusOr<v1::Job> GetJob(const std::string& id);
  // One page.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  // Every page: all of the caller's jobs in `states` (empty = all), newest first.
  absl::StatusOr<std::vector<v1::Job>> ListAllJobs(
      const std::vector<v1::Job::State>& states = {});
  absl::StatusOr<v1::Job> CancelJob(const std::string& id);

  // Follows the job's event stream, calling `on_event` for every event with
  // event_id > after_event_id. When the stream breaks (UNAVAILABLE, server restart,
  // connection loss, or the stream ending before a terminal state) it reconnects after a
  // backoff with after_event_id = the last event id delivered, so every event is delivered
  // exactly once and in order. Returns OK when the stream ends after the job's terminal
  // event, when the job was already terminal, or when `on_event` returns false.
  // Errors: NOT_FOUND, UNAUTHENTICATED, INVALID_ARGUMENT (not retried); the last
  // UNAVAILABLE / transport error after `max_reconnects` failed attempts in a row;
  // DEADLINE_EXCEEDED when WatchOptions::deadline passes.
  absl::Status WatchJob(const std::string& job_id, int64_t after_event_id,
                        const JobEventCallback& on_event,
                        const WatchOptions& watch_options = WatchOptions());

  // --- Adapters ---------------------------------------------------------------------
  absl::StatusOr<v1::ListAdaptersResponse> ListAdapters(const v1::ListAdaptersRequest& request);
  // Every page of ListAdapters for `name` ("" = all names).
  absl::StatusOr<std::vector<v1::Adapter>> ListAllAdapters(const std::string& name = "");
  absl::StatusOr<v1::Adapter> GetAdapter(const v1::AdapterVersionRef& ref);
  absl::Status DeleteAdapter(const v1::AdapterVersionRef& ref);

  // Downloads the version's files (`file_names` empty = all) into `out_dir` (created if
  // missing), each as out_dir/<name>. Every file is written to a temporary file beside
  // its destination, checked against the size and sha256 of its header, and only then
  // renamed into place (an existing file of that name is replaced atomically). Returns the
  // headers of the files written, in order.
  // Errors: the server's (NOT_FOUND, DATA_LOSS); DATA_LOSS when a file's bytes do not
  // match its header (that file's temporary is removed, files completed before it stay);
  // INTERNAL for a malformed stream (chunk before a header, unsafe file name);
  // local I/O errors.
  absl::StatusOr<std::vector<v1::AdapterFile>> DownloadAdapter(
      const v1::AdapterVersionRef& ref, const std::string& out_dir,
      const std::vector<std::string>& file_names = {});

  // Imports the PEFT OFT adapter in `dir` (adapter_config.json, adapter_model.safetensors)
  // as the next version of metadata.name (ImportAdapter; each file sent with its size and
  // sha256). Both files are read before the call: NOT_FOUND naming a missing local file,
  // and no RPC. Errors: the server's (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED).
  absl::StatusOr<v1::Adapter> ImportAdapter(const std::string& dir,
                                            const v1::ImportAdapterMetadata& metadata);

  // --- Models -----------------------------------------------------------------------
  absl::StatusOr<v1::ListBaseModelsResponse> ListBaseModels();

  // --- Inference --------------------------------------------------------------------
  absl::StatusOr<v1::LoadedAdapter> LoadAdapter(const v1::AdapterVersionRef& ref);
  absl::Status UnloadAdapter(const v1::AdapterVersionRef& ref);
  absl::StatusOr<v1::ListLoadedAdaptersResponse> ListLoadedAdapters();
  absl::StatusOr<v1::Alias> SetAlias(const std::string& alias,
                                     const v1::AdapterVersionRef& target);
  absl::Status DeleteAlias(const std::string& alias);
  // Streams the responses of one generation to `on_response`. Returns OK when the
  // generation finished or `on_response` returned false (the request is then cancelled).
  absl::Status Generate(const v1::GenerateRequest& request, const GenerateCallback& on_response);

 private:
  Client(std::shared_ptr<grpc::Channel> channel, const ClientOptions& options);

  // A context with the auth metadata and a deadline `timeout` from now (none if infinite).
  std::unique_ptr<grpc::ClientContext> NewContext(absl::Duration timeout) const;
  // One unary call with the default deadline and the API key.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Unary(Stub* stub,
                                 grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                              Response*),
                                 const Request& request) const {
    Response response;
    auto ctx = NewContext(options_.deadline);
    grpc::Status status = (stub->*method)(ctx.get(), request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }

  const ClientOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::JobService::Stub> jobs_;
  const std::unique_ptr<v1::DatasetService::Stub> datasets_;
  const std::unique_ptr<v1::AdapterService::Stub> adapters_;
  const std::unique_ptr<v1::ModelService::Stub> models_;
  const std::unique_ptr<v1::InferenceService::Stub> inference_;
};

// "NAME" or "NAME:VERSION" (version >= 1; "NAME:latest" = 0) -> AdapterVersionRef.
// Errors: INVALID_ARGUMENT naming the bad part.
absl::StatusOr<v1::AdapterVersionRef> ParseAdapterRef(absl::string_view text);
// "name:3", or "name" for version 0.
std::string FormatAdapterRef(const v1::AdapterVersionRef& ref);

}  // namespace oft

#endif  // OFT_CLIENT_OFT_CLIENT_H_
