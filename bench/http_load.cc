// http_load: streaming chat completions over the OpenAI-compatible HTTP API vs the same load
// over gRPC Generate, side by side in one run (issue 14's target: HTTP within 5% of gRPC
// throughput at equal concurrency).
//
//   http_load --spawn=build/server/oft_server [--concurrency=64] [--requests=2] [--max_tokens=32]
//             [--rounds=3] [--serving_threads=N]
//   http_load --server=HOST:PORT --http_port=N --api_key=KEY ...   (a running server)
//
// A round runs the gRPC load, then the HTTP load. Each load: `concurrency` client threads, each
// sending `requests` streamed chat requests back to back; every request has the same messages,
// temperature 0.7 and seed = its index, so both APIs generate the same tokens. TTFT: request
// sent -> the first chunk carrying text. tokens/s: generated tokens (gRPC: token ids received;
// HTTP: stream_options.include_usage) / the load's wall time. Failed requests are counted and
// leave their tokens out. JSON lines: one row per API per round, then a summary with the
// median over rounds and http/grpc ratios. Rows carry the CPU path ("isa") and model ("cpu").
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "bench/machine_info.h"
#include "bench/spawned_server.h"
#include "bench/stats.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "oft/v1/inference.grpc.pb.h"
#include "server/common/flags.h"

namespace oft {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Options {
  std::string spawn, model_dir = "models/default", api_key;
  std::string server = "127.0.0.1:50051";
  int http_port = 0;
  int concurrency = 64, requests = 2, max_tokens = 32, rounds = 3, serving_threads = 0;
};

const char* const kSystem = "You answer briefly.";
const char* const kUser = "Name three colours and say why the sky is blue.";

struct LoadResult {
  std::vector<double> ttft_ms;  // successful requests
  int64_t tokens = 0, ok = 0, failed = 0;
  double seconds = 0;
  std::string first_error;
};

struct Sample {
  bool ok = false;
  double ttft_ms = 0;
  int64_t tokens = 0;
  std::string error;
};

Sample GrpcRequest(v1::InferenceService::Stub& stub, const Options& o, int index) {
  v1::GenerateRequest req;
  auto* chat = req.mutable_chat();
  auto* sys = chat->add_messages();
  sys->set_role("system");
  sys->set_content(kSystem);
  auto* user = chat->add_messages();
  user->set_role("user");
  user->set_content(kUser);
  req.set_max_tokens(o.max_tokens);
  req.set_temperature(0.7);
  req.set_seed(static_cast<uint64_t>(index));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  ctx.AddMetadata("authorization", "Bearer " + o.api_key);
  Sample s;
  const auto start = Clock::now();
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  bool first = true;
  while (reader->Read(&resp)) {
    if (first && !resp.text_delta().empty()) {
      s.ttft_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      first = false;
    }
    s.tokens += resp.token_ids_size();
  }
  const grpc::Status st = reader->Finish();
  s.ok = st.ok() && !first;
  if (!st.ok()) s.error = "gRPC " + std::to_string(st.error_code()) + " " + st.error_message();
  return s;
}

Sample HttpRequest(httplib::Client& client, const Options& o, int index) {
  const json body = {{"model", "default"},
                     {"messages", {{{"role", "system"}, {"content", kSystem}}, {{"role", "user"}, {"content", kUser}}}},
                     {"max_tokens", o.max_tokens},
                     {"temperature", 0.7},
                     {"seed", index},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
  Sample s;
  std::string buffer;
  bool first = true, done = false;
  const auto start = Clock::now();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.headers = {{"Authorization", "Bearer " + o.api_key}};
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      const json chunk = json::parse(payload, nullptr, false);
      if (chunk.is_discarded()) continue;
      if (first && chunk.contains("choices") && !chunk["choices"].empty()) {
        const json& delta = chunk["choices"][0]["delta"];
        if (delta.contains("content") && delta["content"].is_string() && !delta["content"].get<std::string>().empty()) {
          s.ttft_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
          first = false;
        }
      }
      if (chunk.contains("usage") && chunk["usage"].is_object()) {
        s.tokens = chunk["usage"].value("completion_tokens", int64_t{0});
      }
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool sent = client.send(req, res, error);
  s.ok = sent && res.status == 200 && done && !first;
  if (!s.ok) {
    s.error = sent ? "HTTP " + std::to_string(res.status) + " " + res.body.substr(0, 200)
                   : "HTTP send failed: " + httplib::to_string(error);
  }
  return s;
}

template <typename MakeClient, typename Call>
LoadResult RunLoad(const Options& o, MakeClient make_client, Call call) {
  std::vector<std::vector<Sample>> per_thread(o.concurrency);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < o.concurrency; ++t) {
    threads.emplace_back([&, t] {
      auto client = make_client(t);
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      for (int r = 0; r < o.requests; ++r) per_thread[t].push_back(call(*client, o, t * o.requests + r));
    });
  }
  while (ready.load() < o.concurrency) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto start = Clock::now();
  go.store(true);
  for (auto& th : threads) th.join();
  LoadResult out;
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (const auto& samples : per_thread) {
    for (const Sample& s : samples) {
      if (s.ok) {
        ++out.ok;
        out.tokens += s.tokens;
        out.ttft_ms.push_back(s.ttft_ms);
      } else {
        ++out.failed;
        if (out.first_error.empty()) out.first_error = s.error;
      }
    }
  }
  return out;
}

json Row(const Options& o, const char* api, int round, LoadResult r) {
  const double tps = r.seconds > 0 ? static_cast<double>(r.tokens) / r.seconds : 0;
  json row = {{"bench", "http_load"}, {"api", api}, {"round", round}, {"concurrency", o.concurrency},
              {"requests", r.ok + r.failed}, {"failed", r.failed}, {"tokens", r.tokens},
              {"seconds", r.seconds}, {"tokens_per_s", tps},
              {"ttft_p50_ms", bench::Percentile(r.ttft_ms, 0.5)},
              {"ttft_p99_ms", bench::Percentile(r.ttft_ms, 0.99)}};
  if (!r.first_error.empty()) row["first_error"] = r.first_error;
  return row;
}

void Print(json row) {
  // The machine fields are a JSON fragment ("isa":..,"cpu":..): splice them in.
  std::string text = row.dump();
  text.insert(text.size() - 1, "," + bench::IsaCpuJsonFields());
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

int Run(Options o) {
  std::unique_ptr<bench::SpawnedServer> spawned;
  if (!o.spawn.empty()) {
    if (o.api_key.empty()) o.api_key = "http-load-bench-key";
    bench::SpawnOptions so;
    so.binary = o.spawn;
    so.model_dir = o.model_dir;
    so.api_key = o.api_key;
    so.tag = "http-load";
    so.http = true;
    // Every streamed request holds one HTTP handler thread.
    so.extra_args = {"--http_threads=" + std::to_string(o.concurrency + 8)};
    if (o.serving_threads > 0) so.extra_args.push_back("--serving_threads=" + std::to_string(o.serving_threads));
    std::string error;
    spawned = std::make_unique<bench::SpawnedServer>(so, &error);
    if (!error.empty()) {
      std::fprintf(stderr, "http_load: %s\n", error.c_str());
      return 1;
    }
    o.server = spawned->grpc_address();
    o.http_port = spawned->http_port();
  }
  if (o.http_port <= 0) {
    std::fprintf(stderr, "http_load: --http_port is required without --spawn\n");
    return 2;
  }
  auto channel = grpc::CreateChannel(o.server, grpc::InsecureChannelCredentials());
  auto make_grpc = [&](int) { return v1::InferenceService::NewStub(channel); };
  auto make_http = [&](int) {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", o.http_port);
    c->set_read_timeout(300, 0);
    c->set_keep_alive(true);
    return c;
  };
  // Warm-up: one request each way (model pages, thread pools), not measured.
  Options one = o;
  one.concurrency = 1;
  one.requests = 1;
  RunLoad(one, make_grpc, GrpcRequest);
  RunLoad(one, make_http, HttpRequest);

  std::vector<double> grpc_tps, http_tps, grpc_p50, http_p50, grpc_p99, http_p99;
  int64_t failed = 0;
  for (int round = 0; round < o.rounds; ++round) {
    for (const char* api : {"grpc", "http"}) {
      const bool http = api[0] == 'h';
      LoadResult r = http ? RunLoad(o, make_http, HttpRequest) : RunLoad(o, make_grpc, GrpcRequest);
      json row = Row(o, api, round, r);
      failed += r.failed;
      (http ? http_tps : grpc_tps).push_back(row["tokens_per_s"].get<double>());
      (http ? http_p50 : grpc_p50).push_back(row["ttft_p50_ms"].get<double>());
      (http ? http_p99 : grpc_p99).push_back(row["ttft_p99_ms"].get<double>());
      Print(row);
    }
  }
  const double g = bench::Median(grpc_tps), h = bench::Median(http_tps);
  Print({{"bench", "http_load"}, {"api", "summary"}, {"concurrency", o.concurrency}, {"rounds", o.rounds},
         {"max_tokens", o.max_tokens}, {"failed", failed},
         {"grpc_tokens_per_s", g}, {"http_tokens_per_s", h}, {"http_over_grpc_tokens_per_s", g > 0 ? h / g : 0},
         {"grpc_ttft_p50_ms", bench::Median(grpc_p50)}, {"http_ttft_p50_ms", bench::Median(http_p50)},
         {"grpc_ttft_p99_ms", bench::Median(grpc_p99)}, {"http_ttft_p99_ms", bench::Median(http_p99)}});
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace oft

int main(int argc, char** argv) {
  const char* usage =
      "usage: http_load (--spawn=build/server/oft_server | --server=HOST:PORT --http_port=N --api_key=KEY)\n"
      "                 [--concurrency=64] [--requests=2] [--max_tokens=32] [--rounds=3]\n"
      "                 [--model_dir=models/default] [--serving_threads=N]\n"
      "Streaming chat completions over HTTP vs gRPC Generate, side by side; JSON lines on stdout.\n";
  if (oft::AnswerHelp(argc, argv, usage)) return 0;
  oft::Options o;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    std::string v;
    if (oft::ParseFlag(a, "--spawn", &o.spawn) || oft::ParseFlag(a, "--server", &o.server) ||
        oft::ParseFlag(a, "--api_key", &o.api_key) || oft::ParseFlag(a, "--model_dir", &o.model_dir)) {
      continue;
    }
    int* target = nullptr;
    if (oft::ParseFlag(a, "--http_port", &v)) target = &o.http_port;
    else if (oft::ParseFlag(a, "--concurrency", &v)) target = &o.concurrency;
    else if (oft::ParseFlag(a, "--requests", &v)) target = &o.requests;
    else if (oft::ParseFlag(a, "--max_tokens", &v)) target = &o.max_tokens;
    else if (oft::ParseFlag(a, "--rounds", &v)) target = &o.rounds;
    else if (oft::ParseFlag(a, "--serving_threads", &v)) target = &o.serving_threads;
    if (target == nullptr || !absl::SimpleAtoi(v, target) || *target < 0) {
      std::fprintf(stderr, "%sbad flag: %s\n", usage, a);
      return 2;
    }
  }
  if (o.concurrency < 1 || o.requests < 1 || o.rounds < 1 || o.max_tokens < 1) {
    std::fprintf(stderr, "http_load: --concurrency, --requests, --rounds and --max_tokens must be >= 1\n");
    return 2;
  }
  if (!oft::bench::InitCpuIsa("http_load")) return 2;
  signal(SIGPIPE, SIG_IGN);
  return oft::Run(o);
}
