#include "server/http/http_frontend.h"

#include <algorithm>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/common/echo.h"
#include "server/http/openai_api.h"

namespace oft {
namespace {

// When the request now on this thread was routed. httplib serves each connection's requests
// one after another on one pool thread, calling the pre-routing handler, the route's handler
// and then the logger for each, so a thread-local clock pairs a request's start with its
// access line; `started` is cleared per line, so a request refused before routing (no
// pre-routing call) reports no latency rather than an old one.
struct RequestTimer {
  std::chrono::steady_clock::time_point start;
  bool started = false;
};
RequestTimer& RequestClock() {
  thread_local RequestTimer clock;
  return clock;
}

// SO_REUSEADDR (restart while old connections linger in TIME_WAIT) but not httplib's default
// SO_REUSEPORT, which would let a second process bind the same port and share its traffic.
void ListenSocketOptions(socket_t sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

absl::Status ParseHostPort(const std::string& address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  int p = -1;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(address.substr(colon + 1), &p) ||
      p < 0 || p > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", Echo(address), "\" is not HOST:PORT (port 0-65535)"));
  }
  *host = address.substr(0, colon);
  *port = p;
  return absl::OkStatus();
}

// Pending connections the kernel queues before accept (SOMAXCONN caps it).
constexpr int kListenBacklog = 1024;

// Multipart headers and boundaries around an uploaded file, allowed beyond max_upload_bytes.
constexpr int64_t kMultipartFramingBytes = 64 << 10;

}  // namespace

std::string HttpRoute(const std::string& path) {
  static const char* const kExact[] = {"/healthz", "/readyz", "/metrics", "/v1/models", "/v1/completions",
                                       "/v1/chat/completions", "/v1/files", "/v1/fine_tuning/jobs"};
  for (const char* e : kExact) {
    if (path == e) return e;
  }
  // Prefixes whose next segment is an id, and the sub-resources allowed after it.
  static const std::pair<const char*, std::vector<const char*>> kIds[] = {
      {"/v1/models/", {}},
      {"/v1/files/", {}},
      {"/v1/fine_tuning/jobs/", {"/cancel", "/events", "/checkpoints"}},
  };
  for (const auto& [prefix, subs] : kIds) {
    if (!absl::StartsWith(path, prefix)) continue;
    const std::string rest = path.substr(std::string(prefix).size());
    const size_t slash = rest.find('/');
    if (rest.empty() || slash == 0) break;
    if (slash == std::string::npos) return absl::StrCat(prefix, "{id}");
    for (const char* sub : subs) {
      if (rest.substr(slash) == sub) return absl::StrCat(prefix, "{id}", sub);
    }
    break;
  }
  return "other";
}

struct HttpFrontend::Impl {
  std::unique_ptr<httplib::Server> server;
  std::thread listener;
  int port = 0;
  bool stopped = false;
};

HttpFrontend::HttpFrontend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpFrontend::~HttpFrontend() { Stop(); }

int HttpFrontend::port() const { return impl_->port; }

void HttpFrontend::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->server->stop();
  if (impl_->listener.joinable()) impl_->listener.join();
}

absl::StatusOr<std::unique_ptr<HttpFrontend>> HttpFrontend::Start(const HttpFrontendOptions& o) {
  std::string host;
  int port = 0;
  if (absl::Status s = ParseHostPort(o.listen, &host, &port); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  if (!o.tls_cert.empty() || !o.tls_key.empty()) {
    if (o.tls_cert.empty() || o.tls_key.empty()) {
      return absl::InvalidArgumentError("HTTPS needs both a certificate and a key");
    }
    auto ssl = std::make_unique<httplib::SSLServer>(
        o.tls_cert.c_str(), o.tls_key.c_str(), o.tls_client_ca.empty() ? nullptr : o.tls_client_ca.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot load the TLS certificate ", o.tls_cert,
                                                     " / key ", o.tls_key,
                                                     o.tls_client_ca.empty() ? "" : " / client CA ",
                                                     o.tls_client_ca));
    }
    impl->server = std::move(ssl);
  } else {
    impl->server = std::make_unique<httplib::Server>();
  }
  httplib::Server& svr = *impl->server;
  // The listening socket, kept to raise its backlog after bind (below).
  auto listen_fd = std::make_shared<socket_t>(INVALID_SOCKET);
  svr.set_socket_options([listen_fd](socket_t sock) {
    ListenSocketOptions(sock);
    *listen_fd = sock;
  });
  const int threads = o.threads > 0 ? o.threads : 1;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  // Bodies are capped before they are read: max_upload_bytes (plus room for the multipart
  // framing) for POST /v1/files, max_body_bytes for everything else. A chunked body without
  // Content-Length is capped by the larger limit while it is read; the file inside a multipart
  // body is checked against max_upload_bytes itself by the upload handler.
  const int64_t max_body = o.max_body_bytes;
  const int64_t max_upload = o.max_upload_bytes + kMultipartFramingBytes;
  svr.set_payload_max_length(static_cast<size_t>(std::max(max_body, max_upload)));
  svr.set_pre_routing_handler([max_body, max_upload](const httplib::Request& req, httplib::Response& res) {
    RequestClock().start = std::chrono::steady_clock::now();
    RequestClock().started = true;
    const bool upload = req.method == "POST" && req.path == "/v1/files";
    const int64_t limit = upload ? max_upload : max_body;
    const std::string length = req.get_header_value("Content-Length");
    int64_t n = 0;
    std::string refusal, code = "INVALID_ARGUMENT";
    if (!length.empty() && absl::SimpleAtoi(length, &n) && n > limit) {
      res.status = 413;
      code = "RESOURCE_EXHAUSTED";
      refusal = absl::StrCat("body is ", n, " bytes, over the limit of ", limit, " bytes",
                             upload ? " (--max_upload_bytes)" : " (--max_message_bytes)");
    } else if (req.method == "POST" && absl::StartsWith(req.path, "/v1/") && !upload && n > 0 &&
               req.has_header("Content-Type") &&
               !absl::StartsWith(absl::AsciiStrToLower(req.get_header_value("Content-Type")), "application/json")) {
      res.status = 400;
      refusal = absl::StrCat("Content-Type must be application/json, got \"",
                             Echo(req.get_header_value("Content-Type"), 80), "\"");
    } else {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const nlohmann::json body = {{"error", {{"message", refusal}, {"type", "invalid_request_error"},
                                            {"param", nullptr}, {"code", code}}}};
    res.set_content(body.dump(), "application/json");
    res.set_header("Connection", "close");  // the body was not read: never parse it as a request
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_read_timeout(o.io_timeout_seconds, 0);
  svr.set_write_timeout(o.io_timeout_seconds, 0);
  // An idle keep-alive connection waits at most this long for its next request.
  svr.set_keep_alive_timeout(std::min(5, o.io_timeout_seconds));

  svr.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  auto ready = o.ready;
  svr.Get("/readyz", [ready](const httplib::Request&, httplib::Response& res) {
    const bool ok = !ready || ready();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ready\n" : "not ready\n", "text/plain");
  });
  if (o.registry) {
    std::shared_ptr<prometheus::Registry> registry = o.registry;
    svr.Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
      res.set_content(prometheus::TextSerializer().Serialize(registry->Collect()),
                      "text/plain; version=0.0.4; charset=utf-8");
    });
  }
  if (o.openai) RegisterOpenAiRoutes(svr, *o.openai);
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  if (o.registry && o.request_metrics) {
    requests = &prometheus::BuildCounter()
                    .Name("oft_http_requests_total")
                    .Help("HTTP requests answered, by route template, method and status code")
                    .Register(*o.registry);
  }
  if (o.log || requests != nullptr) {
    auto log = o.log;
    svr.set_logger([log, requests](const httplib::Request& req, const httplib::Response& res) {
      const std::string route = HttpRoute(req.path);
      if (requests != nullptr) {
        requests->Add({{"route", route}, {"method", Echo(req.method, 16)}, {"code", std::to_string(res.status)}})
            .Increment();
      }
      RequestTimer& clock = RequestClock();
      const double latency_ms =
          clock.started ? std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                                    clock.start)
                              .count()
                        : -1.0;
      clock.started = false;
      if (log) {
        log(HttpAccess{req.method.substr(0, 16), Echo(req.path, 200), route, res.status,
                       static_cast<int64_t>(res.body.size()), req.remote_addr, latency_ms});
      }
    });
  }
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    res.status = 500;
    const nlohmann::json body = {{"error", {{"message", "internal error: " + Echo(what)},
                                            {"type", "server_error"}, {"param", nullptr}, {"code", "INTERNAL"}}}};
    res.set_content(body.dump(), "application/json");
  });

  if (port == 0) {
    port = svr.bind_to_any_port(host);
    if (port <= 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", Echo(o.listen)));
  } else if (!svr.bind_to_port(host, port)) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", Echo(o.listen), " (address in use or not local)"));
  }
  // Debian's libcpp-httplib is built with a listen backlog of 5: a burst of new connections
  // (64 streaming clients connecting at once) overflows it and the kernel drops SYNs, which
  // clients retry after 1 s. listen() again on the bound socket raises the backlog.
  if (*listen_fd != INVALID_SOCKET && ::listen(*listen_fd, kListenBacklog) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", Echo(o.listen), " (listen backlog)"));
  }
  impl->port = port;
  auto exited = std::make_shared<std::atomic<bool>>(false);
  impl->listener = std::thread([&svr, exited] {
    svr.listen_after_bind();
    exited->store(true);
  });
  // httplib's stop() does nothing before the accept loop runs: return only once it does, so
  // a Stop() right after Start() cannot leave the loop running (and the join hanging).
  while (!svr.is_running() && !exited->load()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  if (exited->load() && !svr.is_running()) {
    impl->listener.join();
    return absl::UnavailableError(absl::StrCat("the HTTP server on ", Echo(o.listen), " stopped at once"));
  }
  return std::unique_ptr<HttpFrontend>(new HttpFrontend(std::move(impl)));
}

}  // namespace oft
