#include "server/artifacts/store.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "server/common/file_util.h"
#include "server/common/names.h"

namespace oft {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("oft_store_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    staging_ = root_ / "staging";
    fs::create_directories(staging_);
    Stage("v1");
  }
  void TearDown() override {
    std::error_code ec;
    for (auto& e : fs::recursive_directory_iterator(root_, ec)) {
      fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
    fs::remove_all(root_, ec);
  }
  void Stage(const std::string& tag) {
    ASSERT_TRUE(WriteFileAtomic((staging_ / "adapter_config.json").string(), "{\"peft_type\": \"OFT\", \"tag\": \"" + tag + "\"}").ok());
    ASSERT_TRUE(WriteFileAtomic((staging_ / "adapter_model.safetensors").string(), "weights-" + tag).ok());
  }
  fs::path root_, staging_;
};

TEST_F(StoreTest, PublishAssignsVersionsWithHashedManifest) {
  auto store = AdapterStore::Open(root_.string()).value();
  PublishInfo info;
  info.job_id = "job-1";
  info.base_model = "default";
  info.metrics = {{"loss", 1.25}};
  info.hyperparameters_json = R"({"learning_rate": 0.0004})";
  auto m1 = store->Publish("acme", "helper", staging_.string(), info);
  ASSERT_TRUE(m1.ok()) << m1.status();
  EXPECT_EQ(m1->version, 1);
  Stage("v2");
  auto m2 = store->Publish("acme", "helper", staging_.string(), info);
  ASSERT_TRUE(m2.ok());
  EXPECT_EQ(m2->version, 2);
  EXPECT_EQ(m1->files.at("adapter_model.safetensors"), Sha256Hex("weights-v1"));
  EXPECT_EQ(m2->files.at("adapter_model.safetensors"), Sha256Hex("weights-v2"));

  auto latest = store->Get("acme", "helper");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->version, 2);
  EXPECT_EQ(latest->job_id, "job-1");
  EXPECT_EQ(latest->metrics.at("loss"), 1.25);
  EXPECT_NE(latest->hyperparameters_json.find("0.0004"), std::string::npos);
  EXPECT_TRUE(store->Verify("acme", "helper", 1).ok());
  auto all = store->List("acme");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].version, 1);
  // Published versions are read-only on disk and unchanged by later publishes.
  const auto dir = store->VersionDir("acme", "helper", 1).value();
  struct stat st;
  ASSERT_EQ(::stat((fs::path(dir) / "adapter_model.safetensors").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0222, 0u);
  EXPECT_EQ(ReadFile((fs::path(dir) / "adapter_model.safetensors").string()).value(), "weights-v1");
  // Tenants are separate namespaces.
  EXPECT_EQ(store->Get("other", "helper").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, VerifyDetectsCorruption) {
  auto store = AdapterStore::Open(root_.string()).value();
  ASSERT_TRUE(store->Publish("acme", "a", staging_.string(), {}).ok());
  const auto f = fs::path(store->VersionDir("acme", "a", 1).value()) / "adapter_model.safetensors";
  fs::permissions(f.parent_path(), fs::perms::owner_all, fs::perm_options::add);
  fs::permissions(f, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream(f, std::ios::app) << "x";
  auto s = store->Verify("acme", "a", 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("adapter_model.safetensors has sha256"), std::string::npos) << s;
}

TEST_F(StoreTest, BadNamesAndMissingFilesAreRejected) {
  auto store = AdapterStore::Open(root_.string()).value();
  for (const char* bad : {"", "..", "../etc", "a/b", ".hidden", "x y", "ü"}) {
    auto s = store->Publish("acme", bad, staging_.string(), {}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("adapter name"), std::string::npos) << s;
  }
  EXPECT_EQ(store->Publish("../t", "a", staging_.string(), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  fs::remove(staging_ / "adapter_model.safetensors");
  auto s = store->Publish("acme", "a", staging_.string(), {}).status();
  EXPECT_NE(s.message().find("lacks adapter_model.safetensors"), std::string::npos) << s;
  EXPECT_FALSE(fs::exists(root_ / "adapters" / "acme" / "a" / "1"));
}

TEST_F(StoreTest, InterruptedPublishLeavesNoVersion) {
  // A crash mid-publish leaves only a hidden temp dir; Open removes it and versions continue.
  fs::create_directories(root_ / "adapters" / "acme" / "a" / ".tmp-1-999");
  std::ofstream(root_ / "adapters" / "acme" / "a" / ".tmp-1-999" / "adapter_config.json") << "{";
  auto store = AdapterStore::Open(root_.string()).value();
  EXPECT_FALSE(fs::exists(root_ / "adapters" / "acme" / "a" / ".tmp-1-999"));
  EXPECT_EQ(store->Get("acme", "a").status().code(), absl::StatusCode::kNotFound);
  auto m = store->Publish("acme", "a", staging_.string(), {});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->version, 1);
  ASSERT_TRUE(store->Delete("acme", "a", 1).ok());
  EXPECT_EQ(store->Get("acme", "a", 1).status().code(), absl::StatusCode::kNotFound);
}

TEST(Names, StrictPattern) {
  EXPECT_TRUE(ValidateName("dataset", "my-data_v1.2").ok());
  EXPECT_TRUE(ValidateName("dataset", std::string(64, 'a')).ok());
  auto s = ValidateName("dataset", std::string(65, 'a'));
  EXPECT_NE(s.message().find("65 characters"), std::string::npos) << s;
  s = ValidateName("job id", "a/../../b");
  EXPECT_NE(s.message().find("job id \"a/../../b\" is invalid: it contains '/'"), std::string::npos) << s;
  EXPECT_FALSE(ValidateName("x", "a..b").ok());
  EXPECT_FALSE(ValidateName("x", "-a").ok());
  EXPECT_FALSE(ValidateName("x", std::string("a\0b", 3)).ok());
}

}  // namespace
}  // namespace oft
