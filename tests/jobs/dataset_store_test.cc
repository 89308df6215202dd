#include "server/jobs/dataset_store.h"

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

using DatasetStoreTest = ::oft::testing::StoreTest;

// ---- datasets ----

TEST_F(DatasetStoreTest, DatasetCrudGuardsDatasetsInUse) {
  auto a = datasets_->CreateDataset(Dataset("acme", "/d/same.jsonl"));
  auto b = datasets_->CreateDataset(Dataset("globex", "/d/same.jsonl"));
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_TRUE(absl::StartsWith(a->id, "ds-"));

  NewDataset bad = Dataset("acme");
  bad.sha256 = "XYZ";
  auto bad_r = datasets_->CreateDataset(bad);
  EXPECT_EQ(bad_r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_r.status().message(), HasSubstr("sha256"));
  bad = Dataset("acme");
  bad.name = "../etc";
  EXPECT_EQ(datasets_->CreateDataset(bad).status().code(), absl::StatusCode::kInvalidArgument);

  NewJob j = Job("acme");
  j.dataset_ids = {a->id};
  auto job = store_->CreateJob(j);
  ASSERT_TRUE(job.ok()) << job.status();
  auto in_use = datasets_->DeleteDataset("acme", a->id);
  EXPECT_EQ(in_use.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(in_use.status().message(), HasSubstr(job->job.id));

  ASSERT_TRUE(store_->RequestCancel("acme", job->job.id).ok());
  auto deleted = datasets_->DeleteDataset("acme", a->id);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_TRUE(deleted->path_still_referenced);  // globex's record shares the file
  EXPECT_EQ(datasets_->GetDataset("acme", a->id).status().code(), absl::StatusCode::kNotFound);
  auto last = datasets_->DeleteDataset("globex", b->id);
  ASSERT_TRUE(last.ok());
  EXPECT_FALSE(last->path_still_referenced);
}

TEST_F(DatasetStoreTest, ListDatasetsPages) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(datasets_->CreateDataset(Dataset("acme"))->id);
  std::vector<std::string> seen;
  std::string token;
  do {
    auto page = datasets_->ListDatasets("acme", 2, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& d : page->datasets) seen.push_back(d.id);
    token = page->next_page_token;
  } while (!token.empty());
  EXPECT_EQ(seen, std::vector<std::string>(ids.rbegin(), ids.rend()));
}

}  // namespace
}  // namespace oft
