// oft_server: the long-running OFTv2 adapter training and serving service.
//
//   oft_server [--listen=127.0.0.1:50051] [--metrics_listen=127.0.0.1:9464]
//              [--data_dir=./oft-data] [--model=NAME=DIR ...] [--devices=cpu,cuda:0]
//              [--chat_template=MODEL=TEMPLATE ...]
//              [--jobs_per_device=N] [--train_threads=N] [--api_key=TENANT:KEY ...] [--api_keys_file=FILE]
//              [--allow_unauthenticated] [--tls_cert=PEM --tls_key=PEM [--tls_client_ca=PEM]]
//              [--max_upload_bytes=N] [--max_message_bytes=N] [--max_active_jobs_per_tenant=N]
//              [--adapter_memory_budget_bytes=N] [--serving_device=cpu|cuda:N]
//              [--serving_threads=N] [--device_memory_bytes=N] [--cuda_kernels=auto|on|off]
//              [--served_rotations=compact|fp32]
//              [--port_file=FILE] [--metrics_port_file=FILE] [--executor_threads=N]
//              [--http_listen=HOST:PORT] [--http_port_file=FILE] [--http_threads=N]
//              [--health_saturation_seconds=S] [--shutdown_timeout_seconds=S]
//              [--checkpoint_retention=none|last|all]
//              [--log_format=text|json] [--log_level=debug|info|warn|error]
//
// SIGTERM / SIGINT: graceful shutdown (running jobs are checkpointed and requeued), exit 0.
// A shutdown still unfinished after --shutdown_timeout_seconds (default 60; stuck requests,
// a job that does not reach its next step) ends the process with exit status 3: the job
// store is durable and running jobs resume from their last checkpoint at the next start.
// Exit status 2: bad flags; 1: the server could not start (the message says why).
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/common/flags.h"
#include "server/common/log.h"
#include "server/common/runtime.h"
#include "server/oft/cpu_isa.h"
#include "server/oft/kernel_mode.h"
#include "server/server.h"
#include "server/train/checkpoint_retention.h"

namespace {

constexpr char kUsage[] =
    "usage: oft_server [--listen=127.0.0.1:50051] [--metrics_listen=127.0.0.1:9464]\n"
    "                  [--data_dir=./oft-data] [--model=NAME=DIR ...] [--devices=cpu,cuda:0]\n"
    "                  [--chat_template=MODEL=TEMPLATE ...]\n"
    "                  [--jobs_per_device=N] [--train_threads=N] [--api_key=TENANT:KEY ...]\n"
    "                  [--api_keys_file=FILE] [--allow_unauthenticated]\n"
    "                  [--tls_cert=PEM --tls_key=PEM [--tls_client_ca=PEM]]\n"
    "                  [--max_upload_bytes=N] [--max_message_bytes=N]\n"
    "                  [--max_active_jobs_per_tenant=N] [--adapter_memory_budget_bytes=N]\n"
    "                  [--serving_device=cpu|cuda:N] [--serving_threads=N]\n"
    "                  [--served_rotations=compact|fp32]\n"
    "                  [--device_memory_bytes=N] [--port_file=FILE] [--metrics_port_file=FILE]\n"
    "                  [--executor_threads=N] [--health_saturation_seconds=S]\n"
    "                  [--shutdown_timeout_seconds=S] [--checkpoint_retention=none|last|all]\n"
    "                  [--http_listen=HOST:PORT [--http_port_file=FILE] [--http_threads=N]]\n"
    "                  [--log_format=text|json] [--log_level=debug|info|warn|error]\n"
    "                  [--job_isolation=process|thread] [--worker_binary=PATH]\n"
    "                  [--worker_grace_seconds=S] [--worker_heartbeat_seconds=S]\n"
    "                  [--worker_max_restarts=N]\n"
    "The OFTv2 adapter training and serving service (gRPC oft.v1; with --http_listen also the\n"
    "OpenAI-compatible HTTP API /v1/models, /v1/completions, /v1/chat/completions, and /metrics,\n"
    "/healthz, /readyz). SIGTERM / SIGINT: graceful\n"
    "shutdown (running jobs are checkpointed and requeued), exit 0; still unfinished after\n"
    "--shutdown_timeout_seconds: exit 3 (running jobs resume from their last checkpoint).\n"
    "Logs go to stderr, one line per event (--log_format=json: one JSON object per line):\n"
    "job lifecycle (created, started, checkpoint, resumed, finished with its reason) at info,\n"
    "each RPC (method, tenant, code, latency) at debug.\n"
    "Callers authenticate with a key from --api_key / --api_keys_file (kept in the data dir);\n"
    "with no key at all the server refuses to start unless --allow_unauthenticated is given.\n"
    "--checkpoint_retention: what a finished job's checkpoints become: none (default; removed:\n"
    "a finished job is never resumed and its adapter is published), last (the newest kept,\n"
    "optimizer state included) or all. Applied when a job ends and, at start, to every job\n"
    "that is not queued.\n"
    "--job_isolation=process (default): each job trains in its own oft_train_worker processes,\n"
    "one per device (events over a pipe, SIGTERM then SIGKILL after --worker_grace_seconds on\n"
    "cancel, killed when silent for --worker_heartbeat_seconds, restarted from its checkpoint\n"
    "up to --worker_max_restarts times after a crash); a worker never outlives the server. The\n"
    "worker is --worker_binary, else oft_train_worker next to oft_server (or ../tools/ in a build\n"
    "tree). --job_isolation=thread: jobs train in threads of this process, one device each: no\n"
    "fault isolation (a crash or abort in training takes the server down), and process-wide\n"
    "settings are shared, so a job's result may depend on the other jobs.\n"
    "Exit status: 0 after shutdown or --help, 2 bad flags, 1 the server could not start.\n";

int Usage(const std::string& error) {
  std::cerr << "oft_server: " << error << "\n" << kUsage;
  return 2;
}

bool ParseInt(const std::string& name, const std::string& v, int64_t* out, std::string* err) {
  if (!absl::SimpleAtoi(v, out) || *out < 0) {
    *err = "--" + name + " must be a non-negative integer, got '" + v + "'";
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv, kUsage)) return 0;
  oft::ServerOptions o;
  bool models_given = false;
  double shutdown_timeout_seconds = 60;
  oft::LogFormat log_format = oft::LogFormat::kText;
  oft::LogLevel log_level = oft::LogLevel::kInfo;
  std::string err;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) return Usage("unexpected argument '" + arg + "'");
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const std::string v = eq == std::string::npos ? "" : arg.substr(eq + 1);
    int64_t n = 0;
    if (name == "listen") o.listen = v;
    else if (name == "port_file") o.port_file = v;
    else if (name == "metrics_listen") o.metrics_listen = v;
    else if (name == "metrics_port_file") o.metrics_port_file = v;
    else if (name == "http_listen") o.http_listen = v;
    else if (name == "http_port_file") o.http_port_file = v;
    else if (name == "http_threads") {
      if (!ParseInt(name, v, &n, &err) || n < 1 || n > 1024) return Usage("--http_threads must be in [1, 1024]");
      o.http_threads = static_cast<int>(n);
    }
    else if (name == "data_dir") o.data_dir = v;
    else if (name == "model") {
      const size_t e = v.find('=');
      if (e == std::string::npos || e == 0 || e + 1 == v.size()) {
        return Usage("--model must be NAME=DIR, got '" + v + "'");
      }
      if (!models_given) o.models.clear();
      models_given = true;
      o.models[v.substr(0, e)] = v.substr(e + 1);
    } else if (name == "chat_template") {
      const size_t e = v.find('=');
      if (e == std::string::npos || e == 0 || e + 1 == v.size()) {
        return Usage("--chat_template must be MODEL=TEMPLATE (llama3, chatml, qwen2, qwen2.5, "
                     "qwen3, gemma, phi3), got '" + v + "'");
      }
      o.chat_templates[v.substr(0, e)] = v.substr(e + 1);
    } else if (name == "devices") {
      o.devices = absl::StrSplit(v, ',', absl::SkipEmpty());
    } else if (name == "train_threads") {
      if (!ParseInt(name, v, &n, &err) || n < 1) return Usage("--train_threads must be >= 1");
      o.train_threads = static_cast<int>(n);
    } else if (name == "jobs_per_device") {
      if (!ParseInt(name, v, &n, &err) || n < 1) return Usage("--jobs_per_device must be >= 1");
      o.jobs_per_device = static_cast<int>(n);
    } else if (name == "api_key") {
      const size_t c = v.find(':');
      if (c == std::string::npos || c == 0 || c + 1 == v.size()) {
        return Usage("--api_key must be TENANT:KEY");
      }
      o.api_keys.emplace_back(v.substr(0, c), v.substr(c + 1));
    } else if (name == "api_keys_file") {
      std::ifstream in(v);
      if (!in) return Usage("--api_keys_file: cannot read " + v);
      std::string line;
      int line_no = 0;
      while (std::getline(in, line)) {
        ++line_no;
        absl::string_view l = absl::StripAsciiWhitespace(line);
        if (l.empty() || l[0] == '#') continue;
        std::vector<std::string> parts = absl::StrSplit(l, absl::ByAnyChar(" \t"), absl::SkipEmpty());
        if (parts.size() != 2) {
          return Usage("--api_keys_file " + v + " line " + std::to_string(line_no) +
                       ": expected 'TENANT KEY'");
        }
        o.api_keys.emplace_back(parts[0], parts[1]);
      }
    } else if (name == "allow_unauthenticated") o.allow_unauthenticated = v.empty() || v == "true";
    else if (name == "tls_cert") o.tls_cert = v;
    else if (name == "tls_key") o.tls_key = v;
    else if (name == "tls_client_ca") o.tls_client_ca = v;
    else if (name == "max_upload_bytes") {
      if (!ParseInt(name, v, &o.max_upload_bytes, &err)) return Usage(err);
    } else if (name == "max_message_bytes") {
      if (!ParseInt(name, v, &o.max_message_bytes, &err)) return Usage(err);
    } else if (name == "max_active_jobs_per_tenant") {
      if (!ParseInt(name, v, &o.max_active_jobs_per_tenant, &err)) return Usage(err);
    } else if (name == "adapter_memory_budget_bytes") {
      if (!ParseInt(name, v, &o.adapter_memory_budget_bytes, &err)) return Usage(err);
    } else if (name == "serving_device") {
      o.serving_device = v;
    } else if (name == "cuda_kernels") {
      if (absl::StatusOr<oft::KernelMode> m = oft::ParseKernelMode(v); !m.ok()) {
        return Usage(std::string(m.status().message()));
      }
      o.cuda_kernels = v;
    } else if (name == "served_rotations") {
      if (v != "compact" && v != "fp32") {
        return Usage("--served_rotations must be compact or fp32, got \"" + v + "\"");
      }
      o.served_rotations = v;
    } else if (name == "serving_threads") {
      if (!ParseInt(name, v, &n, &err)) return Usage(err);
      o.serving_threads = static_cast<int>(n);
    } else if (name == "executor_threads") {
      if (!ParseInt(name, v, &n, &err) || n < 1 || n > 1024) {
        return Usage("--executor_threads must be in [1, 1024]");
      }
      o.executor_threads = static_cast<int>(n);
    } else if (name == "health_saturation_seconds") {
      if (!absl::SimpleAtod(v, &o.health_saturation_seconds) || !(o.health_saturation_seconds >= 0)) {
        return Usage("--health_saturation_seconds must be a number >= 0 (0 = never), got '" + v + "'");
      }
    } else if (name == "shutdown_timeout_seconds") {
      if (!absl::SimpleAtod(v, &shutdown_timeout_seconds) || !(shutdown_timeout_seconds > 0)) {
        return Usage("--shutdown_timeout_seconds must be a number > 0, got '" + v + "'");
      }
    } else if (name == "log_format") {
      absl::StatusOr<oft::LogFormat> f = oft::ParseLogFormat(v);
      if (!f.ok()) return Usage(std::string(f.status().message()));
      log_format = *f;
    } else if (name == "log_level") {
      absl::StatusOr<oft::LogLevel> l = oft::ParseLogLevel(v);
      if (!l.ok()) return Usage(std::string(l.status().message()));
      log_level = *l;
    } else if (name == "checkpoint_retention") {
      if (absl::StatusOr<oft::CheckpointRetention> p = oft::ParseCheckpointRetention(v); !p.ok()) {
        return Usage(std::string(p.status().message()));
      }
      o.checkpoint_retention = v;
    } else if (name == "device_memory_bytes") {
      if (!ParseInt(name, v, &o.device_memory_bytes, &err)) return Usage(err);
    } else if (name == "job_isolation") {
      if (v != "thread" && v != "process") return Usage("--job_isolation must be thread or process, got '" + v + "'");
      o.job_isolation = v;
    } else if (name == "worker_binary") {
      o.worker_binary = v;
    } else if (name == "worker_grace_seconds" || name == "worker_heartbeat_seconds") {
      double d = 0;
      if (!absl::SimpleAtod(v, &d) || !(d > 0 && d <= 86400)) return Usage("--" + name + " must be in (0, 86400]");
      (name == "worker_grace_seconds" ? o.worker_grace_seconds : o.worker_heartbeat_seconds) = d;
    } else if (name == "worker_max_restarts") {
      if (!ParseInt(name, v, &n, &err) || n < 0 || n > 100) return Usage("--worker_max_restarts must be in [0, 100]");
      o.worker_max_restarts = static_cast<int>(n);
    } else {
      return Usage("unknown flag --" + name);
    }
  }
  if (!models_given) o.models["default"] = "models/default";

  // Signals are taken by one thread with sigwait; every other thread blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  oft::InitLogging(log_format, log_level);
  if (absl::Status isa = oft::cpu::CheckCpuIsaEnvironment(); !isa.ok()) {
    oft::LogEvent(oft::LogLevel::kError, absl::StrCat("cannot start: ", isa.message()));
    return 2;
  }
  oft::ConfigureCpuRuntime(o.train_threads);
  absl::StatusOr<std::unique_ptr<oft::OftServer>> server = oft::OftServer::Start(o);
  if (!server.ok()) {
    oft::LogEvent(oft::LogLevel::kError, absl::StrCat("cannot start: ", server.status().ToString()));
    return 1;
  }
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    oft::LogEvent(oft::LogLevel::kInfo, absl::StrCat("signal ", sig), {{"signal", sig}});
    // The bound on a graceful stop: nothing (a stuck request, a slow step) may keep the
    // process alive past it. Detached: when Shutdown() finishes first, main() returns.
    std::thread([shutdown_timeout_seconds] {
      std::this_thread::sleep_for(std::chrono::duration<double>(shutdown_timeout_seconds));
      oft::LogEvent(oft::LogLevel::kError,
                    absl::StrFormat("shutdown did not finish within %gs; exiting now (running "
                                    "jobs resume from their last checkpoint at the next start)",
                                    shutdown_timeout_seconds));
      std::_Exit(3);
    }).detach();
    (*server)->Shutdown();
  });
  (*server)->Wait();
  waiter.detach();  // Shutdown came from elsewhere; the process exits now
  server->reset();
  return 0;
}
