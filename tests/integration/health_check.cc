#include "tests/integration/health_check.h"

#include <chrono>
#include <utility>
#include <vector>

#include <grpcpp/generic/generic_stub.h>

#include "absl/synchronization/notification.h"

namespace oft::testing {

int HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  // HealthCheckRequest { string service = 1; }: tag 0x0a, length (< 128 here), bytes; the
  // empty request for the whole server.
  std::string bytes;
  if (!service.empty()) {
    bytes.push_back('\x0a');
    bytes.push_back(static_cast<char>(service.size()));
    bytes.append(service);
  }
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  absl::Notification done;
  grpc::Status status;  // written before done.Notify(), read after WaitForNotification()
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out.size() == 2 && out[0] == '\x08' ? out[1] : -1;
}

}  // namespace oft::testing
