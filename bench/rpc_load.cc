// rpc_load: how responsive oft_server stays while it trains.
//
// N client threads call GetJob / ListJobs in a closed loop (each call with a deadline) and M
// watcher threads follow WatchJob on the training job, for --seconds after --warmup_seconds.
// Reports requests/s and p50/p90/p99/max latency per method as JSON lines. Issue 5's target:
// p99 < 50 ms with 64 clients while a CPU job trains.
//
// Honesty (issue 11): every failed call is counted (DEADLINE_EXCEEDED included) and enters
// the percentiles at its deadline; ListJobs runs against a store of at least --store_jobs
// jobs (with --spawn, that many jobs are created and cancelled before the measurement).
// Rows carry the CPU path ("isa") and model ("cpu") of the machine.
//
//   rpc_load --spawn=build/server/oft_server            # starts its own server on a temp dir
//   rpc_load --server=127.0.0.1:50051 --api_key=KEY     # against a running server
//
// With --spawn the server gets --devices=cpu --train_threads=N, a temp --data_dir and the
// embedded default model. Unless --job_id names an existing job, the sample dataset is
// uploaded and a long CPU training job is submitted first; the measurement starts once it is
// RUNNING, and the job is cancelled at the end. Uses the generated stubs (oft_proto) directly.
#include <grpcpp/grpcpp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "oft/v1/datasets.grpc.pb.h"
#include "bench/machine_info.h"
#include "bench/spawned_server.h"
#include "bench/stats.h"
#include "oft/v1/jobs.grpc.pb.h"
#include "server/common/flags.h"

namespace oft {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string server = "127.0.0.1:50051";           // target when not spawning
  std::string api_key;                              // Bearer key ("" = none)
  std::string spawn;                                // path to oft_server: start one on a temp dir
  std::string model_dir = "models/default";         // --spawn: the "default" base model
  std::string dataset = "data/sample/train.jsonl";  // uploaded for the training job
  std::string base_model = "default";               // the job's base model
  std::string job_id;                               // existing job to query ("" = submit one)
  int clients = 64;                                 // GetJob/ListJobs threads
  int watchers = 8;                                 // WatchJob threads
  int channels = 4;                                 // client channels (HTTP/2 connections)
  double seconds = 20;                              // measured duration
  double warmup_seconds = 2;                        // run but not measured
  int deadline_ms = 2000;                           // per unary call
  int train_threads = 1;                            // --spawn: torch threads of the CPU worker
  int list_page_size = 20;                          // ListJobs page size
  int store_jobs = 1000;                            // --spawn: jobs in the store before measuring
};

std::string Sha256Hex(const std::string& bytes) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), md);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : md) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

// The --spawn server, killed by Die (std::exit skips the destructors of locals).
pid_t g_spawned_pid = -1;

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "rpc_load: %s\n", msg.c_str());
  if (g_spawned_pid > 0) kill(g_spawned_pid, SIGKILL);
  std::exit(1);
}

void SetUp(grpc::ClientContext* ctx, const Options& opt, int deadline_ms) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  if (!opt.api_key.empty()) ctx->AddMetadata("authorization", "Bearer " + opt.api_key);
}

std::string StatusText(const grpc::Status& s) {
  return std::to_string(s.error_code()) + " " + s.error_message();
}

// Uploads opt.dataset and submits a long training job; returns its id once RUNNING.
std::string SubmitTrainingJob(const Options& opt, const std::shared_ptr<grpc::Channel>& ch,
                              std::string* dataset_id) {
  std::ifstream in(opt.dataset, std::ios::binary);
  if (!in) Die("cannot read " + opt.dataset);
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  auto datasets = v1::DatasetService::NewStub(ch);
  grpc::ClientContext uctx;
  SetUp(&uctx, opt, 60000);
  v1::Dataset ds;
  auto writer = datasets->UploadDataset(&uctx, &ds);
  v1::UploadDatasetRequest req;
  auto* h = req.mutable_header();
  h->set_name("rpc-load");
  h->set_sha256(Sha256Hex(data));
  h->set_size_bytes(static_cast<int64_t>(data.size()));
  writer->Write(req);
  constexpr size_t kChunk = 1 << 20;
  for (size_t i = 0; i < data.size(); i += kChunk) {
    req.Clear();
    req.set_chunk(data.substr(i, kChunk));
    if (!writer->Write(req)) break;
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) Die("UploadDataset: " + StatusText(s));
  *dataset_id = ds.id();

  auto jobs = v1::JobService::NewStub(ch);
  v1::CreateJobRequest creq;
  auto* spec = creq.mutable_spec();
  spec->set_base_model(opt.base_model);
  spec->add_training_dataset_ids(ds.id());
  spec->set_output_adapter_name("rpc-load");
  auto* hp = spec->mutable_hyperparameters();
  hp->set_max_steps(1000000);  // trains for the whole measurement; cancelled at the end
  hp->set_batch_size(4);
  hp->set_max_seq_len(128);
  hp->set_checkpoint_every(0);
  v1::Job job;
  grpc::ClientContext cctx;
  SetUp(&cctx, opt, 30000);
  s = jobs->CreateJob(&cctx, creq, &job);
  if (!s.ok()) Die("CreateJob: " + StatusText(s));

  const auto give_up = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < give_up) {
    v1::GetJobRequest g;
    g.set_id(job.id());
    grpc::ClientContext gctx;
    SetUp(&gctx, opt, 5000);
    s = jobs->GetJob(&gctx, g, &job);
    if (!s.ok()) Die("GetJob: " + StatusText(s));
    if (job.state() == v1::Job::RUNNING && job.progress().step() > 0) return job.id();
    if (job.state() != v1::Job::QUEUED && job.state() != v1::Job::RUNNING) {
      Die("training job ended " + v1::Job::State_Name(job.state()) + ": " +
          job.failure().message());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  Die("training job did not start within 120 s");
}

// Creates and cancels jobs until the store holds at least opt.store_jobs (cancelled jobs do
// not count against the active-jobs cap); 8 threads. Returns the number created.
int64_t FillJobStore(const Options& opt, const std::shared_ptr<grpc::Channel>& ch,
                     const std::string& dataset_id) {
  std::atomic<int64_t> next{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      auto jobs = v1::JobService::NewStub(ch);
      while (next.fetch_add(1) < opt.store_jobs) {
        v1::CreateJobRequest creq;
        auto* spec = creq.mutable_spec();
        spec->set_base_model(opt.base_model);
        spec->add_training_dataset_ids(dataset_id);
        spec->set_output_adapter_name("rpc-load-fill");
        spec->mutable_hyperparameters()->set_max_steps(1);
        v1::Job job;
        grpc::ClientContext cctx;
        SetUp(&cctx, opt, 30000);
        grpc::Status s = jobs->CreateJob(&cctx, creq, &job);
        if (!s.ok()) {
          if (failures.fetch_add(1) == 0) std::fprintf(stderr, "rpc_load: fill CreateJob: %s\n", StatusText(s).c_str());
          continue;
        }
        v1::CancelJobRequest c;
        c.set_id(job.id());
        grpc::ClientContext xctx;
        SetUp(&xctx, opt, 30000);
        s = jobs->CancelJob(&xctx, c, &job);
        if (!s.ok() && failures.fetch_add(1) == 0) {
          std::fprintf(stderr, "rpc_load: fill CancelJob: %s\n", StatusText(s).c_str());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  if (failures.load() > 0) Die("filling the job store failed " + std::to_string(failures.load()) + " times");
  return opt.store_jobs;
}

struct ThreadStats {
  std::vector<float> get_ms, list_ms;
  std::map<std::string, int64_t> errors;  // "Method:code" -> count
};

// `v` holds every call's latency, failed calls at their deadline; `errors` of them failed.
void Report(const Options& opt, const char* method, std::vector<float> v, int64_t errors,
            bool training, int64_t steps, int64_t store_jobs) {
  const double rps = (static_cast<double>(v.size()) - errors) / opt.seconds;
  const double max = v.empty() ? 0 : *std::max_element(v.begin(), v.end());
  const double p50 = bench::Percentile(v, 0.50), p90 = bench::Percentile(v, 0.90),
               p99 = bench::Percentile(v, 0.99);
  std::printf(
      "{\"bench\":\"rpc_load\",%s,\"method\":\"%s\",\"clients\":%d,\"watchers\":%d,"
      "\"seconds\":%.1f,\"requests\":%zu,\"errors\":%lld,\"ok_rps\":%.1f,\"p50_ms\":%.3f,"
      "\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"deadline_ms\":%d,"
      "\"store_jobs\":%lld,\"training\":%s,\"train_steps\":%lld}\n",
      oft::bench::IsaCpuJsonFields().c_str(), method, opt.clients, opt.watchers, opt.seconds,
      v.size(), static_cast<long long>(errors), rps, p50, p90, p99, max, opt.deadline_ms,
      static_cast<long long>(store_jobs), training ? "true" : "false", static_cast<long long>(steps));
}

int Run(Options opt) {
  std::unique_ptr<bench::SpawnedServer> spawned;
  if (!opt.spawn.empty()) {
    if (opt.api_key.empty()) opt.api_key = "rpc-load-bench-key";
    bench::SpawnOptions so;
    so.binary = opt.spawn;
    so.model_dir = opt.model_dir;
    so.api_key = opt.api_key;
    so.tag = "rpc-load";
    so.extra_args = {"--train_threads=" + std::to_string(opt.train_threads)};
    std::string error;
    spawned = std::make_unique<bench::SpawnedServer>(so, &error);
    if (!error.empty()) Die(error);
    g_spawned_pid = spawned->pid();
    opt.server = spawned->grpc_address();
  }
  grpc::ChannelArguments args;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < std::max(1, opt.channels); ++i) {
    args.SetInt("oft_bench_channel", i);  // distinct args: distinct connections
    channels.push_back(
        grpc::CreateCustomChannel(opt.server, grpc::InsecureChannelCredentials(), args));
  }
  for (auto& ch : channels) {
    if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      Die("cannot connect to " + opt.server);
    }
  }
  const bool own_job = opt.job_id.empty();
  std::string dataset_id;
  if (own_job) opt.job_id = SubmitTrainingJob(opt, channels[0], &dataset_id);
  int64_t store_jobs = -1;  // unknown against a running server
  if (spawned && own_job) store_jobs = 1 + FillJobStore(opt, channels[0], dataset_id);

  auto job_step = [&]() -> std::pair<int64_t, v1::Job::State> {
    auto stub = v1::JobService::NewStub(channels[0]);
    v1::GetJobRequest g;
    g.set_id(opt.job_id);
    v1::Job job;
    grpc::ClientContext ctx;
    SetUp(&ctx, opt, 5000);
    grpc::Status s = stub->GetJob(&ctx, g, &job);
    if (!s.ok()) Die("GetJob(" + opt.job_id + "): " + StatusText(s));
    return {job.progress().step(), job.state()};
  };

  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(opt.warmup_seconds));
  const auto stop = measure_from + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(opt.seconds));
  std::atomic<bool> done{false};
  std::vector<ThreadStats> stats(opt.clients);
  std::vector<std::thread> threads;
  int64_t step_before = 0;

  for (int t = 0; t < opt.clients; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::JobService::NewStub(channels[t % channels.size()]);
      ThreadStats& st = stats[t];
      for (int64_t i = t; Clock::now() < stop; ++i) {
        const bool get = (i % 2 == 0);
        grpc::ClientContext ctx;
        SetUp(&ctx, opt, opt.deadline_ms);
        const auto t0 = Clock::now();
        grpc::Status s;
        if (get) {
          v1::GetJobRequest r;
          r.set_id(opt.job_id);
          v1::Job resp;
          s = stub->GetJob(&ctx, r, &resp);
        } else {
          v1::ListJobsRequest r;
          r.set_page_size(opt.list_page_size);
          v1::ListJobsResponse resp;
          s = stub->ListJobs(&ctx, r, &resp);
        }
        const auto t1 = Clock::now();
        if (t0 < measure_from) continue;
        float ms = std::chrono::duration<float, std::milli>(t1 - t0).count();
        if (!s.ok()) {
          // Counted, and in the percentiles at its deadline (never faster than a success).
          ++st.errors[std::string(get ? "GetJob:" : "ListJobs:") + std::to_string(s.error_code())];
          ms = std::max(ms, static_cast<float>(opt.deadline_ms));
        }
        (get ? st.get_ms : st.list_ms).push_back(ms);
      }
    });
  }

  absl::Mutex watch_mu;
  std::vector<grpc::ClientContext*> live_watches;  // guarded by watch_mu
  std::atomic<int64_t> events{0}, streams{0}, watch_errors{0};
  std::vector<float> first_event_ms;  // guarded by watch_mu
  for (int w = 0; w < opt.watchers; ++w) {
    threads.emplace_back([&, w] {
      auto stub = v1::JobService::NewStub(channels[w % channels.size()]);
      int64_t after = 0;
      while (!done.load() && Clock::now() < stop) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + (stop - Clock::now()) +
                         std::chrono::seconds(5));
        if (!opt.api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + opt.api_key);
        {
          absl::MutexLock l(&watch_mu);
          if (done.load()) break;
          live_watches.push_back(&ctx);
        }
        v1::WatchJobRequest r;
        r.set_id(opt.job_id);
        r.set_after_event_id(after);
        const auto t0 = Clock::now();
        auto reader = stub->WatchJob(&ctx, r);
        v1::JobEvent ev;
        bool first = true;
        while (reader->Read(&ev)) {
          if (first && after == 0) {
            absl::MutexLock l(&watch_mu);
            first_event_ms.push_back(
                std::chrono::duration<float, std::milli>(Clock::now() - t0).count());
          }
          first = false;
          after = ev.event_id();
          ++events;
        }
        grpc::Status s = reader->Finish();
        {
          absl::MutexLock l(&watch_mu);
          live_watches.erase(std::find(live_watches.begin(), live_watches.end(), &ctx));
        }
        ++streams;
        // Streams are cancelled at the end; any other end (DEADLINE_EXCEEDED included) counts.
        if (!s.ok() && !(s.error_code() == grpc::StatusCode::CANCELLED && done.load())) ++watch_errors;
        // The stream ended (job finished): re-watch from the last id, gently.
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
  }

  std::this_thread::sleep_until(measure_from);
  step_before = job_step().first;
  std::this_thread::sleep_until(stop);
  const auto [step_after, state_after] = job_step();
  {
    absl::MutexLock l(&watch_mu);
    done.store(true);
    for (auto* ctx : live_watches) ctx->TryCancel();
  }
  for (auto& t : threads) t.join();

  const bool training = state_after == v1::Job::RUNNING && step_after > step_before;
  std::vector<float> get_ms, list_ms;
  int64_t get_err = 0, list_err = 0;
  for (auto& st : stats) {
    get_ms.insert(get_ms.end(), st.get_ms.begin(), st.get_ms.end());
    list_ms.insert(list_ms.end(), st.list_ms.begin(), st.list_ms.end());
    for (auto& [k, n] : st.errors) {
      (k.rfind("GetJob:", 0) == 0 ? get_err : list_err) += n;
      std::fprintf(stderr, "rpc_load: error %s x%lld\n", k.c_str(), static_cast<long long>(n));
    }
  }
  const int64_t steps = step_after - step_before;
  std::vector<float> all = get_ms;
  all.insert(all.end(), list_ms.begin(), list_ms.end());
  Report(opt, "GetJob", get_ms, get_err, training, steps, store_jobs);
  Report(opt, "ListJobs", list_ms, list_err, training, steps, store_jobs);
  Report(opt, "all", all, get_err + list_err, training, steps, store_jobs);
  std::printf(
      "{\"bench\":\"rpc_load\",%s,\"method\":\"WatchJob\",\"watchers\":%d,\"streams\":%lld,"
      "\"events\":%lld,\"errors\":%lld,\"first_event_p50_ms\":%.3f,\"first_event_max_ms\":%.3f}\n",
      oft::bench::IsaCpuJsonFields().c_str(), opt.watchers, static_cast<long long>(streams.load()), static_cast<long long>(events.load()),
      static_cast<long long>(watch_errors.load()), bench::Percentile(first_event_ms, 0.5),
      first_event_ms.empty() ? 0.0
                             : *std::max_element(first_event_ms.begin(), first_event_ms.end()));

  if (own_job) {
    auto stub = v1::JobService::NewStub(channels[0]);
    v1::CancelJobRequest c;
    c.set_id(opt.job_id);
    v1::Job job;
    grpc::ClientContext ctx;
    SetUp(&ctx, opt, 10000);
    stub->CancelJob(&ctx, c, &job);  // best effort
  }
  return 0;
}

}  // namespace
}  // namespace oft

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv,
      "usage: rpc_load (--spawn=build/server/oft_server | --server=HOST:PORT --api_key=KEY)\n"
      "                [--clients=64] [--watchers=8] [--seconds=20] [--warmup_seconds=N]\n"
      "                [--model_dir=DIR] [--dataset=FILE] [--base_model=NAME] [--job_id=ID]\n"
      "                [--channels=N] [--deadline_ms=N] [--train_threads=N] [--list_page_size=N]\n"
      "RPC latency (p50/p90/p99/max per method) while the server trains; JSON lines on stdout.\n")) {
    return 0;
  }
  oft::Options opt;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    std::string v;
    if (oft::ParseFlag(a, "--server", &opt.server) ||
        oft::ParseFlag(a, "--api_key", &opt.api_key) || oft::ParseFlag(a, "--spawn", &opt.spawn) ||
        oft::ParseFlag(a, "--model_dir", &opt.model_dir) ||
        oft::ParseFlag(a, "--dataset", &opt.dataset) ||
        oft::ParseFlag(a, "--base_model", &opt.base_model) ||
        oft::ParseFlag(a, "--job_id", &opt.job_id)) {
      continue;
    }
    if (oft::ParseFlag(a, "--clients", &v)) {
      opt.clients = std::stoi(v);
    } else if (oft::ParseFlag(a, "--watchers", &v)) {
      opt.watchers = std::stoi(v);
    } else if (oft::ParseFlag(a, "--channels", &v)) {
      opt.channels = std::stoi(v);
    } else if (oft::ParseFlag(a, "--seconds", &v)) {
      opt.seconds = std::stod(v);
    } else if (oft::ParseFlag(a, "--warmup_seconds", &v)) {
      opt.warmup_seconds = std::stod(v);
    } else if (oft::ParseFlag(a, "--deadline_ms", &v)) {
      opt.deadline_ms = std::stoi(v);
    } else if (oft::ParseFlag(a, "--train_threads", &v)) {
      opt.train_threads = std::stoi(v);
    } else if (oft::ParseFlag(a, "--list_page_size", &v)) {
      opt.list_page_size = std::stoi(v);
    } else if (oft::ParseFlag(a, "--store_jobs", &v)) {
      opt.store_jobs = std::stoi(v);
    } else {
      std::fprintf(stderr,
                   "usage: rpc_load [--spawn=PATH/oft_server | --server=HOST:PORT --api_key=KEY]\n"
                   "  [--clients=64] [--watchers=8] [--seconds=20] [--warmup_seconds=2]\n"
                   "  [--deadline_ms=2000] [--channels=4] [--job_id=ID] [--train_threads=1]\n"
                   "  [--model_dir=models/default] [--dataset=data/sample/train.jsonl]\n"
                   "  [--store_jobs=1000] (--spawn: jobs created + cancelled before measuring)\n"
                   "unknown flag: %s\n",
                   a);
      return 2;
    }
  }
  if (opt.clients < 0 || opt.watchers < 0 || opt.seconds <= 0) {
    std::fprintf(stderr, "rpc_load: --clients/--watchers >= 0 and --seconds > 0\n");
    return 2;
  }
  if (!oft::bench::InitCpuIsa("rpc_load")) return 2;
  signal(SIGPIPE, SIG_IGN);
  return oft::Run(opt);
}
