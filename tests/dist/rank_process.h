// Runs ranks of a distributed test as real processes: posix_spawn of a binary with torchrun's
// variables added to this process's environment, stdout captured in a file, and a wait with a
// deadline (a rank still running then is SIGKILLed and reported as timed out).
#ifndef OFT_TESTS_DIST_RANK_PROCESS_H_
#define OFT_TESTS_DIST_RANK_PROCESS_H_

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace oft::testing {

// A TCP port that was free a moment ago (bound to port 0, then closed).
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// torchrun's variables for rank `rank` of `world` ranks on this machine.
inline std::map<std::string, std::string> RankEnv(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)},         {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(rank)},   {"LOCAL_WORLD_SIZE", std::to_string(world)},
          {"MASTER_ADDR", "127.0.0.1"},           {"MASTER_PORT", std::to_string(port)}};
}

struct RankProcess {
  pid_t pid = -1;
  std::string stdout_path;
  std::string stderr_path;
};

// Starts `args` (args[0] the binary) with `env` set on top of this environment.
inline RankProcess SpawnRank(const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env,
                             const std::string& out_prefix) {
  RankProcess p;
  p.stdout_path = out_prefix + ".out";
  p.stderr_path = out_prefix + ".err";
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    if (env.count(kv.substr(0, kv.find('='))) == 0) env_strings.push_back(kv);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, p.stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, p.stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (posix_spawn(&p.pid, argv[0], &actions, nullptr, argv.data(), envp.data()) != 0) {
    std::cerr << "cannot spawn " << args[0] << " (output under " << out_prefix << ")\n";
    p.pid = -1;
  }
  posix_spawn_file_actions_destroy(&actions);
  return p;
}

// The exit status, -signal, or kTimedOut (after SIGKILL) when the rank ran past `deadline`.
inline constexpr int kTimedOut = 1000;
inline int WaitRank(RankProcess& p, std::chrono::steady_clock::time_point deadline) {
  if (p.pid <= 0) return kTimedOut + 1;  // never started
  int status = 0;
  while (true) {
    const pid_t r = waitpid(p.pid, &status, WNOHANG);
    if (r == p.pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(p.pid, SIGKILL);
      waitpid(p.pid, &status, 0);
      return kTimedOut;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status);
}

inline std::string ReadText(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// How one rank ended: its exit status (WaitRank), stdout and stderr.
struct RankOutcome {
  int status = 0;
  std::string out, err;
};

// Runs `args[r]` as rank r of args.size() ranks on one fresh port (`env_over[r]` on top of
// RankEnv, when given), output files under `out_prefix`<r>; waits for all, `limit` in total.
inline std::vector<RankOutcome> RunRanks(
    const std::vector<std::vector<std::string>>& args,
    const std::vector<std::map<std::string, std::string>>& env_over, std::chrono::seconds limit,
    const std::string& out_prefix) {
  const int port = FreePort();
  const int n = static_cast<int>(args.size());
  std::vector<RankProcess> ps;
  for (int r = 0; r < n; ++r) {
    auto env = RankEnv(r, n, port);
    if (r < static_cast<int>(env_over.size())) {
      for (const auto& [k, v] : env_over[r]) env[k] = v;
    }
    ps.push_back(SpawnRank(args[r], env, out_prefix + std::to_string(r)));
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::vector<RankOutcome> out;
  for (auto& p : ps) {
    RankOutcome o;
    o.status = WaitRank(p, deadline);
    o.out = ReadText(p.stdout_path);
    o.err = ReadText(p.stderr_path);
    out.push_back(o);
  }
  return out;
}

}  // namespace oft::testing

#endif  // OFT_TESTS_DIST_RANK_PROCESS_H_
