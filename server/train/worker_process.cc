#include "server/train/worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

// How one worker process ended.
struct WorkerEnd {
  std::optional<Json> final_line;  // "result" / "failed" / "cancelled", when it wrote one
  int wait_status = 0;
  bool hung = false;               // killed for missing heartbeats
};

std::string DescribeExit(const WorkerEnd& end) {
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
// `stderr_path`, SIGTERM when this thread's process dies. Only async-signal-safe calls after
// fork (the server is multithreaded).
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, int out_fd, const std::string& stderr_path) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
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
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Runs one worker to its end, forwarding its events to `on_event`.
absl::StatusOr<WorkerEnd> RunOnce(const std::vector<std::string>& args, const std::string& stderr_path,
                                  const WorkerOptions& o, const EventSink& on_event,
                                  const std::atomic<bool>* stop) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::ResourceExhaustedError(absl::StrCat("pipe: ", strerror(errno)));
  absl::StatusOr<pid_t> pid = Spawn(args, fds[1], stderr_path);
  close(fds[1]);
  if (!pid.ok()) {
    close(fds[0]);
    return pid.status();
  }
  WorkerEnd end;
  std::string buffer;
  absl::Time last_line = absl::Now();
  std::optional<absl::Time> term_sent;
  bool killed = false;
  for (bool open = true; open;) {
    pollfd p{fds[0], POLLIN, 0};
    const int ready = poll(&p, 1, 100);
    if (ready > 0) {
      char chunk[4096];
      const ssize_t n = read(fds[0], chunk, sizeof(chunk));
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        open = false;  // the worker closed its stdout: it is ending
      } else {
        buffer.append(chunk, static_cast<size_t>(n));
        last_line = absl::Now();
        size_t nl;
        while ((nl = buffer.find('\n')) != std::string::npos) {
          const std::string line = buffer.substr(0, nl);
          buffer.erase(0, nl + 1);
          const Json j = Json::parse(line, nullptr, false);
          if (j.is_discarded() || !j.is_object()) continue;  // not ours: ignore
          const std::string kind = j.value("kind", "");
          if (kind == "heartbeat") continue;
          if (kind == "result" || kind == "failed" || kind == "cancelled") {
            end.final_line = j;
            continue;
          }
          absl::StatusOr<TrainEvent> e = TrainEventFromJson(line);
          if (e.ok() && on_event) on_event(*e);
        }
      }
    }
    const absl::Time now = absl::Now();
    if (stop != nullptr && stop->load() && !term_sent) {
      kill(*pid, SIGTERM);  // the worker checkpoints and exits
      term_sent = now;
    }
    if (!killed && term_sent && now - *term_sent > o.grace) {
      kill(-*pid, SIGKILL);
      killed = true;
    }
    if (!killed && now - last_line > o.heartbeat_timeout) {
      kill(-*pid, SIGKILL);
      killed = true;
      end.hung = true;
    }
  }
  close(fds[0]);
  while (waitpid(*pid, &end.wait_status, 0) < 0 && errno == EINTR) {
  }
  kill(-*pid, SIGKILL);  // anything the worker left in its group
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
                                                         const std::atomic<bool>* stop) {
  if (o.binary.empty()) {
    return WithFailureReason(absl::FailedPreconditionError("no training worker binary (--worker_binary)"), "INTERNAL");
  }
  std::error_code ec;
  fs::create_directories(job.work_dir, ec);
  if (ec) return WithFailureReason(absl::InternalError(absl::StrCat("create ", job.work_dir, ": ", ec.message())), "INTERNAL");
  const std::string job_file = (fs::path(job.work_dir) / "worker_job.json").string();
  const std::string stderr_path = (fs::path(job.work_dir) / "worker.stderr").string();
  OFT_RETURN_IF_ERROR(WithFailureReason(WriteFileAtomic(job_file, TrainingJobToJson(job)), "INTERNAL"));
  const std::vector<std::string> args = {o.binary, "--job=" + job_file, "--data_dir=" + o.data_dir};
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<WorkerEnd> end = RunOnce(args, stderr_path, o, on_event, stop);
    if (!end.ok()) return WithFailureReason(end.status(), "INTERNAL");
    if (end->final_line) {
      const Json& j = *end->final_line;
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
    // Died without a final line: a crash, a signal, a hang.
    std::string what = absl::StrCat("the training worker ", DescribeExit(*end));
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
