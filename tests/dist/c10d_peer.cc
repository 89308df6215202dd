// c10d_peer: one rank for c10d_collective_test. Reads torchrun's environment, connects
// (ConnectC10d), checks agreement on --identity, all-reduces tensors whose sums it knows,
// and prints one JSON line: {"ok": true, "checked": N} or {"ok": false, "code": ..., "message": ...}.
//   --timeout_ms=N          the c10d timeout
//   --identity=JSON         what this rank publishes to CheckAgreement (default {})
//   --exit_after_connect    exit 0 right after connecting (a rank that dies mid-run)
//   --serve_store_seconds=N no rank: host a TCPStore at MASTER_PORT, as torchrun's agent does
//                           (TORCHELASTIC_USE_AGENT_STORE=True), until both ranks' first
//                           agreement keys (restart count 1) are in it, at most N seconds;
//                           prints {"saw_ranks": true|false}
// Exit status 0 when everything summed as expected, 1 otherwise.
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <unistd.h>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/dist/c10d_collective.h"
#include "torch/csrc/distributed/c10d/TCPStore.hpp"

namespace {

int Fail(const absl::Status& st) {
  nlohmann::json j;
  j["ok"] = false;
  j["code"] = absl::StatusCodeToString(st.code());
  j["message"] = std::string(st.message());
  std::cout << j.dump() << std::endl;
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t timeout_ms = 10000;
  std::string identity = "{}";
  bool exit_after_connect = false;
  int serve_store_seconds = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--timeout_ms=", 0) == 0) timeout_ms = std::stoll(a.substr(13));
    else if (a.rfind("--identity=", 0) == 0) identity = a.substr(11);
    else if (a == "--exit_after_connect") exit_after_connect = true;
    else if (a.rfind("--serve_store_seconds=", 0) == 0) serve_store_seconds = std::stoi(a.substr(22));
  }
  if (serve_store_seconds > 0) {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(std::stoi(std::getenv("MASTER_PORT")));
    so.isServer = true;
    so.waitWorkers = false;
    auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
    std::cout << "{\"serving\":true}" << std::endl;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(serve_store_seconds);
    bool saw = false;
    while (!saw && std::chrono::steady_clock::now() < until) {
      saw = store->check({"oft/attempt_1/agree/0/0", "oft/attempt_1/agree/0/1"});
      if (!saw) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::cout << "{\"saw_ranks\":" << (saw ? "true" : "false") << "}" << std::endl;
    // Keep serving while the ranks finish.
    std::this_thread::sleep_for(std::chrono::seconds(serve_store_seconds));
    return saw ? 0 : 1;
  }
  auto env = oft::LaunchEnvFromEnvironment([](const char* n) { return std::getenv(n); });
  if (!env.ok()) return Fail(env.status());
  if (!env->has_value()) return Fail(absl::InvalidArgumentError("no RANK/WORLD_SIZE set"));
  oft::C10dOptions options;
  options.timeout = std::chrono::milliseconds(timeout_ms);
  auto group = oft::ConnectC10d(**env, options);
  if (!group.ok()) return Fail(group.status());
  oft::Collective& c = **group;
  if (exit_after_connect) _exit(0);
  if (absl::Status st = c.CheckAgreement("the test identity", identity); !st.ok()) return Fail(st);
  const int r = c.rank(), w = c.world_size();
  int checked = 0;
  // Rank r contributes (r + 1) * (i + 1) at index i: the sum is w (w + 1) / 2 * (i + 1).
  // Sizes from one value to past gloo's ring chunking; float, double and integer types.
  for (const at::ScalarType type : {at::kFloat, at::kDouble, at::kLong}) {
    for (const int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1} << 20}) {
      at::Tensor t = (at::arange(n, at::kDouble) + 1).mul(r + 1).to(type);
      if (absl::Status st = c.AllReduceSum(t); !st.ok()) return Fail(st);
      const at::Tensor want = (at::arange(n, at::kDouble) + 1).mul(w * (w + 1) / 2).to(type);
      if (!at::equal(t, want)) {
        return Fail(absl::InternalError(absl::StrCat("wrong sum for ", n, " values of type ",
                                                     c10::toString(type))));
      }
      ++checked;
    }
  }
  // A second agreement after the collectives: keys of one check never meet another's.
  if (absl::Status st = c.CheckAgreement("the test identity again", identity); !st.ok()) {
    return Fail(st);
  }
  nlohmann::json j;
  j["ok"] = true;
  j["checked"] = checked;
  j["rank"] = r;
  std::cout << j.dump() << std::endl;
  return 0;
}
