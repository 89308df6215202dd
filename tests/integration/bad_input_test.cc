// Every bad input in one table, sent while another tenant's job trains: each row gets its
// expected status code and a message naming the problem; after each row the server still
// answers and the running job is unharmed (it finishes SUCCEEDED at the end).
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "oft/v1/datasets.grpc.pb.h"
#include "tests/integration/job_util.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kRunnerKey[] = "runner-key-0123456789abcdef";
constexpr int64_t kMaxUpload = 16384;

// UploadDataset with a hand-made header (the client library always sends the true size and
// hash), then `body` in chunks of at most 4 KiB.
absl::Status RawUpload(Client& client, const std::string& key,
                       const v1::UploadDatasetHeader& header, const std::string& body) {
  std::unique_ptr<v1::DatasetService::Stub> stub = v1::DatasetService::NewStub(client.channel());
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + key);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::Dataset response;
  std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> writer =
      stub->UploadDataset(&ctx, &response);
  v1::UploadDatasetRequest req;
  *req.mutable_header() = header;
  if (writer->Write(req)) {
    for (size_t off = 0; off < body.size(); off += 4096) {
      req.set_chunk(body.substr(off, 4096));
      if (!writer->Write(req)) break;  // the server failed the stream early
    }
  }
  writer->WritesDone();
  const grpc::Status st = writer->Finish();
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}

v1::UploadDatasetHeader Header(const std::string& name, const std::string& sha, int64_t size) {
  v1::UploadDatasetHeader h;
  h.set_name(name);
  h.set_sha256(sha);
  h.set_size_bytes(size);
  return h;
}

struct Row {
  std::string what;
  std::function<absl::Status()> call;
  absl::StatusCode code;
  std::string message;  // substring of the error message
};

TEST(BadInputTest, EveryBadInputWhileAJobTrains) {
  TempDir dir;
  ServerProcess server(ServerProcessOptions{
      .data_dir = dir.Sub("data"),
      .api_keys = {AliceFlag(), std::string("runner:") + kRunnerKey},
      .extra_flags = {absl::StrCat("--max_upload_bytes=", kMaxUpload),
                      "--max_active_jobs_per_tenant=1", "--device_memory_bytes=268435456"}});
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  std::unique_ptr<Client> runner = server.NewClient(kRunnerKey);
  std::unique_ptr<Client> alice = server.NewClient(kAliceKey);
  std::unique_ptr<Client> anonymous = server.NewClient("");
  std::unique_ptr<Client> wrong_key = server.NewClient("not-a-key-0123456789abcdef");

  // The job that keeps training through the table (another tenant's).
  const std::string small = SampleTrainHead(32);
  ASSERT_LT(static_cast<int64_t>(small.size()), kMaxUpload);
  absl::StatusOr<v1::Dataset> runner_ds = runner->UploadDatasetBytes(small, "runner-data");
  ASSERT_TRUE(runner_ds.ok()) << runner_ds.status();
  v1::CreateJobRequest runner_req;
  *runner_req.mutable_spec() = SmallSpec(runner_ds->id(), "runner", 300);
  absl::StatusOr<v1::Job> running = runner->CreateJob(runner_req);
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(WaitForStep(*runner, running->id(), 1, absl::Seconds(60)).ok());

  absl::StatusOr<v1::Dataset> ds = alice->UploadDatasetBytes(small, "alice-data");
  ASSERT_TRUE(ds.ok()) << ds.status();
  auto spec = [&] { return SmallSpec(ds->id(), "out", 2); };
  auto create = [&](const v1::JobSpec& s, const std::string& key = "") {
    v1::CreateJobRequest req;
    *req.mutable_spec() = s;
    req.set_idempotency_key(key);
    return alice->CreateJob(req).status();
  };
  auto create_with = [&](const std::function<void(v1::JobSpec&)>& edit) {
    v1::JobSpec s = spec();
    edit(s);
    return create(s);
  };
  const std::string missing_job = "job-000000000000000000000000";
  const std::string missing_ds = "ds-000000000000000000000000";
  v1::AdapterVersionRef missing_adapter;
  missing_adapter.set_name("no-such-adapter");
  auto watch = [](Client& c, const std::string& id, int64_t after) {
    return c.WatchJob(id, after, [](const v1::JobEvent&) { return true; });
  };
  const std::string valid_row = "{\"text\": \"hello\"}\n";

  using C = absl::StatusCode;
  std::vector<Row> rows = {
      // Datasets.
      {"malformed JSON row",
       [&] {
         return alice->UploadDatasetBytes(valid_row + "not json\n" + valid_row, "bad").status();
       },
       C::kInvalidArgument, "line 2"},
      {"row of another format",
       [&] {
         return alice
             ->UploadDatasetBytes(
                 valid_row + valid_row + "{\"prompt\": \"p\", \"completion\": \"c\"}\n", "bad")
             .status();
       },
       C::kInvalidArgument, "line 3"},
      {"row without a known field",
       [&] { return alice->UploadDatasetBytes("{\"foo\": 1}\n", "bad").status(); },
       C::kInvalidArgument, "line 1"},
      {"declared format differs from the rows",
       [&] {
         return alice->UploadDatasetBytes(valid_row, "bad", v1::DATASET_FORMAT_CHAT).status();
       },
       C::kInvalidArgument, "format"},
      {"wrong sha256",
       [&] {
         return RawUpload(*alice, kAliceKey,
                          Header("bad", Sha256Hex("something else"), valid_row.size()), valid_row);
       },
       C::kInvalidArgument, "sha256 mismatch"},
      {"sha256 not hex",
       [&] {
         return RawUpload(*alice, kAliceKey, Header("bad", "XYZ", valid_row.size()), valid_row);
       },
       C::kInvalidArgument, "header.sha256"},
      {"size mismatch (declared larger)",
       [&] {
         return RawUpload(*alice, kAliceKey,
                          Header("bad", Sha256Hex(valid_row), valid_row.size() + 1), valid_row);
       },
       C::kInvalidArgument, "size mismatch"},
      {"size mismatch (sent more)",
       [&] {
         return RawUpload(*alice, kAliceKey,
                          Header("bad", Sha256Hex(valid_row + valid_row), valid_row.size()),
                          valid_row + valid_row);
       },
       C::kInvalidArgument, "header.size_bytes"},
      {"oversized upload",
       [&] { return alice->UploadDatasetBytes(SampleTrainHead(320), "big").status(); },
       C::kResourceExhausted, "upload limit"},
      {"stream longer than the limit under a declared size at the limit",
       [&] {
         const std::string big = SampleTrainHead(320);
         return RawUpload(*alice, kAliceKey, Header("big", Sha256Hex(big), kMaxUpload), big);
       },
       C::kResourceExhausted, "over the limit"},
      {"dataset name ../x", [&] { return alice->UploadDatasetBytes(valid_row, "../x").status(); },
       C::kInvalidArgument, "header.name"},
      {"dataset name a/b", [&] { return alice->UploadDatasetBytes(valid_row, "a/b").status(); },
       C::kInvalidArgument, "header.name"},
      {"two authorization headers",
       [&] {
         auto stub = v1::DatasetService::NewStub(alice->channel());
         grpc::ClientContext ctx;
         ctx.AddMetadata("authorization", std::string("Bearer ") + kAliceKey);
         ctx.AddMetadata("authorization", std::string("Bearer ") + kRunnerKey);
         ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
         v1::ListDatasetsResponse response;
         const grpc::Status st = stub->ListDatasets(&ctx, v1::ListDatasetsRequest(), &response);
         return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
       },
       C::kUnauthenticated, "more than one authorization header"},
      {"unknown dataset id (GetDataset)", [&] { return alice->GetDataset(missing_ds).status(); },
       C::kNotFound, missing_ds},
      {"unknown dataset id (DeleteDataset)", [&] { return alice->DeleteDataset(missing_ds); },
       C::kNotFound, missing_ds},

      // Job specs.
      {"learning_rate -3",
       [&] {
         return create_with(
             [](v1::JobSpec& s) { s.mutable_hyperparameters()->set_learning_rate(-3); });
       },
       C::kInvalidArgument, "spec.hyperparameters.learning_rate"},
      {"batch_size 0",
       [&] {
         return create_with([](v1::JobSpec& s) { s.mutable_hyperparameters()->set_batch_size(0); });
       },
       C::kInvalidArgument, "spec.hyperparameters.batch_size"},
      {"max_seq_len above the model's context",
       [&] {
         return create_with(
             [](v1::JobSpec& s) { s.mutable_hyperparameters()->set_max_seq_len(100000); });
       },
       C::kInvalidArgument, "spec.hyperparameters.max_seq_len"},
      {"eval_every without validation data",
       [&] {
         return create_with([](v1::JobSpec& s) { s.mutable_hyperparameters()->set_eval_every(5); });
       },
       C::kInvalidArgument, "spec.hyperparameters.eval_every"},
      {"priority out of range",
       [&] { return create_with([](v1::JobSpec& s) { s.set_priority(1000); }); },
       C::kInvalidArgument, "spec.priority"},
      // One --devices entry and jobs in threads: one device per job.
      {"2 devices on a 1-device server",
       [&] { return create_with([](v1::JobSpec& s) { s.set_num_devices(2); }); },
       C::kFailedPrecondition, "spec.num_devices: asks for 2 devices, at most 1 allowed"},
      {"output adapter name ../x",
       [&] { return create_with([](v1::JobSpec& s) { s.set_output_adapter_name("../x"); }); },
       C::kInvalidArgument, "spec.output_adapter_name"},
      {"output adapter name a/b",
       [&] { return create_with([](v1::JobSpec& s) { s.set_output_adapter_name("a/b"); }); },
       C::kInvalidArgument, "spec.output_adapter_name"},
      {"dataset id ../x",
       [&] { return create_with([](v1::JobSpec& s) { s.set_training_dataset_ids(0, "../x"); }); },
       C::kInvalidArgument, "spec.training_dataset_ids[0]"},
      {"no training dataset",
       [&] { return create_with([](v1::JobSpec& s) { s.clear_training_dataset_ids(); }); },
       C::kInvalidArgument, "spec.training_dataset_ids"},
      {"unknown base model",
       [&] { return create_with([](v1::JobSpec& s) { s.set_base_model("no-such-model"); }); },
       C::kFailedPrecondition, "spec.base_model"},
      {"unknown dataset id (CreateJob)",
       [&] {
         return create_with([&](v1::JobSpec& s) { s.set_training_dataset_ids(0, missing_ds); });
       },
       C::kNotFound, "spec.training_dataset_ids[0]"},
      {"unknown validation dataset id",
       [&] {
         return create_with([&](v1::JobSpec& s) { s.set_validation_dataset_id(missing_ds); });
       },
       C::kNotFound, "spec.validation_dataset_id"},
      {"block size illegal for the model (r = 256 on 256 inputs: 1x1 blocks)",
       [&] {
         return create_with([](v1::JobSpec& s) {
           s.mutable_adapter_config()->set_r(256);
           s.mutable_adapter_config()->set_oft_block_size(0);
         });
       },
       C::kInvalidArgument, "spec.adapter_config.r"},
      {"block size above the limit",
       [&] {
         return create_with(
             [](v1::JobSpec& s) { s.mutable_adapter_config()->set_oft_block_size(4096); });
       },
       C::kInvalidArgument, "spec.adapter_config.oft_block_size"},
      {"target modules that select nothing",
       [&] {
         return create_with([](v1::JobSpec& s) {
           s.mutable_adapter_config()->add_target_modules("no_such_proj");
         });
       },
       C::kInvalidArgument, "spec.adapter_config.target_modules"},
      // Huge or hostile values: the error keeps its code and stays far below gRPC's 16 KiB
      // metadata limit (a verbatim echo would turn it into RESOURCE_EXHAUSTED).
      {"20 KB base_model",
       [&] {
         return create_with([](v1::JobSpec& s) { s.set_base_model(std::string(20000, 'm')); });
       },
       C::kFailedPrecondition, "spec.base_model"},
      {"20 KB target_regex",
       [&] {
         return create_with([](v1::JobSpec& s) {
           s.mutable_adapter_config()->set_target_regex(std::string(20000, 'q') + "(");
         });
       },
       C::kInvalidArgument, "spec.adapter_config.target_regex: regex is 20001 bytes"},
      {"5,000 target_modules",
       [&] {
         return create_with([](v1::JobSpec& s) {
           for (int i = 0; i < 5000; ++i) {
             s.mutable_adapter_config()->add_target_modules(absl::StrCat("no_such_proj_", i));
           }
         });
       },
       C::kInvalidArgument, "spec.adapter_config.target_modules"},
      {"catastrophic-backtracking target_regex (RE2 answers at once)",
       [&] {
         return create_with([](v1::JobSpec& s) {
           s.mutable_adapter_config()->set_target_regex("(.*.*)*X");
         });
       },
       C::kInvalidArgument, "spec.adapter_config.target_regex"},
      {"estimated memory above the device's",
       [&] {
         return create_with([](v1::JobSpec& s) {
           s.mutable_hyperparameters()->set_batch_size(64);
           s.mutable_hyperparameters()->set_max_seq_len(512);
         });
       },
       C::kFailedPrecondition, "spec.hyperparameters.batch_size"},
      {"idempotency key too long", [&] { return create(spec(), std::string(129, 'k')); },
       C::kInvalidArgument, "idempotency_key"},

      // Unknown ids.
      {"unknown job id (GetJob)", [&] { return alice->GetJob(missing_job).status(); }, C::kNotFound,
       missing_job},
      {"unknown job id (CancelJob)", [&] { return alice->CancelJob(missing_job).status(); },
       C::kNotFound, missing_job},
      {"unknown job id (WatchJob)", [&] { return watch(*alice, missing_job, 0); }, C::kNotFound,
       missing_job},
      {"negative after_event_id", [&] { return watch(*alice, running->id(), -1); },
       C::kInvalidArgument, "after_event_id"},
      {"unknown adapter", [&] { return alice->GetAdapter(missing_adapter).status(); }, C::kNotFound,
       "no-such-adapter"},
      {"adapter name ../x",
       [&] {
         v1::AdapterVersionRef ref;
         ref.set_name("../x");
         return alice->GetAdapter(ref).status();
       },
       C::kInvalidArgument, "ref.name"},
      {"download of an unknown adapter",
       [&] { return alice->DownloadAdapter(missing_adapter, dir.Sub("dl")).status(); },
       C::kNotFound, "no-such-adapter"},

      // Authentication.
      {"missing API key (unary)", [&] { return anonymous->ListBaseModels().status(); },
       C::kUnauthenticated, "authorization"},
      {"missing API key (upload stream)",
       [&] { return anonymous->UploadDatasetBytes(valid_row, "x").status(); }, C::kUnauthenticated,
       "authorization"},
      {"wrong API key (unary)", [&] { return wrong_key->GetJob(running->id()).status(); },
       C::kUnauthenticated, "unknown API key"},
      {"wrong API key (watch stream)", [&] { return watch(*wrong_key, running->id(), 0); },
       C::kUnauthenticated, "unknown API key"},
      {"wrong API key (cancel of a running job)",
       [&] { return wrong_key->CancelJob(running->id()).status(); }, C::kUnauthenticated,
       "unknown API key"},
  };

  auto check_alive = [&](const std::string& after, int* saw_running) {
    absl::StatusOr<v1::ListBaseModelsResponse> models = alice->ListBaseModels();
    EXPECT_TRUE(models.ok()) << "after '" << after << "': " << models.status();
    absl::StatusOr<v1::Job> job = runner->GetJob(running->id());
    ASSERT_TRUE(job.ok()) << "after '" << after << "': " << job.status();
    EXPECT_TRUE(job->state() == v1::Job::RUNNING || job->state() == v1::Job::SUCCEEDED)
        << "after '" << after << "': " << v1::Job::State_Name(job->state()) << " "
        << job->failure().message();
    EXPECT_FALSE(job->cancel_requested()) << after;
    if (job->state() == v1::Job::RUNNING) ++*saw_running;
  };

  int saw_running = 0;
  for (const Row& row : rows) {
    SCOPED_TRACE(row.what);
    const absl::Status st = row.call();
    EXPECT_EQ(st.code(), row.code) << row.what << ": " << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(row.message)) << row.what;
    EXPECT_LT(st.message().size(), 4096u) << row.what << ": the error echoes unbounded input";
    check_alive(row.what, &saw_running);
  }

  // Idempotency and the per-tenant quota (1 active job): alice's first job is QUEUED behind
  // the runner's, so it counts as active.
  v1::CreateJobRequest first;
  *first.mutable_spec() = spec();
  first.set_idempotency_key("retry-1");
  absl::StatusOr<v1::Job> job1 = alice->CreateJob(first);
  ASSERT_TRUE(job1.ok()) << job1.status();
  absl::StatusOr<v1::Job> again = alice->CreateJob(first);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), job1->id()) << "same key, same spec: the same job";
  v1::CreateJobRequest other = first;
  other.mutable_spec()->mutable_hyperparameters()->set_max_steps(3);
  absl::StatusOr<v1::Job> conflict = alice->CreateJob(other);
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kAlreadyExists) << conflict.status();
  EXPECT_THAT(std::string(conflict.status().message()), HasSubstr("idempotency_key"));
  check_alive("idempotency", &saw_running);
  other.clear_idempotency_key();
  absl::StatusOr<v1::Job> over_quota = alice->CreateJob(other);
  EXPECT_EQ(over_quota.status().code(), absl::StatusCode::kResourceExhausted)
      << over_quota.status();
  check_alive("quota", &saw_running);
  absl::StatusOr<std::vector<v1::Job>> alice_jobs = alice->ListAllJobs();
  ASSERT_TRUE(alice_jobs.ok()) << alice_jobs.status();
  EXPECT_EQ(alice_jobs->size(), 1u) << "no rejected request created a job";
  absl::StatusOr<v1::ListDatasetsResponse> alice_ds =
      alice->ListDatasets(v1::ListDatasetsRequest());
  ASSERT_TRUE(alice_ds.ok()) << alice_ds.status();
  EXPECT_EQ(alice_ds->datasets_size(), 1) << "no rejected upload was stored";

  // The runner's job trained through all of it and succeeds.
  EXPECT_GE(saw_running, 1);
  absl::StatusOr<v1::Job> done =
      WaitForState(*runner, running->id(), v1::Job::SUCCEEDED, absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done.status();
  std::printf("the running job was RUNNING after %d of %zu rows\n", saw_running, rows.size() + 2);
  // Cancelled now so that the test ends without training it.
  ASSERT_TRUE(alice->CancelJob(job1->id()).ok());
}

}  // namespace
}  // namespace oft::testing
