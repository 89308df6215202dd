#include "server/jobs/sqlite_db.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/status_macros.h"

namespace oft {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

constexpr const char* kV1 = "CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);";
constexpr const char* kV2 = "ALTER TABLE t ADD COLUMN w INTEGER NOT NULL DEFAULT 7;";

class SqliteDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("sqlite_db_test_", getpid(), "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "t.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<SqliteDb> Open(std::vector<const char*> migrations) {
    auto db = SqliteDb::Open(path_, SqliteDbOptions(), migrations);
    EXPECT_TRUE(db.ok()) << db.status();
    return db.ok() ? std::move(*db) : nullptr;
  }
  static absl::Status Insert(SqliteDb& db, const std::string& v) {
    return db.Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
      OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare("INSERT INTO t (v) VALUES (?)"));
      return s.Bind(1, v).Run();
    });
  }
  static std::vector<std::string> Values(const SqliteDb& db) {
    SqliteDb::ReadLease lease(db);
    auto s = lease.Prepare("SELECT v FROM t ORDER BY seq");
    EXPECT_TRUE(s.ok()) << s.status();
    std::vector<std::string> out;
    while (s.ok() && *s->Step()) out.push_back(s->Text(0));
    return out;
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(SqliteDbTest, MigrationsRunOnceAndOnlyForward) {
  {
    auto db = Open({kV1});
    ASSERT_TRUE(Insert(*db, "a").ok());
  }
  {
    // Version 1 -> 2 runs only the second migration (the first would fail: table exists).
    auto db = Open({kV1, kV2});
    SqliteDb::ReadLease lease(*db);
    auto s = lease.Prepare("SELECT v, w FROM t");
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE(*s->Step());
    EXPECT_EQ(s->Text(0), "a");
    EXPECT_EQ(s->Int(1), 7);
  }
  // A binary that knows fewer migrations than the file refuses it.
  auto old = SqliteDb::Open(path_, SqliteDbOptions(), std::vector<const char*>{kV1});
  EXPECT_EQ(old.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(old.status().message(), HasSubstr("schema version 2"));
}

TEST_F(SqliteDbTest, OpenRejectsBadPathsAndOptions) {
  const std::vector<const char*> m = {kV1};
  EXPECT_EQ(SqliteDb::Open(":memory:", {}, m).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqliteDb::Open("file:x.db", {}, m).status().code(), absl::StatusCode::kInvalidArgument);
  SqliteDbOptions o;
  o.read_connections = 0;
  auto s = SqliteDb::Open(path_, o, m);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("read_connections"));
}

TEST_F(SqliteDbTest, FailedWriteRollsBackAndSkipsAfterCommit) {
  auto db = Open({kV1});
  int ran = 0;
  absl::Status st = db->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
    OFT_ASSIGN_OR_RETURN(SqlStatement s, txn.Prepare("INSERT INTO t (v) VALUES ('lost')"));
    OFT_RETURN_IF_ERROR(s.Run());
    txn.AfterCommit([&] { ++ran; });
    return absl::AbortedError("body failed");
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(ran, 0);
  EXPECT_TRUE(Values(*db).empty());
}

TEST_F(SqliteDbTest, AfterCommitRunsInOrderOutsideTheWriteLock) {
  auto db = Open({kV1});
  std::vector<std::string> order;
  ASSERT_TRUE(db->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
                  OFT_ASSIGN_OR_RETURN(SqlStatement s,
                                       txn.Prepare("INSERT INTO t (v) VALUES ('x')"));
                  OFT_RETURN_IF_ERROR(s.Run());
                  EXPECT_EQ(txn.Changes(), 1);
                  txn.AfterCommit([&] {
                    order.push_back("first");
                    // The write lock is free again: a callback may write.
                    EXPECT_TRUE(Insert(*db, "from callback").ok());
                  });
                  txn.AfterCommit([&] { order.push_back("second"); });
                  return absl::OkStatus();
                }).ok());
  EXPECT_THAT(order, ElementsAre("first", "second"));
  EXPECT_THAT(Values(*db), ElementsAre("x", "from callback"));
}

TEST_F(SqliteDbTest, NewIdsAreDistinctAndPrefixed) {
  auto db = Open({kV1});
  std::vector<std::string> ids;
  ASSERT_TRUE(db->Write([&](SqliteDb::WriteTxn& txn) {
                  for (int i = 0; i < 100; ++i) ids.push_back(txn.NewId("job"));
                  return absl::OkStatus();
                }).ok());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::unique(ids.begin(), ids.end()), ids.end());
  EXPECT_EQ(ids[0].size(), 4u + 24u);
  EXPECT_EQ(ids[0].rfind("job-", 0), 0u);
}

TEST_F(SqliteDbTest, ReadersSeeCommittedWritesAndNeverBlockOnAnOpenWrite) {
  auto db = Open({kV1});
  ASSERT_TRUE(Insert(*db, "a").ok());
  ASSERT_TRUE(db->Write([&](SqliteDb::WriteTxn& txn) -> absl::Status {
                  OFT_ASSIGN_OR_RETURN(SqlStatement s,
                                       txn.Prepare("INSERT INTO t (v) VALUES ('b')"));
                  OFT_RETURN_IF_ERROR(s.Run());
                  // Inside the open write: a reader sees the last commit, not this row.
                  EXPECT_THAT(Values(*db), ElementsAre("a"));
                  return absl::OkStatus();
                }).ok());
  EXPECT_THAT(Values(*db), ElementsAre("a", "b"));
  // Readers are query_only.
  SqliteDb::ReadLease lease(*db);
  auto s = lease.Prepare("DELETE FROM t");
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->Run().ok());
}

TEST_F(SqliteDbTest, StatementErrorsAreStatuses) {
  auto db = Open({kV1});
  SqliteDb::ReadLease lease(*db);
  auto bad = lease.Prepare("SELEC nonsense");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(bad.status().message(), HasSubstr("prepare"));
  auto s = lease.Prepare("SELECT ?");
  ASSERT_TRUE(s.ok());
  s->Bind(5, int64_t{1});  // No parameter 5: the error surfaces at Step.
  EXPECT_EQ(s->Step().status().code(), absl::StatusCode::kInternal);
}

TEST(PageTokenTest, RoundTripsAndIsBoundToItsListing) {
  const PageToken jobs("jobs", "acme", "QUEUED");
  EXPECT_EQ(*jobs.Decode(""), std::numeric_limits<int64_t>::max());
  const std::string t = jobs.Encode(42);
  EXPECT_EQ(*jobs.Decode(t), 42);
  for (const PageToken& other :
       {PageToken("jobs", "globex", "QUEUED"), PageToken("jobs", "acme", "RUNNING"),
        PageToken("datasets", "acme", "QUEUED")}) {
    auto d = other.Decode(t);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(d.status().message(), HasSubstr("page_token"));
  }
  EXPECT_FALSE(jobs.Decode("not base64 !!").ok());
  EXPECT_FALSE(jobs.Decode(std::string(300, 'A')).ok());
}

TEST(PageTokenTest, EffectivePageSize) {
  EXPECT_EQ(*EffectivePageSize(0), kDefaultPageSize);
  EXPECT_EQ(*EffectivePageSize(7), 7);
  EXPECT_EQ(*EffectivePageSize(kMaxPageSize + 1), kMaxPageSize);
  auto neg = EffectivePageSize(-1);
  EXPECT_EQ(neg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(neg.status().message(), HasSubstr("page_size must be >= 0"));
}

}  // namespace
}  // namespace oft
