#include "bench/spawned_server.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

extern char** environ;

namespace oft::bench {
namespace {

int ReadPort(const std::string& path) {
  std::ifstream in(path);
  int port = 0;
  return (in >> port && port > 0) ? port : 0;
}

}  // namespace

SpawnedServer::SpawnedServer(const SpawnOptions& o, std::string* error) {
  std::string tmpl = "/tmp/oft-" + o.tag + "-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    *error = "mkdtemp failed";
    return;
  }
  dir_ = tmpl;
  const std::string port_file = dir_ + "/port", http_port_file = dir_ + "/http_port";
  std::vector<std::string> args = {o.binary,
                                   "--listen=127.0.0.1:0",
                                   "--port_file=" + port_file,
                                   "--metrics_listen=",
                                   "--data_dir=" + dir_ + "/data",
                                   "--model=default=" + std::filesystem::absolute(o.model_dir).string(),
                                   "--api_key=bench:" + o.api_key,
                                   "--devices=cpu"};
  if (o.http) {
    args.push_back("--http_listen=127.0.0.1:0");
    args.push_back("--http_port_file=" + http_port_file);
  }
  args.insert(args.end(), o.extra_args.begin(), o.extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const std::string log = log_path();
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  const int rc = posix_spawn(&pid_, o.binary.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    pid_ = -1;
    *error = "cannot start " + o.binary;
    return;
  }
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < give_up) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      *error = "oft_server exited before serving; log: " + log;
      return;
    }
    const int port = ReadPort(port_file);
    const int http = o.http ? ReadPort(http_port_file) : 0;
    if (port > 0 && (!o.http || http > 0)) {
      grpc_address_ = "127.0.0.1:" + std::to_string(port);
      http_port_ = http;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  *error = "oft_server did not write its port files in 120 s; log: " + log;
}

SpawnedServer::~SpawnedServer() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

}  // namespace oft::bench
