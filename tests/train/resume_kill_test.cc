// Exact resume after SIGKILL: oft_train runs as a child process (posix_spawn; this process
// never forks itself after LibTorch is initialised), is killed right after the checkpoint
// of a chosen step, is restarted with the same command, and must end with an adapter
// bitwise equal to an uninterrupted run's. The step is drawn from OFT_RESUME_KILL_SEED
// (default 1, so a failure reproduces) and printed.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
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
#include "tests/train/child_process.h"
#include "tests/train/tiny_model.h"

namespace oft {
namespace {

namespace fs = std::filesystem;

using testing::Child;
using testing::ReadEvents;
using testing::Spawn;
using testing::Wait;

TEST(ResumeKillTest, KilledAndResumedRunEqualsUninterruptedRun) {
  const fs::path root = fs::path(::testing::TempDir()) / "oft_resume_kill_test";  // private (test main)
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

  const char* seed_env = std::getenv("OFT_RESUME_KILL_SEED");
  const uint32_t seed = seed_env != nullptr ? static_cast<uint32_t>(std::strtoul(seed_env, nullptr, 10)) : 1;
  std::mt19937 rng(seed);
  const int kill_at = 3 * static_cast<int>(1 + rng() % 6);  // a checkpoint step in 3..18
  std::printf("OFT_RESUME_KILL_SEED=%u: killed after the checkpoint of step %d\n", seed, kill_at);
  SCOPED_TRACE(absl::StrCat("OFT_RESUME_KILL_SEED=", seed, ": killed after the checkpoint of step ",
                            kill_at));
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
