// The HTTP server: operational endpoints, body limit, access log, and no port sharing.
#include "server/http/http_frontend.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "httplib.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace oft {
namespace {

TEST(HttpFrontend, HealthReadinessMetricsAndAccessLog) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("oft_test_total").Help("t").Register(*registry).Add({}).Increment(3);
  std::atomic<bool> ready{true};
  absl::Mutex mu;
  std::vector<std::string> lines;
  HttpFrontendOptions o;
  o.listen = "127.0.0.1:0";
  o.registry = registry;
  std::atomic<bool> slow_ready{false};  // /readyz takes 60 ms: its access line says so
  std::vector<double> latencies;
  o.ready = [&] {
    if (slow_ready) std::this_thread::sleep_for(std::chrono::milliseconds(60));
    return ready.load();
  };
  o.request_metrics = true;
  o.log = [&](const HttpAccess& a) {
    absl::MutexLock lock(&mu);
    lines.push_back(absl::StrCat(a.method, " ", a.path, " ", a.route, " ", a.status, " ", a.bytes));
    latencies.push_back(a.latency_ms);
  };
  o.max_body_bytes = 1024;
  auto server = HttpFrontend::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  httplib::Client client("127.0.0.1", (*server)->port());

  auto h = client.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto r = client.Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  ready = false;
  slow_ready = true;
  r = client.Get("/readyz");
  slow_ready = false;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  auto m = client.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  EXPECT_NE(m->body.find("oft_test_total 3"), std::string::npos) << m->body;
  EXPECT_EQ(client.Get("/nope")->status, 404);
  // No OpenAI routes on a metrics-only server.
  EXPECT_EQ(client.Get("/v1/models")->status, 404);
  auto big = client.Post("/metrics", std::string(4096, 'x'), "text/plain");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);

  (*server)->Stop();
  absl::MutexLock lock(&mu);
  ASSERT_GE(lines.size(), 5u);
  const auto health = std::find(lines.begin(), lines.end(), "GET /healthz /healthz 200 3");
  ASSERT_NE(health, lines.end());
  // Every access line carries its latency (the 413 too: refused in pre-routing); the slow
  // /readyz (the 503) took at least its 60 ms, the others far less. Lines are found by
  // content: a server thread may log a request after the next one's line is written.
  ASSERT_EQ(latencies.size(), lines.size());
  for (size_t i = 0; i < latencies.size(); ++i) EXPECT_GE(latencies[i], 0.0) << lines[i];
  const auto slow = std::find_if(lines.begin(), lines.end(), [](const std::string& l) {
    return l.rfind("GET /readyz /readyz 503", 0) == 0;
  });
  ASSERT_NE(slow, lines.end());
  EXPECT_GE(latencies[slow - lines.begin()], 60.0) << *slow;
  EXPECT_LT(latencies[health - lines.begin()], 60.0) << *health;
  // Per-route counters, recorded after each answer: the next scrape shows the earlier requests.
  const std::string text = prometheus::TextSerializer().Serialize(registry->Collect());
  EXPECT_NE(text.find(R"(oft_http_requests_total{code="503",method="GET",route="/readyz"} 1)"), std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(oft_http_requests_total{code="404",method="GET",route="other"} 1)"), std::string::npos)
      << text;
}

// A raw TCP connection to 127.0.0.1:port, for requests no HTTP client library would send.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// Everything the server sends until it closes the connection (or 10 s pass).
std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

TEST(HttpFrontend, HostileInputGetsCleanAnswers) {
  HttpFrontendOptions o;
  o.listen = "127.0.0.1:0";
  o.max_body_bytes = 1024;
  o.io_timeout_seconds = 1;
  auto server = HttpFrontend::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  httplib::Client client("127.0.0.1", port);

  // A JSON endpoint with a form body: 400 naming the header.
  auto form = client.Post("/v1/chat/completions", "model=x", "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 400);
  EXPECT_NE(form->body.find("Content-Type must be application/json"), std::string::npos) << form->body;

  // A header line of 64 KiB: refused, and the server goes on serving.
  int fd = Connect(port);
  ASSERT_GE(fd, 0);
  const std::string huge = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 << 10, 'a') + "\r\n\r\n";
  (void)send(fd, huge.data(), huge.size(), MSG_NOSIGNAL);
  const std::string answer = ReadAll(fd);
  close(fd);
  EXPECT_EQ(answer.find("200 OK"), std::string::npos) << answer.substr(0, 200);

  // A slow client that stops mid-headers is disconnected after io_timeout_seconds, while
  // other clients are served meanwhile.
  fd = Connect(port);
  ASSERT_GE(fd, 0);
  const std::string partial = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  (void)send(fd, partial.data(), partial.size(), MSG_NOSIGNAL);
  auto h = client.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  const auto start = std::chrono::steady_clock::now();
  const std::string slow = ReadAll(fd);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  close(fd);
  EXPECT_EQ(slow.find("200 OK"), std::string::npos) << slow;
  EXPECT_LT(waited, 5.0) << "a stalled client held its connection past the 1 s timeout";
  h = client.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

TEST(HttpFrontend, RoutesBoundLabelValues) {
  EXPECT_EQ(HttpRoute("/v1/models"), "/v1/models");
  EXPECT_EQ(HttpRoute("/v1/models/oai:3"), "/v1/models/{id}");
  EXPECT_EQ(HttpRoute("/v1/files/ds-1"), "/v1/files/{id}");
  EXPECT_EQ(HttpRoute("/v1/fine_tuning/jobs/job-1/events"), "/v1/fine_tuning/jobs/{id}/events");
  EXPECT_EQ(HttpRoute("/v1/fine_tuning/jobs/job-1/cancel"), "/v1/fine_tuning/jobs/{id}/cancel");
  EXPECT_EQ(HttpRoute("/v1/fine_tuning/jobs/job-1/other"), "other");
  EXPECT_EQ(HttpRoute("/v1/files/"), "other");
  EXPECT_EQ(HttpRoute("/v1/files//x"), "other");
  EXPECT_EQ(HttpRoute("/random/path/123"), "other");
}

TEST(HttpFrontend, SecondServerCannotShareThePort) {
  HttpFrontendOptions o;
  o.listen = "127.0.0.1:0";
  auto first = HttpFrontend::Start(o);
  ASSERT_TRUE(first.ok()) << first.status();
  o.listen = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = HttpFrontend::Start(o);
  ASSERT_FALSE(second.ok()) << "bound a port already in use (SO_REUSEPORT?)";
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

TEST(HttpFrontend, BadAddressesAndTlsFilesAreNamed) {
  HttpFrontendOptions o;
  for (const char* bad : {"nohostport", "127.0.0.1:99999", ":80", "127.0.0.1:x"}) {
    o.listen = bad;
    auto s = HttpFrontend::Start(o);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  o.listen = "127.0.0.1:0";
  o.tls_cert = "/nonexistent/cert.pem";
  auto s = HttpFrontend::Start(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("key"), std::string::npos) << s.status();
  o.tls_key = "/nonexistent/key.pem";
  s = HttpFrontend::Start(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/nonexistent/cert.pem"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace oft
