// The HTTP/1.1 server of oft_server (cpp-httplib, Debian's libcpp-httplib-dev): operational
// endpoints on every instance, and the OpenAI-compatible API where configured.
//   GET /healthz  200 while the process serves at all
//   GET /readyz   200 when ready() says so (not shutting down, executor not saturated), else 503
//   GET /metrics  the Prometheus text exposition of `registry`
//   /v1/...       server/http/openai_api.h, when `openai` is set
// One access-log record per request through `log` (method, path, route, status, bytes, peer),
// and per-route request counters when request_metrics is set.
//
// The listening socket sets SO_REUSEADDR only (never SO_REUSEPORT), so a second server cannot
// bind a port in use. Bodies over max_body_bytes (uploads: max_upload_bytes) get 413; a POST
// body that is not JSON by its Content-Type gets 400 (uploads: multipart/form-data); header
// lines over 8 KiB get 400; a connection idle for io_timeout_seconds is closed. With tls_cert/tls_key the server
// speaks HTTPS (tls_client_ca: verified client certificates required).
//
// Thread-safe. The destructor (or Stop) stops accepting and joins the listener; in-flight
// handlers finish first.
#ifndef OFT_SERVER_HTTP_HTTP_FRONTEND_H_
#define OFT_SERVER_HTTP_HTTP_FRONTEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}

namespace oft {

struct OpenAiEnv;

// One answered request, for the access log.
struct HttpAccess {
  std::string method;
  std::string path;   // as sent (capped), without the query
  std::string route;  // HttpRoute(path)
  int status = 0;
  int64_t bytes = 0;  // response body bytes
  std::string peer;
  // From the request's headers read to its response written (a streamed body included), in
  // milliseconds; -1 for a request refused before routing (malformed request line, headers
  // over the limit), whose start is not seen.
  double latency_ms = -1;
};

// The route template of a path: ids replaced by {id} ("/v1/files/file-1" -> "/v1/files/{id}"),
// anything unknown -> "other", so metric label values stay few.
std::string HttpRoute(const std::string& path);

struct HttpFrontendOptions {
  std::string listen;                        // "HOST:PORT" (IPv4 or a name); port 0 = any free
  std::string tls_cert, tls_key, tls_client_ca;  // PEM files; HTTPS when cert and key are set
  int threads = 16;                          // handler threads (a streamed request holds one)
  int64_t max_body_bytes = int64_t{4} << 20;    // every body but an upload; over it: 413
  int64_t max_upload_bytes = int64_t{256} << 20;  // POST /v1/files (multipart training file)
  std::shared_ptr<prometheus::Registry> registry;  // GET /metrics; null = no /metrics
  std::function<bool()> ready;               // GET /readyz; empty = always ready
  std::function<void(const HttpAccess&)> log;  // access log; empty = none
  // Count requests in `registry` as oft_http_requests_total{route, method, code} (one
  // frontend per registry may do so).
  bool request_metrics = false;
  // A client that sends nothing (a slow or idle connection) for this long is disconnected;
  // a response that cannot be written for this long is abandoned.
  int io_timeout_seconds = 30;
  const OpenAiEnv* openai = nullptr;         // not owned; null = no /v1 routes
};

class HttpFrontend {
 public:
  // Binds and starts serving. Errors: INVALID_ARGUMENT (bad address, TLS files that do not
  // load), UNAVAILABLE (cannot bind, e.g. the port is in use).
  static absl::StatusOr<std::unique_ptr<HttpFrontend>> Start(const HttpFrontendOptions& options);
  ~HttpFrontend();
  HttpFrontend(const HttpFrontend&) = delete;
  HttpFrontend& operator=(const HttpFrontend&) = delete;

  int port() const;
  void Stop();  // idempotent

 private:
  struct Impl;
  explicit HttpFrontend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace oft

#endif  // OFT_SERVER_HTTP_HTTP_FRONTEND_H_
