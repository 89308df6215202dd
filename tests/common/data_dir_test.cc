#include "server/common/data_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace oft {
namespace {

namespace fs = std::filesystem;

class DataDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("data_dir_test_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "datasets");
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Touch(const fs::path& p) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << "x";
  }
  fs::path dir_;
};

TEST_F(DataDirTest, SecondLockFailsNamingTheHolderUntilReleased) {
  auto first = DataDirLock::Acquire(dir_.string());
  ASSERT_TRUE(first.ok()) << first.status();
  // flock locks belong to the open file description, so a second open in this same process
  // conflicts exactly as a second server process would.
  auto second = DataDirLock::Acquire(dir_.string());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find(absl::StrCat("pid ", ::getpid())), std::string::npos)
      << second.status();
  first->reset();
  EXPECT_TRUE(DataDirLock::Acquire(dir_.string()).ok());
}

TEST_F(DataDirTest, LockOnAnUnwritableDirIsAnError) {
  auto lock = DataDirLock::Acquire((dir_ / "missing" / "deeper").string());
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(lock.status().message().find("LOCK"), std::string::npos);
}

TEST_F(DataDirTest, SweepRemovesPartialUploadsAndTemporariesOnly) {
  Touch(dir_ / "datasets" / ".upload-00000000deadbeef");
  Touch(dir_ / "datasets" / "0123abcd.jsonl");
  Touch(dir_ / "jobs" / "job-1" / "checkpoints" / "step-4" / "adapter.safetensors.tmp.1234.0");
  Touch(dir_ / "jobs" / "job-1" / "checkpoints" / "step-4" / "adapter.safetensors");
  Touch(dir_ / "jobs" / "job-1" / "notes.tmp.txt");       // not WriteFileAtomic's pattern
  Touch(dir_ / "jobs" / "job-1" / ".upload-elsewhere");   // only datasets/ holds uploads
  EXPECT_EQ(SweepTemporaryFiles(dir_.string()), 2);
  EXPECT_FALSE(fs::exists(dir_ / "datasets" / ".upload-00000000deadbeef"));
  EXPECT_FALSE(fs::exists(dir_ / "jobs" / "job-1" / "checkpoints" / "step-4" / "adapter.safetensors.tmp.1234.0"));
  EXPECT_TRUE(fs::exists(dir_ / "datasets" / "0123abcd.jsonl"));
  EXPECT_TRUE(fs::exists(dir_ / "jobs" / "job-1" / "checkpoints" / "step-4" / "adapter.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "jobs" / "job-1" / "notes.tmp.txt"));
  EXPECT_TRUE(fs::exists(dir_ / "jobs" / "job-1" / ".upload-elsewhere"));
  EXPECT_EQ(SweepTemporaryFiles(dir_.string()), 0);
}

TEST_F(DataDirTest, SweepRemovesInterruptedAdapterImportsWhole) {
  Touch(dir_ / "imports" / ".import-00000000deadbeef" / "adapter_config.json");
  Touch(dir_ / "imports" / ".import-00000000deadbeef" / "adapter_model.safetensors");
  Touch(dir_ / "imports" / "notes.txt");  // not a staging directory
  EXPECT_EQ(SweepTemporaryFiles(dir_.string()), 3);  // two files and their directory
  EXPECT_FALSE(fs::exists(dir_ / "imports" / ".import-00000000deadbeef"));
  EXPECT_TRUE(fs::exists(dir_ / "imports" / "notes.txt"));
  EXPECT_EQ(SweepTemporaryFiles(dir_.string()), 0);
}

}  // namespace
}  // namespace oft
