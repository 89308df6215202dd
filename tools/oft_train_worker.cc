// oft_train_worker: one training job in its own process, started by oft_server with
// --job_isolation=process (server/train/worker_process.h has the protocol).
//
//   oft_train_worker --job=worker_job.json --data_dir=DIR [--cuda_kernels=auto|on|off]
//                    [--device=D] [--dist_timeout_seconds=S]
//
// --device overrides the job's device. One rank of a multi-device job: the server starts one
// worker per device with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; server/dist/launch_env.h); each joins the
// job's c10d group (--dist_timeout_seconds bounds every wait for a peer, default 300) and
// trains data-parallel. Only rank 0 publishes; the other ranks end with
// {"kind":"result","rank":R} and no adapter.
//
// Runs RunTrainingJob on the job (training_job_json.h) and publishes into the adapter store
// under DIR. stdout: one JSON line per training event, {"kind":"heartbeat"} every second, then
// one final line: result / failed / cancelled. SIGTERM or SIGINT: checkpoint and exit 3.
// Exit status: 0 published, 1 failed, 2 usage, 3 cancelled.
#include <signal.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "c10/core/Device.h"
#include "nlohmann/json.hpp"
#include "server/artifacts/store.h"
#include "server/common/file_util.h"
#include "server/common/flags.h"
#include "server/dist/c10d_collective.h"
#include "server/dist/launch_env.h"
#include "server/oft/self_check.h"
#include "server/train/job_runner.h"
#include "server/train/training_job_json.h"

namespace {

using Json = nlohmann::json;
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

absl::Mutex g_out_mu;
void Emit(const std::string& line) {
  absl::MutexLock lock(&g_out_mu);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

int Fail(const absl::Status& st) {
  const oft::TrainingFailure f = oft::ClassifyFailure(st);
  Emit(Json{{"kind", "failed"}, {"code", static_cast<int>(st.code())}, {"message", std::string(st.message())},
            {"reason", f.reason}, {"field", f.field}}
           .dump(-1, ' ', false, Json::error_handler_t::replace));
  return 1;
}

// The job's c10d group when the launch environment names one (null when it names none).
absl::StatusOr<std::unique_ptr<oft::Collective>> JoinGroup(const std::string& device,
                                                           const std::string& timeout_flag) {
  absl::StatusOr<std::optional<oft::LaunchEnv>> launch =
      oft::LaunchEnvFromEnvironment([](const char* n) { return std::getenv(n); });
  if (!launch.ok()) return launch.status();
  if (!launch->has_value()) return std::unique_ptr<oft::Collective>();
  double seconds = 0;
  if (!absl::SimpleAtod(timeout_flag, &seconds) || !(seconds > 0) || seconds > 86400) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dist_timeout_seconds must be in (0, 86400], got \"", timeout_flag, "\""));
  }
  oft::C10dOptions dist;
  dist.timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  if (device.rfind("cuda", 0) == 0) dist.cuda_device = c10::Device(device).index();
  return oft::ConnectC10d(**launch, dist);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: oft_train_worker --job=FILE --data_dir=DIR [--cuda_kernels=auto|on|off]\n"
      "Runs one training job for oft_server --job_isolation=process; JSON lines on stdout.\n";
  if (oft::AnswerHelp(argc, argv, usage)) return 0;
  std::string job_file, data_dir, kernels = "auto", device, dist_timeout = "300";
  for (int i = 1; i < argc; ++i) {
    if (oft::ParseFlag(argv[i], "--job", &job_file) || oft::ParseFlag(argv[i], "--data_dir", &data_dir) ||
        oft::ParseFlag(argv[i], "--cuda_kernels", &kernels) || oft::ParseFlag(argv[i], "--device", &device) ||
        oft::ParseFlag(argv[i], "--dist_timeout_seconds", &dist_timeout)) {
      continue;
    }
    std::fprintf(stderr, "%sunknown flag: %s\n", usage, argv[i]);
    return 2;
  }
  if (job_file.empty() || data_dir.empty()) {
    std::fprintf(stderr, "%s--job and --data_dir are required\n", usage);
    return 2;
  }
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  sigset_t stop_signals;  // unblocked whatever the parent's mask was
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_UNBLOCK, &stop_signals, nullptr);

  absl::Notification done;
  std::thread heartbeat([&done] {
    while (!done.WaitForNotificationWithTimeout(absl::Seconds(1))) Emit(R"({"kind":"heartbeat"})");
  });
  auto finish = [&](int rc) {
    done.Notify();
    heartbeat.join();
    return rc;
  };

  absl::StatusOr<std::string> text = oft::ReadFile(job_file, 16 << 20);
  if (!text.ok()) return finish(Fail(oft::WithFailureReason(text.status(), "INTERNAL")));
  absl::StatusOr<oft::TrainingJob> job = oft::TrainingJobFromJson(*text);
  if (!job.ok()) return finish(Fail(oft::WithFailureReason(job.status(), "INTERNAL")));
  if (!device.empty()) job->device = device;
  absl::StatusOr<std::unique_ptr<oft::AdapterStore>> store = oft::AdapterStore::Open(data_dir);
  if (!store.ok()) return finish(Fail(oft::WithFailureReason(store.status(), "PUBLISH_FAILED")));

  // The same kernel self-check as the server, for this process's devices.
  absl::StatusOr<oft::KernelMode> mode = oft::ParseKernelMode(kernels);
  if (!mode.ok()) return finish(Fail(oft::WithFailureReason(mode.status(), "INTERNAL")));
  oft::KernelSelfCheckOptions check;
  check.mode = *mode;
  check.devices = {job->device, "cpu"};
  check.log = [](const std::string& line) { std::fprintf(stderr, "kernel self-check: %s\n", line.c_str()); };
  absl::StatusOr<oft::KernelSelfCheckReport> report = oft::RunKernelSelfCheck(check);
  if (!report.ok()) return finish(Fail(oft::WithFailureReason(report.status(), "INTERNAL")));

  // One rank of a multi-device job: join the group before loading anything.
  absl::StatusOr<std::unique_ptr<oft::Collective>> group = JoinGroup(job->device, dist_timeout);
  if (!group.ok()) return finish(Fail(oft::WithFailureReason(group.status(), "INTERNAL")));
  const int rank = *group != nullptr ? (*group)->rank() : 0;

  const oft::EventSink sink = [](const oft::TrainEvent& e) { Emit(oft::TrainEventToJson(e)); };
  absl::StatusOr<oft::TrainingJobResult> result =
      oft::RunTrainingJob(*job, store->get(), sink, &g_stop, group->get());
  if (result.ok() && rank != 0) {
    Emit(Json{{"kind", "result"}, {"rank", rank}, {"steps", result->metrics.steps_completed}}.dump());
    return finish(0);
  }
  if (result.ok()) {
    Emit(Json{{"kind", "result"}, {"adapter", result->manifest.name}, {"version", result->manifest.version},
              {"steps", result->metrics.steps_completed}, {"final_loss", result->metrics.final_loss}}
             .dump());
    return finish(0);
  }
  if (absl::IsCancelled(result.status())) {
    Emit(R"({"kind":"cancelled"})");
    return finish(3);
  }
  return finish(Fail(result.status()));
}
