#include "server/jobs/api_key_store.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/file_util.h"
#include "tests/jobs/store_fixture.h"

namespace oft {
namespace {

using ::testing::HasSubstr;

using ApiKeyStoreTest = ::oft::testing::StoreTest;

// ---- API keys ----

TEST_F(ApiKeyStoreTest, ApiKeysAreStoredOnlyAsHashes) {
  const std::string key = "oftk-live-7f3a9c2e5b8d4f1a6c0e";
  ASSERT_TRUE(keys_->AddApiKey(key, "acme").ok());
  EXPECT_EQ(keys_->AddApiKey(key, "globex").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(keys_->AddApiKey("short", "acme").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*keys_->LookupApiKey(key), "acme");
  auto unknown = keys_->LookupApiKey("oftk-live-unknown-key-000000");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), ::testing::Not(HasSubstr("unknown-key")));

  // Neither the database nor its WAL holds the raw key; the hash is there.
  std::string bytes;
  for (const char* suffix : {"", "-wal"}) {
    auto content = ReadFile(path_ + suffix);
    if (content.ok()) bytes += *content;
  }
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(bytes.find(key), std::string::npos);
  EXPECT_NE(bytes.find(Sha256Hex(key)), std::string::npos);

  ASSERT_TRUE(keys_->RevokeApiKey(key).ok());
  EXPECT_EQ(keys_->LookupApiKey(key).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(keys_->RevokeApiKey(key).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace oft
