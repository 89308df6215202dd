// Exact resume after SIGKILL: oft_train runs as a child process (posix_spawn; this process
// never forks itself after LibTorch is initialised), is killed right after a checkpoint at
// a random step, is restarted with the same command, and must end with an adapter
// bitwise equal to an uninterrupted run's.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "tests/train/tiny_model.h"

extern char** environ;

namespace oft {
namespace {

namespace fs = std::filesystem;

struct Child {
  pid_t pid = -1;
  FILE* out = nullptr;
};

Child Spawn(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
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
std::vector<nlohmann::json> ReadEvents(Child& c, const std::function<bool(const nlohmann::json&)>& stop) {
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

int Wait(Child& c) {
  int status = 0;
  waitpid(c.pid, &status, 0);
  if (c.out) fclose(c.out);
  c.out = nullptr;
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status);
}

TEST(ResumeKillTest, KilledAndResumedRunEqualsUninterruptedRun) {
  const fs::path root = fs::path(::testing::TempDir()) / "oft_resume_kill_test";
  fs::remove_all(root);
  fs::create_directories(root / "model");
  ASSERT_TRUE(testing::WriteTinyModelDir((root / "model").string()).ok());
  ASSERT_TRUE(WriteFileAtomic((root / "train.jsonl").string(),
                              testing::RowsToJsonl(testing::RepetitiveRows(12))).ok());
  auto command = [&](const std::string& tag) {
    return std::vector<std::string>{
        OFT_TRAIN_BINARY, "--model_dir=" + (root / "model").string(),
        "--train=" + (root / "train.jsonl").string(), "--out=" + (root / ("out_" + tag)).string(),
        "--checkpoint_dir=" + (root / ("ckpt_" + tag)).string(), "--threads=1", "--max_steps=20",
        "--epochs=0", "--checkpoint_every=3", "--batch_size=2", "--learning_rate=0.01",
        "--seed=5", "--oft_block_size=8", "--module_dropout=0.1", "--max_seq_len=64"};
  };

  Child full = Spawn(command("full"));
  ASSERT_GT(full.pid, 0);
  auto full_events = ReadEvents(full, nullptr);
  ASSERT_EQ(Wait(full), 0);
  ASSERT_FALSE(full_events.empty());
  EXPECT_EQ(full_events.back()["kind"], "done");

  std::random_device rd;
  const int kill_at = 3 * static_cast<int>(1 + rd() % 6);  // a checkpoint step in 3..18
  SCOPED_TRACE(absl::StrCat("killed after the checkpoint of step ", kill_at));
  Child first = Spawn(command("killed"));
  ASSERT_GT(first.pid, 0);
  auto first_events = ReadEvents(first, [&](const nlohmann::json& e) {
    return e["kind"] == "checkpoint" && e["step"] == kill_at;
  });
  kill(first.pid, SIGKILL);
  EXPECT_EQ(Wait(first), -SIGKILL);
  ASSERT_FALSE(first_events.empty());
  EXPECT_EQ(first_events.back()["step"], kill_at);

  Child second = Spawn(command("killed"));
  ASSERT_GT(second.pid, 0);
  auto second_events = ReadEvents(second, nullptr);
  ASSERT_EQ(Wait(second), 0);
  ASSERT_FALSE(second_events.empty());
  EXPECT_TRUE(absl::StrContains(second_events[0]["message"].get<std::string>(), "resumed from"));
  EXPECT_EQ(second_events.back()["kind"], "done");

  auto a = ReadFile((root / "out_full" / "adapter_model.safetensors").string());
  auto b = ReadFile((root / "out_killed" / "adapter_model.safetensors").string());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(*a == *b) << "adapters differ after resume";
}

}  // namespace
}  // namespace oft
