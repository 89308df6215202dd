#include "server/train/checkpoint_retention.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "gtest/gtest.h"

namespace oft {
namespace {

namespace fs = std::filesystem;

// A job directory as a finished run leaves it: complete checkpoints step-2 and step-4, a
// half-written step-6 (no state.json), and staging/.
class CheckpointRetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
    work_ = fs::temp_directory_path() /
            ("retention-" + std::to_string(::getpid()) + "-" + t->name());
    fs::remove_all(work_);
    for (const char* step : {"step-2", "step-4", "step-6"}) {
      fs::create_directories(work_ / "checkpoints" / step);
      std::ofstream(work_ / "checkpoints" / step / "optimizer.pt") << "adam";
      if (std::string(step) != "step-6") std::ofstream(work_ / "checkpoints" / step / "state.json") << "{}";
    }
    fs::create_directories(work_ / "staging");
  }
  void TearDown() override { fs::remove_all(work_); }

  std::set<std::string> Left() const {
    std::set<std::string> out;
    if (!fs::exists(work_ / "checkpoints")) return out;
    for (const auto& e : fs::directory_iterator(work_ / "checkpoints")) out.insert(e.path().filename());
    return out;
  }

  fs::path work_;
};

TEST_F(CheckpointRetentionTest, NoneRemovesEveryCheckpointAndStaging) {
  absl::StatusOr<int64_t> removed = ApplyCheckpointRetention(work_.string(), CheckpointRetention::kNone);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 3);
  EXPECT_FALSE(fs::exists(work_ / "checkpoints"));
  EXPECT_FALSE(fs::exists(work_ / "staging"));
  EXPECT_TRUE(fs::exists(work_));
}

TEST_F(CheckpointRetentionTest, LastKeepsTheNewestCompleteCheckpointWithItsOptimizerState) {
  absl::StatusOr<int64_t> removed = ApplyCheckpointRetention(work_.string(), CheckpointRetention::kLast);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 2);
  EXPECT_EQ(Left(), std::set<std::string>{"step-4"});
  EXPECT_TRUE(fs::exists(work_ / "checkpoints" / "step-4" / "optimizer.pt"));
  EXPECT_FALSE(fs::exists(work_ / "staging"));
}

TEST_F(CheckpointRetentionTest, AllKeepsEverything) {
  absl::StatusOr<int64_t> removed = ApplyCheckpointRetention(work_.string(), CheckpointRetention::kAll);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0);
  EXPECT_EQ(Left(), (std::set<std::string>{"step-2", "step-4", "step-6"}));
  EXPECT_TRUE(fs::exists(work_ / "staging"));
}

TEST_F(CheckpointRetentionTest, MissingWorkDirIsNotAnError) {
  absl::StatusOr<int64_t> removed =
      ApplyCheckpointRetention((work_ / "no-such-job").string(), CheckpointRetention::kNone);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0);
}

TEST(CheckpointRetentionParseTest, NamesRoundTripAndBadValuesNameTheFlag) {
  for (CheckpointRetention p :
       {CheckpointRetention::kAll, CheckpointRetention::kLast, CheckpointRetention::kNone}) {
    absl::StatusOr<CheckpointRetention> back = ParseCheckpointRetention(CheckpointRetentionName(p));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, p);
  }
  absl::StatusOr<CheckpointRetention> bad = ParseCheckpointRetention("some");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("--checkpoint_retention"), std::string::npos);
}

}  // namespace
}  // namespace oft
