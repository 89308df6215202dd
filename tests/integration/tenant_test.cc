// Tenant isolation: two API keys of two tenants on one server. Bob cannot see, get, cancel,
// watch, download or delete Alice's jobs, datasets or adapters; each is reported exactly like
// a missing id (NOT_FOUND). Lists are disjoint and names are per tenant.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using ::testing::IsEmpty;

// `st` is NOT_FOUND and reads exactly like `missing` once each message's id is masked.
void ExpectLikeMissing(const absl::Status& st, const std::string& id, const absl::Status& missing,
                       const std::string& missing_id, const std::string& what) {
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << what << ": " << st;
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << what << " (missing id): " << missing;
  EXPECT_EQ(absl::StrReplaceAll(st.message(), {{id, "<id>"}}),
            absl::StrReplaceAll(missing.message(), {{missing_id, "<id>"}}))
      << what;
}

TEST(TenantTest, TenantsAreIsolated) {
  TempDir dir;
  ServerProcess server(
      ServerProcessOptions{.data_dir = dir.Sub("data"), .api_keys = {AliceFlag(), BobFlag()}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  std::unique_ptr<Client> alice = server.NewClient(kAliceKey);
  std::unique_ptr<Client> bob = server.NewClient(kBobKey);

  // Alice trains "shared-name" v1.
  const std::string data = SampleTrainHead(32);
  absl::StatusOr<v1::Dataset> a_ds = alice->UploadDatasetBytes(data, "alice-data");
  ASSERT_TRUE(a_ds.ok()) << a_ds.status();
  v1::CreateJobRequest req;
  *req.mutable_spec() = SmallSpec(a_ds->id(), "shared-name", 2);
  absl::StatusOr<v1::Job> a_job = alice->CreateJob(req);
  ASSERT_TRUE(a_job.ok()) << a_job.status();
  ASSERT_TRUE(WaitForState(*alice, a_job->id(), v1::Job::SUCCEEDED, absl::Seconds(60)).ok());
  v1::AdapterVersionRef a_ref;
  a_ref.set_name("shared-name");
  a_ref.set_version(1);
  ASSERT_TRUE(alice->GetAdapter(a_ref).ok());

  const std::string missing_job = "job-000000000000000000000000";
  const std::string missing_ds = "ds-000000000000000000000000";

  // Jobs.
  ExpectLikeMissing(bob->GetJob(a_job->id()).status(), a_job->id(),
                    bob->GetJob(missing_job).status(), missing_job, "GetJob");
  ExpectLikeMissing(bob->CancelJob(a_job->id()).status(), a_job->id(),
                    bob->CancelJob(missing_job).status(), missing_job, "CancelJob");
  auto watch = [&](const std::string& id) {
    return bob->WatchJob(id, 0, [](const v1::JobEvent&) { return true; });
  };
  ExpectLikeMissing(watch(a_job->id()), a_job->id(), watch(missing_job), missing_job, "WatchJob");
  // Alice's own cancel of her finished job is FAILED_PRECONDITION: the NOT_FOUND above is
  // about ownership, not state.
  EXPECT_EQ(alice->CancelJob(a_job->id()).status().code(), absl::StatusCode::kFailedPrecondition);

  // Datasets.
  ExpectLikeMissing(bob->GetDataset(a_ds->id()).status(), a_ds->id(),
                    bob->GetDataset(missing_ds).status(), missing_ds, "GetDataset");
  ExpectLikeMissing(bob->DeleteDataset(a_ds->id()), a_ds->id(), bob->DeleteDataset(missing_ds),
                    missing_ds, "DeleteDataset");
  v1::CreateJobRequest steal;
  *steal.mutable_spec() = SmallSpec(a_ds->id(), "stolen", 2);
  v1::CreateJobRequest steal_missing;
  *steal_missing.mutable_spec() = SmallSpec(missing_ds, "stolen", 2);
  ExpectLikeMissing(bob->CreateJob(steal).status(), a_ds->id(),
                    bob->CreateJob(steal_missing).status(), missing_ds,
                    "CreateJob with another tenant's dataset");

  // Adapters.
  v1::AdapterVersionRef missing_ref;
  missing_ref.set_name("no-such-adapter");
  missing_ref.set_version(1);
  ExpectLikeMissing(bob->GetAdapter(a_ref).status(), "shared-name",
                    bob->GetAdapter(missing_ref).status(), "no-such-adapter", "GetAdapter");
  v1::AdapterVersionRef a_latest = a_ref, missing_latest = missing_ref;
  a_latest.set_version(0);
  missing_latest.set_version(0);
  ExpectLikeMissing(bob->GetAdapter(a_latest).status(), "shared-name",
                    bob->GetAdapter(missing_latest).status(), "no-such-adapter",
                    "GetAdapter latest");
  ExpectLikeMissing(bob->DownloadAdapter(a_ref, dir.Sub("stolen")).status(), "shared-name",
                    bob->DownloadAdapter(missing_ref, dir.Sub("stolen")).status(),
                    "no-such-adapter", "DownloadAdapter");
  ExpectLikeMissing(bob->DeleteAdapter(a_ref), "shared-name", bob->DeleteAdapter(missing_ref),
                    "no-such-adapter", "DeleteAdapter");

  // Bob's lists are empty; nothing of Alice's changed.
  absl::StatusOr<std::vector<v1::Job>> bob_jobs = bob->ListAllJobs();
  ASSERT_TRUE(bob_jobs.ok()) << bob_jobs.status();
  EXPECT_THAT(*bob_jobs, IsEmpty());
  v1::ListDatasetsRequest list_ds;
  absl::StatusOr<v1::ListDatasetsResponse> bob_ds = bob->ListDatasets(list_ds);
  ASSERT_TRUE(bob_ds.ok()) << bob_ds.status();
  EXPECT_THAT(bob_ds->datasets(), IsEmpty());
  absl::StatusOr<std::vector<v1::Adapter>> bob_adapters = bob->ListAllAdapters();
  ASSERT_TRUE(bob_adapters.ok()) << bob_adapters.status();
  EXPECT_THAT(*bob_adapters, IsEmpty());
  EXPECT_TRUE(alice->GetDataset(a_ds->id()).ok());
  EXPECT_TRUE(alice->GetAdapter(a_ref).ok());
  absl::StatusOr<v1::Job> a_job_now = alice->GetJob(a_job->id());
  ASSERT_TRUE(a_job_now.ok());
  EXPECT_EQ(a_job_now->state(), v1::Job::SUCCEEDED);

  // Bob uploads the same bytes (stored once) and trains the same adapter name: his own
  // version 1. Alice deleting her dataset record leaves Bob's intact.
  absl::StatusOr<v1::Dataset> b_ds = bob->UploadDatasetBytes(data, "bob-data");
  ASSERT_TRUE(b_ds.ok()) << b_ds.status();
  EXPECT_NE(b_ds->id(), a_ds->id());
  EXPECT_EQ(b_ds->sha256(), a_ds->sha256());
  ASSERT_TRUE(alice->DeleteDataset(a_ds->id()).ok());
  EXPECT_EQ(alice->GetDataset(a_ds->id()).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(bob->GetDataset(b_ds->id()).ok());
  *req.mutable_spec() = SmallSpec(b_ds->id(), "shared-name", 2);
  absl::StatusOr<v1::Job> b_job = bob->CreateJob(req);
  ASSERT_TRUE(b_job.ok()) << b_job.status();
  absl::StatusOr<v1::Job> b_done =
      WaitForState(*bob, b_job->id(), v1::Job::SUCCEEDED, absl::Seconds(60));
  ASSERT_TRUE(b_done.ok()) << b_done.status();
  EXPECT_EQ(b_done->result().name(), "shared-name");
  EXPECT_EQ(b_done->result().version(), 1);

  // Disjoint lists.
  absl::StatusOr<std::vector<v1::Job>> a_jobs = alice->ListAllJobs();
  bob_jobs = bob->ListAllJobs();
  ASSERT_TRUE(a_jobs.ok() && bob_jobs.ok());
  ASSERT_EQ(a_jobs->size(), 1u);
  ASSERT_EQ(bob_jobs->size(), 1u);
  EXPECT_EQ((*a_jobs)[0].id(), a_job->id());
  EXPECT_EQ((*bob_jobs)[0].id(), b_job->id());
  absl::StatusOr<std::vector<v1::Adapter>> a_adapters = alice->ListAllAdapters();
  bob_adapters = bob->ListAllAdapters();
  ASSERT_TRUE(a_adapters.ok() && bob_adapters.ok());
  ASSERT_EQ(a_adapters->size(), 1u);
  ASSERT_EQ(bob_adapters->size(), 1u);
  EXPECT_EQ((*a_adapters)[0].job_id(), a_job->id());
  EXPECT_EQ((*bob_adapters)[0].job_id(), b_job->id());
  bob_ds = bob->ListDatasets(list_ds);
  absl::StatusOr<v1::ListDatasetsResponse> a_ds_list = alice->ListDatasets(list_ds);
  ASSERT_TRUE(bob_ds.ok() && a_ds_list.ok());
  ASSERT_EQ(bob_ds->datasets_size(), 1);
  EXPECT_EQ(bob_ds->datasets(0).id(), b_ds->id());
  EXPECT_THAT(a_ds_list->datasets(), IsEmpty());
  // Alice still cannot see Bob's job.
  EXPECT_EQ(alice->GetJob(b_job->id()).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace oft::testing
