#include "tests/integration/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"

extern char** environ;

namespace oft::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Exit status of a reaped child as one number: the exit code, or 128 + signal.
int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Waits for `pid` up to `timeout`; returns the exit code or -2 if it is still running.
int WaitPid(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return ExitCodeOf(status);
    if (r < 0 && errno != EINTR) return -1;
    if (absl::Now() >= deadline) return -2;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// fork + exec with stdout/stderr to the given files (appended), stdin /dev/null and `env`
// added. The child dies with the test process.
pid_t Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            const std::string& out_path, const std::string& err_path) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string s = *e;
    const std::string key = s.substr(0, s.find('='));
    if (env.count(key) == 0) env_strings.push_back(s);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> c_argv, c_env;
  for (const std::string& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  for (const std::string& e : env_strings) c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid != 0) return pid;
  // Child: only async-signal-safe calls from here.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(127);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  const int in = open("/dev/null", O_RDONLY);
  const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (in < 0 || out < 0 || err < 0) _exit(127);
  dup2(in, 0);
  dup2(out, 1);
  dup2(err, 2);
  execve(c_argv[0], c_argv.data(), c_env.data());
  _exit(127);
}

}  // namespace

std::string SourceDir() { return OFT_SOURCE_DIR; }
std::string OftctlBinary() { return OFTCTL_BINARY; }

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string templ =
      absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/oft-it-XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp(" << templ << "): " << std::strerror(errno);
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout, absl::Duration interval) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (done()) return true;
    if (absl::Now() >= deadline) return done();
    absl::SleepFor(interval);
  }
}

ServerProcess::ServerProcess(ServerProcessOptions options) : options_(std::move(options)) {
  const std::string parent = std::filesystem::path(options_.data_dir).parent_path().string();
  const std::string base = std::filesystem::path(options_.data_dir).filename().string();
  port_file_ = absl::StrCat(parent, "/", base, ".port");
  metrics_port_file_ = absl::StrCat(parent, "/", base, ".metrics_port");
  log_path_ = absl::StrCat(parent, "/", base, ".log");
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Kill();
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "---- tail of %s ----\n%s\n---- end of server log ----\n",
                 log_path_.c_str(), LogTail(6000).c_str());
  }
}

absl::Status ServerProcess::Start() { return Start(0); }

absl::Status ServerProcess::Start(int bind_retries) {
  if (pid_ > 0) return absl::FailedPreconditionError("server already running");
  std::error_code ec;
  std::filesystem::remove(port_file_, ec);
  std::filesystem::remove(metrics_port_file_, ec);
  std::vector<std::string> argv = {OFT_SERVER_BINARY};
  auto given = [&](const std::string& flag) {
    for (const std::string& f : options_.extra_flags) {
      if (f.rfind("--" + flag + "=", 0) == 0 || f == "--" + flag) return true;
    }
    return false;
  };
  argv.push_back("--data_dir=" + options_.data_dir);
  // A restart listens on the port of the previous run, so clients keep their address.
  if (!given("listen")) argv.push_back(absl::StrCat("--listen=127.0.0.1:", port_));
  argv.push_back("--port_file=" + port_file_);
  if (!given("metrics_listen")) argv.push_back("--metrics_listen=127.0.0.1:0");
  argv.push_back("--metrics_port_file=" + metrics_port_file_);
  if (!given("model")) argv.push_back("--model=default=" + SourceDir() + "/models/default");
  for (const std::string& k : options_.api_keys) argv.push_back("--api_key=" + k);
  for (const std::string& f : options_.extra_flags) argv.push_back(f);
  {
    std::ofstream log(log_path_, std::ios::app);
    log << "==== start:";
    for (const std::string& a : argv) log << " " << a;
    log << "\n";
  }
  pid_ = Spawn(argv, {{"OMP_NUM_THREADS", "1"}, {"MKL_NUM_THREADS", "1"}}, log_path_, log_path_);
  if (pid_ < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));

  const absl::Time deadline = absl::Now() + options_.start_timeout;
  for (;;) {
    int port = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadAll(port_file_)), &port) && port > 0) {
      port_ = port;
      int mport = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadAll(metrics_port_file_)), &mport)) {
        metrics_port_ = mport;
      }
      return absl::OkStatus();
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      // The old port may linger briefly after a crash: try again.
      if (port_ != 0 && ++bind_retries <= 20 &&
          LogTail(300).find("cannot listen") != std::string::npos) {
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        return Start(bind_retries);
      }
      return absl::InternalError(absl::StrCat("oft_server exited with ", ExitCodeOf(status),
                                              " before serving; log:\n", LogTail()));
    }
    if (absl::Now() >= deadline) {
      Kill();
      return absl::DeadlineExceededError(absl::StrCat("oft_server wrote no port file within ",
                                                      absl::FormatDuration(options_.start_timeout),
                                                      "; log:\n", LogTail()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::StatusOr<int> ServerProcess::Terminate(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("server not running");
  kill(pid_, SIGTERM);
  const int code = WaitPid(pid_, timeout);
  if (code == -2) {
    Kill();
    return absl::DeadlineExceededError(absl::StrCat("oft_server did not exit within ",
                                                    absl::FormatDuration(timeout), " of SIGTERM"));
  }
  pid_ = -1;
  return code;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  WaitPid(pid_, absl::Seconds(30));
  pid_ = -1;
}

bool ServerProcess::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::string ServerProcess::LogTail(size_t bytes) const {
  const std::string all = ReadAll(log_path_);
  return all.size() <= bytes ? all : all.substr(all.size() - bytes);
}

std::unique_ptr<Client> ServerProcess::NewClient(const std::string& api_key,
                                                 ClientOptions options) const {
  options.server = address();
  options.api_key = api_key;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env, absl::Duration timeout) {
  CommandResult result;
  TempDir dir;
  const std::string out = dir.Sub("out"), err = dir.Sub("err");
  const pid_t pid = Spawn(argv, env, out, err);
  if (pid < 0) return result;
  result.exit_code = WaitPid(pid, timeout);
  if (result.exit_code == -2) {
    kill(pid, SIGKILL);
    WaitPid(pid, absl::Seconds(10));
    result.exit_code = 137;
  }
  result.out = ReadAll(out);
  result.err = ReadAll(err);
  return result;
}

}  // namespace oft::testing
