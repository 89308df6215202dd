// Runs a tool (oft_train) as a child process for the train tests: posix_spawn (the test
// process never forks itself after LibTorch is initialised), stdout through a pipe read as
// JSON event lines, stderr optionally into a file.
#ifndef OFT_TESTS_TRAIN_CHILD_PROCESS_H_
#define OFT_TESTS_TRAIN_CHILD_PROCESS_H_

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

extern char** environ;

namespace oft::testing {

struct Child {
  pid_t pid = -1;
  FILE* out = nullptr;
};

// `stderr_path` "" = the child's stderr is this process's.
inline Child Spawn(const std::vector<std::string>& args, const std::string& stderr_path = "") {
  int fds[2];
  if (pipe(fds) != 0) return {};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  if (!stderr_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  Child c;
  if (posix_spawn(&c.pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) c.pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  c.out = fdopen(fds[0], "r");
  return c;
}

// Reads event lines until EOF or until `stop` returns true; returns the lines read.
inline std::vector<nlohmann::json> ReadEvents(Child& c,
                                              const std::function<bool(const nlohmann::json&)>& stop) {
  std::vector<nlohmann::json> events;
  char* line = nullptr;
  size_t cap = 0;
  while (getline(&line, &cap, c.out) > 0) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    events.push_back(j);
    if (stop && stop(j)) break;
  }
  free(line);
  return events;
}

// The exit status, or -signal.
inline int Wait(Child& c) {
  int status = 0;
  waitpid(c.pid, &status, 0);
  if (c.out) fclose(c.out);
  c.out = nullptr;
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace oft::testing

#endif  // OFT_TESTS_TRAIN_CHILD_PROCESS_H_
