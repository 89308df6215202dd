// The fixture of the store tests: a fresh service database in a temp dir with JobStore,
// DatasetStore and ApiKeyStore on it, and a deterministic clock.
#ifndef OFT_TESTS_JOBS_STORE_FIXTURE_H_
#define OFT_TESTS_JOBS_STORE_FIXTURE_H_

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/common/file_util.h"
#include "server/jobs/api_key_store.h"
#include "server/jobs/dataset_store.h"
#include "server/jobs/job_store.h"
#include "server/jobs/store_db.h"

namespace oft::testing {

namespace fs = std::filesystem;

// A clock the test advances; every reading moves it one millisecond so creation times are
// distinct but deterministic.
class FakeClock {
 public:
  absl::Time Now() { return absl::FromUnixMicros(micros_.fetch_add(1000)); }

 private:
  std::atomic<int64_t> micros_{1'700'000'000'000'000};
};

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("job_store_test_", getpid(), "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "jobs.db").string();
    Reopen();
  }
  void TearDown() override {
    Close();
    fs::remove_all(dir_);
  }

  JobStoreOptions Options() {
    JobStoreOptions o;
    o.clock = [this] { return clock_.Now(); };
    return o;
  }
  // Opens the database and the three stores on it (closing them first).
  void Reopen() {
    Close();
    auto db = OpenStoreDb(path_);
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *db;
    auto s = JobStore::Create(db_, Options());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    const auto clock = [this] { return clock_.Now(); };
    datasets_ = std::make_unique<DatasetStore>(db_, clock);
    keys_ = std::make_unique<ApiKeyStore>(db_, clock);
  }
  void Close() {
    store_.reset();
    datasets_.reset();
    keys_.reset();
    db_.reset();
  }

  static NewJob Job(const std::string& tenant, const std::string& spec = R"({"baseModel":"tiny"})",
                    const std::string& key = "", int priority = 0) {
    NewJob j;
    j.tenant = tenant;
    j.spec_json = spec;
    j.idempotency_key = key;
    j.priority = priority;
    return j;
  }
  std::string Create(const std::string& tenant, int priority = 0) {
    auto r = store_->CreateJob(Job(tenant, R"({"baseModel":"tiny"})", "", priority));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->job.id : "";
  }
  static NewDataset Dataset(const std::string& tenant, const std::string& path = "/d/a.jsonl") {
    NewDataset d;
    d.tenant = tenant;
    d.name = "train-set";
    d.sha256 = Sha256Hex("rows");
    d.size_bytes = 4;
    d.rows = 1;
    d.format = "DATASET_FORMAT_TEXT";
    d.path = path;
    return d;
  }
  std::vector<EventRecord> Events(const std::string& id, int64_t after = 0) {
    auto e = store_->EventsAfter(id, after, 10000);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? *e : std::vector<EventRecord>{};
  }

  FakeClock clock_;
  fs::path dir_;
  std::string path_;
  std::shared_ptr<SqliteDb> db_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<DatasetStore> datasets_;
  std::unique_ptr<ApiKeyStore> keys_;
};

}  // namespace oft::testing

#endif  // OFT_TESTS_JOBS_STORE_FIXTURE_H_
