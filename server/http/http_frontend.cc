#include "server/http/http_frontend.h"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/common/echo.h"
#include "server/http/openai_api.h"

namespace oft {
namespace {

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

}  // namespace

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
  svr.set_socket_options(ListenSocketOptions);
  const int threads = o.threads > 0 ? o.threads : 1;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_payload_max_length(static_cast<size_t>(o.max_body_bytes));
  svr.set_read_timeout(30, 0);
  svr.set_write_timeout(30, 0);

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
  if (o.log) {
    auto log = o.log;
    svr.set_logger([log](const httplib::Request& req, const httplib::Response& res) {
      log(absl::StrFormat("http %s %s %d %d bytes from %s", req.method, Echo(req.path, 200), res.status,
                          res.body.size(), req.remote_addr));
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
