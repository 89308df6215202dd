// Serves a prometheus::Registry in the Prometheus text exposition format (version 0.0.4)
// over plain HTTP/1.1 at GET /metrics, on its own port and thread.
//
// Why not prometheus::Exposer: its civetweb server starts worker threads with a fixed,
// small stack that cannot hold the static TLS of the CUDA-enabled LibTorch libraries this
// binary loads, so it fails to start ("Cannot create threads"). This server is tiny: one
// thread, one connection at a time (scrapes are rare and short), bounded request size.
//
// Thread-safe. The destructor stops the thread.
#ifndef OFT_SERVER_METRICS_HTTP_EXPOSER_H_
#define OFT_SERVER_METRICS_HTTP_EXPOSER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace oft {

class MetricsHttpServer {
 public:
  // Listens on "HOST:PORT" (IPv4; port 0 = any free port). Errors: INVALID_ARGUMENT (bad
  // address), UNAVAILABLE (cannot bind). `registry` is shared with the caller.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry);
  void Loop();
  void Serve(int client);

  const int listen_fd_;
  const int port_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace oft

#endif  // OFT_SERVER_METRICS_HTTP_EXPOSER_H_
