// Test helpers for integration tests that run the real oft_server binary on 127.0.0.1.
//
// ServerProcess forks and execs oft_server (path from the compile definition
// OFT_SERVER_BINARY) with --listen=127.0.0.1:0 and a --port_file in its data_dir's parent,
// waits for the port file, and can stop it with SIGTERM (graceful) or SIGKILL (crash) and
// start it again on the same data_dir. The server's stderr is appended to a log file whose
// tail is printed when the current test has failed. The child gets PR_SET_PDEATHSIG, so a
// crashed test never leaves a server behind.
//
// Thread-compatible: one thread drives a ServerProcess; clients may be used from any thread.
#ifndef OFT_TESTS_INTEGRATION_SERVER_PROCESS_H_
#define OFT_TESTS_INTEGRATION_SERVER_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/oft_client.h"

namespace oft::testing {

// The repository root (OFT_SOURCE_DIR) and built binaries (compile definitions).
std::string SourceDir();
std::string OftctlBinary();

// A fresh directory under $TMPDIR (or /tmp), removed recursively on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct ServerProcessOptions {
  // --data_dir; created by the server. Required.
  std::string data_dir;
  // --api_key=TENANT:KEY flags.
  std::vector<std::string> api_keys = {};
  // More flags, e.g. "--max_upload_bytes=4096". --model, --listen, --port_file,
  // --metrics_listen and --metrics_port_file are set by ServerProcess unless given here.
  std::vector<std::string> extra_flags = {};
  // How long Start() waits for the port file.
  absl::Duration start_timeout = absl::Seconds(60);
};

class ServerProcess {
 public:
  explicit ServerProcess(ServerProcessOptions options);
  // Kills (SIGKILL) a server still running; prints the log tail if the test failed.
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts the server (again, after Terminate/Kill) and waits until it serves. A restart
  // listens on the same port as the previous run (retrying while the port is still taken).
  // Errors: FAILED_PRECONDITION (already running), INTERNAL (the process exited before
  // serving; the message holds its log tail), DEADLINE_EXCEEDED (no port file in time).
  absl::Status Start();
  // SIGTERM, then waits up to `timeout` for the exit. Returns the exit code (128 + signal
  // when killed by one). DEADLINE_EXCEEDED if it did not exit in time (it then gets SIGKILL).
  absl::StatusOr<int> Terminate(absl::Duration timeout = absl::Seconds(60));
  // SIGKILL and reap: a crash.
  void Kill();
  // Whether the process has not exited (reaps it if it has).
  bool Running();

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  // "127.0.0.1:<port>".
  std::string address() const;
  const std::string& data_dir() const { return options_.data_dir; }
  const std::string& log_path() const { return log_path_; }
  // The last `bytes` of the server's stderr log.
  std::string LogTail(size_t bytes = 4000) const;

  // A client for this server (insecure channel) with `api_key` ("" = none).
  std::unique_ptr<Client> NewClient(const std::string& api_key,
                                    ClientOptions options = ClientOptions()) const;

 private:
  absl::Status Start(int bind_retries);

  ServerProcessOptions options_;
  std::string port_file_, metrics_port_file_, log_path_;
  pid_t pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
};

// The result of RunCommand.
struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed; -1 = could not run
  std::string out;     // stdout
  std::string err;     // stderr
};
// Runs `argv` (argv[0] a path) with `env` added to the environment, stdin from /dev/null,
// and waits at most `timeout` (then SIGKILL, exit_code 137).
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env = {},
                         absl::Duration timeout = absl::Seconds(60));

// Polls `done` every `interval` until it returns true or `timeout` passes; returns its last
// value.
bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout,
               absl::Duration interval = absl::Milliseconds(25));

}  // namespace oft::testing

#endif  // OFT_TESTS_INTEGRATION_SERVER_PROCESS_H_
