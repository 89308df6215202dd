#include "server/train/worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/train/training_job_json.h"

namespace oft {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// One rank's worker process, while the group runs and after it ended.
struct RankProc {
  pid_t pid = -1;
  int fd = -1;  // read end of its stdout; -1 once it closed
  std::string buffer;
  absl::Time last_line;
  std::optional<Json> final_line;  // "result" / "failed" / "cancelled", when it wrote one
  int wait_status = 0;
  bool hung = false;               // killed for missing heartbeats
};

// How a group of ranks (one process for a 1-device job) ended.
struct GroupEnd {
  std::vector<RankProc> ranks;
  int broken = -1;     // the first rank that died (no final line) or hung before any was
                       // told to stop; -1: none
  int first_fail = -1; // the first rank that ended with "failed" or "cancelled"; -1: none
};

std::string DescribeExit(const RankProc& end) {
  if (end.hung) return "stopped sending heartbeats and was killed";
  const int st = end.wait_status;
  if (WIFSIGNALED(st)) {
    const int sig = WTERMSIG(st);
    return absl::StrCat("was killed by signal ", sig, " (", strsignal(sig), ")",
                        sig == SIGKILL ? "; an out-of-memory kill looks like this" : "");
  }
  if (WIFEXITED(st)) return absl::StrCat("exited with status ", WEXITSTATUS(st), " without a result");
  return "ended abnormally";
}

// The last `max_bytes` of the worker's stderr log, from a line start.
std::string StderrTail(const std::string& path, size_t max_bytes = 1500) {
  absl::StatusOr<std::string> text = ReadFile(path, 64 << 20);
  if (!text.ok() || text->empty()) return "";
  std::string tail = text->size() > max_bytes ? text->substr(text->size() - max_bytes) : *text;
  if (text->size() > max_bytes) {
    const size_t nl = tail.find('\n');
    if (nl != std::string::npos) tail = tail.substr(nl + 1);
  }
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  return tail;
}

// fork + exec of the worker: its own process group, stdout into `out_fd`, stderr appended to
// `stderr_path`, SIGTERM when this thread's process dies. `env` empty: the server's
// environment. Only async-signal-safe calls after fork (the server is multithreaded).
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, const std::vector<std::string>& env,
                            int out_fd, const std::string& stderr_path) {
  std::vector<char*> argv, envp;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::ResourceExhaustedError(absl::StrCat("fork of the training worker: ", strerror(errno)));
  if (pid == 0) {
    // The server's threads block the signals its signal thread waits for; the mask survives
    // exec, and a worker with SIGTERM blocked would ignore cancels and its parent's death.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(126);  // the server died between fork and prctl
    const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (dup2(out_fd, 1) < 0 || err < 0 || dup2(err, 2) < 0) _exit(126);
    syscall(SYS_close_range, 3, ~0U, 0);  // no server socket or file leaks into the worker
    if (env.empty()) {
      execv(argv[0], argv.data());
    } else {
      execve(argv[0], argv.data(), envp.data());
    }
    _exit(127);
  }
  return pid;
}

// A TCP port on the loopback interface that was free a moment ago (for rank 0's TCPStore).
absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ResourceExhaustedError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int err = errno;
  close(fd);
  if (!ok) return absl::UnavailableError(absl::StrCat("no free loopback port: ", strerror(err)));
  return static_cast<int>(ntohs(addr.sin_port));
}

// The server's environment without torchrun's variables, plus this rank's.
std::vector<std::string> RankEnvironment(int rank, int world, int port, int attempt) {
  static const char* const kLaunch[] = {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=",
                                        "MASTER_ADDR=", "MASTER_PORT=", "TORCHELASTIC_USE_AGENT_STORE=",
                                        "TORCHELASTIC_RESTART_COUNT="};
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string var = *e;
    bool launch = false;
    for (const char* k : kLaunch) launch = launch || var.rfind(k, 0) == 0;
    if (!launch) env.push_back(var);
  }
  env.push_back(absl::StrCat("RANK=", rank));
  env.push_back(absl::StrCat("WORLD_SIZE=", world));
  env.push_back(absl::StrCat("LOCAL_RANK=", rank));
  env.push_back(absl::StrCat("LOCAL_WORLD_SIZE=", world));
  env.push_back("MASTER_ADDR=127.0.0.1");
  env.push_back(absl::StrCat("MASTER_PORT=", port));
  env.push_back(absl::StrCat("TORCHELASTIC_RESTART_COUNT=", attempt));
  return env;
}

// Handles the lines a rank wrote; rank 0's training events go to `on_event`.
void TakeLines(RankProc& r, bool forward, const EventSink& on_event) {
  size_t nl;
  while ((nl = r.buffer.find('\n')) != std::string::npos) {
    const std::string line = r.buffer.substr(0, nl);
    r.buffer.erase(0, nl + 1);
    const Json j = Json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;  // not ours: ignore
    const std::string kind = j.value("kind", "");
    if (kind == "heartbeat") continue;
    if (kind == "result" || kind == "failed" || kind == "cancelled") {
      r.final_line = j;
      continue;
    }
    if (!forward) continue;
    absl::StatusOr<TrainEvent> e = TrainEventFromJson(line);
    if (e.ok() && on_event) on_event(*e);
  }
}

// Runs the ranks (argv and environment per rank) to their end, forwarding rank 0's events.
// A rank that dies or hangs brings the others down at once (SIGKILL); a rank that fails or
// is cancelled makes the others stop (SIGTERM, then SIGKILL after the grace period); `stop`
// makes every rank stop the same way.
absl::StatusOr<GroupEnd> RunGroup(const std::vector<std::vector<std::string>>& args,
                                  const std::vector<std::vector<std::string>>& envs,
                                  const std::string& stderr_path, const WorkerOptions& o,
                                  const EventSink& on_event, const std::atomic<bool>* stop) {
  GroupEnd end;
  end.ranks.resize(args.size());
  auto signal_all = [&](int sig) {
    for (RankProc& r : end.ranks) {
      if (r.pid > 0) kill(sig == SIGKILL ? -r.pid : r.pid, sig);
    }
  };
  auto reap = [&] {
    for (RankProc& r : end.ranks) {
      if (r.fd >= 0) close(r.fd);
      r.fd = -1;
      if (r.pid <= 0) continue;
      while (waitpid(r.pid, &r.wait_status, 0) < 0 && errno == EINTR) {
      }
      kill(-r.pid, SIGKILL);  // anything the worker left in its group
    }
  };
  for (size_t i = 0; i < args.size(); ++i) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      const absl::Status failed = absl::ResourceExhaustedError(absl::StrCat("pipe: ", strerror(errno)));
      signal_all(SIGKILL);
      reap();
      return failed;
    }
    absl::StatusOr<pid_t> pid = Spawn(args[i], envs[i], fds[1], stderr_path);
    close(fds[1]);
    if (!pid.ok()) {
      close(fds[0]);
      signal_all(SIGKILL);
      reap();
      return pid.status();
    }
    end.ranks[i].pid = *pid;
    end.ranks[i].fd = fds[0];
    end.ranks[i].last_line = absl::Now();
  }
  std::optional<absl::Time> term_sent;
  bool killed = false;
  for (;;) {
    std::vector<pollfd> polled;
    std::vector<size_t> which;
    for (size_t i = 0; i < end.ranks.size(); ++i) {
      if (end.ranks[i].fd < 0) continue;
      polled.push_back(pollfd{end.ranks[i].fd, POLLIN, 0});
      which.push_back(i);
    }
    if (polled.empty()) break;
    if (poll(polled.data(), polled.size(), 100) > 0) {
      for (size_t k = 0; k < polled.size(); ++k) {
        if (polled[k].revents == 0) continue;
        RankProc& r = end.ranks[which[k]];
        char chunk[4096];
        const ssize_t n = read(r.fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) continue;
        if (n > 0) {
          r.buffer.append(chunk, static_cast<size_t>(n));
          r.last_line = absl::Now();
          TakeLines(r, which[k] == 0, on_event);
          continue;
        }
        close(r.fd);  // the worker closed its stdout: it is ending
        r.fd = -1;
        const bool told_to_stop = term_sent.has_value() || killed;
        if (!r.final_line) {
          if (!told_to_stop && end.broken < 0) end.broken = static_cast<int>(which[k]);
        } else if (r.final_line->value("kind", "") != "result" && end.first_fail < 0) {
          end.first_fail = static_cast<int>(which[k]);
        }
      }
    }
    const absl::Time now = absl::Now();
    if (!killed && end.broken >= 0) {  // a rank died: the group cannot go on
      signal_all(SIGKILL);
      killed = true;
    }
    if (!term_sent && ((stop != nullptr && stop->load()) || end.first_fail >= 0)) {
      signal_all(SIGTERM);  // every rank checkpoints (rank 0 writes) and exits
      term_sent = now;
    }
    if (!killed && term_sent && now - *term_sent > o.grace) {
      signal_all(SIGKILL);
      killed = true;
    }
    for (size_t i = 0; i < end.ranks.size() && !killed; ++i) {
      RankProc& r = end.ranks[i];
      if (r.fd >= 0 && now - r.last_line > o.heartbeat_timeout) {
        r.hung = true;
        if (end.broken < 0 && !term_sent) end.broken = static_cast<int>(i);
        signal_all(SIGKILL);
        killed = true;
      }
    }
  }
  reap();
  return end;
}

}  // namespace

std::string DefaultWorkerBinary(const std::string& self) {
  const fs::path dir = fs::path(self).parent_path();
  for (const fs::path& p : {dir / "oft_train_worker", dir / ".." / "tools" / "oft_train_worker"}) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return fs::weakly_canonical(p, ec).string();
  }
  return "";
}

absl::StatusOr<TrainingJobResult> RunTrainingJobInWorker(const TrainingJob& job, const WorkerOptions& o,
                                                         const AdapterStore& store, const EventSink& on_event,
                                                         const std::atomic<bool>* stop,
                                                         const std::vector<std::string>& rank_devices) {
  if (o.binary.empty()) {
    return WithFailureReason(absl::FailedPreconditionError("no training worker binary (--worker_binary)"), "INTERNAL");
  }
  std::error_code ec;
  fs::create_directories(job.work_dir, ec);
  if (ec) return WithFailureReason(absl::InternalError(absl::StrCat("create ", job.work_dir, ": ", ec.message())), "INTERNAL");
  const std::string job_file = (fs::path(job.work_dir) / "worker_job.json").string();
  const std::string stderr_path = (fs::path(job.work_dir) / "worker.stderr").string();
  OFT_RETURN_IF_ERROR(WithFailureReason(WriteFileAtomic(job_file, TrainingJobToJson(job)), "INTERNAL"));
  const int world = std::max<int>(1, static_cast<int>(rank_devices.size()));
  for (int attempt = 0;; ++attempt) {
    std::vector<std::vector<std::string>> args, envs;
    if (world == 1) {
      args.push_back({o.binary, "--job=" + job_file, "--data_dir=" + o.data_dir});
      envs.emplace_back();  // the server's environment
    } else {
      absl::StatusOr<int> port = FreeLoopbackPort();
      if (!port.ok()) return WithFailureReason(port.status(), "INTERNAL");
      const int64_t timeout_s = std::max<int64_t>(1, absl::ToInt64Seconds(o.heartbeat_timeout));
      for (int r = 0; r < world; ++r) {
        args.push_back({o.binary, "--job=" + job_file, "--data_dir=" + o.data_dir,
                        "--device=" + rank_devices[r], absl::StrCat("--dist_timeout_seconds=", timeout_s)});
        envs.push_back(RankEnvironment(r, world, *port, attempt));
      }
    }
    absl::StatusOr<GroupEnd> end = RunGroup(args, envs, stderr_path, o, on_event, stop);
    if (!end.ok()) return WithFailureReason(end.status(), "INTERNAL");
    const std::optional<Json>& rank0 = end->ranks[0].final_line;
    std::optional<Json> final_line;
    if (end->broken < 0) {
      if (rank0 && rank0->value("kind", "") == "result") {
        final_line = rank0;
      } else if (end->first_fail >= 0) {
        final_line = end->ranks[end->first_fail].final_line;
      } else {
        final_line = rank0;
      }
    }
    if (final_line) {
      const Json& j = *final_line;
      const std::string kind = j.value("kind", "");
      if (kind == "result") {
        TrainingJobResult result;
        OFT_ASSIGN_OR_RETURN(result.manifest,
                             store.Get(job.tenant, j.value("adapter", ""), j.value("version", int64_t{0})));
        result.metrics.steps_completed = j.value("steps", int64_t{0});
        result.metrics.final_loss = j.value("final_loss", 0.0);
        return result;
      }
      if (kind == "cancelled") return absl::CancelledError("training stopped (checkpoint saved)");
      const int code = j.value("code", static_cast<int>(absl::StatusCode::kInternal));
      return WithFailureReason(absl::Status(static_cast<absl::StatusCode>(code), j.value("message", "")),
                               j.value("reason", "INTERNAL"), j.value("field", ""));
    }
    const int dead = std::max(0, end->broken);
    const std::string what =
        world == 1 ? absl::StrCat("the training worker ", DescribeExit(end->ranks[0]))
                   : absl::StrCat("the training worker of rank ", dead, " of ", world, " ",
                                  DescribeExit(end->ranks[dead]), " (the other ranks were stopped)");
    if (stop != nullptr && stop->load()) {
      return absl::CancelledError(absl::StrCat(what, " while stopping"));
    }
    if (attempt < o.max_restarts) {
      if (on_event) {
        TrainEvent w;
        w.kind = TrainEvent::Kind::kWarning;
        w.message = absl::StrCat(what, "; restarting it from the last checkpoint (restart ", attempt + 1, " of ",
                                 o.max_restarts, ")");
        on_event(w);
      }
      continue;
    }
    const std::string tail = StderrTail(stderr_path);
    return WithFailureReason(
        absl::InternalError(absl::StrCat(what, o.max_restarts > 0 ? absl::StrCat(" (after ", o.max_restarts, " restarts)") : "",
                                         tail.empty() ? "" : "; last stderr lines: ", tail)),
        "INTERNAL");
  }
}

}  // namespace oft
