// The client library and oftctl against an in-process fake of the oft.v1 services: the
// fake records what the client sent and can drop streams or corrupt downloads on purpose.
#include <openssl/evp.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "client/cli.h"
#include "client/oft_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace oft {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Sha256(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned int i = 0; i < len; ++i) {
    hex += kHex[md[i] >> 4];
    hex += kHex[md[i] & 15];
  }
  return hex;
}

std::string Metadata(const grpc::ServerContext* ctx, const std::string& key) {
  auto it = ctx->client_metadata().find(key);
  if (it == ctx->client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// What the fakes saw.
struct Record {
  absl::Mutex mu;
  std::vector<std::string> auth ABSL_GUARDED_BY(mu);          // authorization per call
  std::vector<bool> unary_has_deadline ABSL_GUARDED_BY(mu);   // per unary call
  std::vector<int64_t> watch_after ABSL_GUARDED_BY(mu);       // after_event_id per WatchJob
  std::vector<size_t> upload_chunks ABSL_GUARDED_BY(mu);      // chunk sizes of the last upload
  void Saw(grpc::ServerContext* ctx, bool unary) {
    absl::MutexLock l(&mu);
    auth.push_back(Metadata(ctx, "authorization"));
    if (unary) {
      unary_has_deadline.push_back(ctx->deadline() <
                                   std::chrono::system_clock::now() + std::chrono::hours(24));
    }
  }
};

v1::JobEvent State(int64_t id, v1::Job::State from, v1::Job::State to) {
  v1::JobEvent e;
  e.set_event_id(id);
  e.mutable_state_changed()->set_previous_state(from);
  e.mutable_state_changed()->set_state(to);
  return e;
}

v1::JobEvent Step(int64_t id, int64_t step) {
  v1::JobEvent e;
  e.set_event_id(id);
  e.mutable_step()->mutable_progress()->set_step(step);
  e.mutable_step()->mutable_progress()->set_total_steps(3);
  e.mutable_step()->mutable_metrics()->set_loss(1.0 / step);
  return e;
}

// Jobs: "job-ok" (ends SUCCEEDED), "job-fail" (FAILED), "job-cancel" (CANCELLED),
// "job-down" (every watch fails UNAVAILABLE). The first WatchJob of a job breaks with
// UNAVAILABLE after 2 events when drop_first_watch is set.
class FakeJobs final : public v1::JobService::Service {
 public:
  explicit FakeJobs(Record* rec) : rec_(rec) {}
  std::atomic<bool> drop_first_watch{true};

  std::vector<v1::JobEvent> Events(const std::string& id) {
    v1::Job::State end = id == "job-fail"     ? v1::Job::FAILED
                         : id == "job-cancel" ? v1::Job::CANCELLED
                                              : v1::Job::SUCCEEDED;
    return {State(1, v1::Job::STATE_UNSPECIFIED, v1::Job::QUEUED),
            State(2, v1::Job::QUEUED, v1::Job::RUNNING), Step(3, 1), Step(4, 2), Step(5, 3),
            State(6, v1::Job::RUNNING, end)};
  }

  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                      v1::Job* job) override {
    rec_->Saw(ctx, true);
    if (req->id().rfind("job-", 0) != 0) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "job " + req->id() + " not found");
    }
    job->set_id(req->id());
    const auto events = Events(req->id());
    job->set_state(events.back().state_changed().state());
    job->set_latest_event_id(events.back().event_id());
    if (job->state() == v1::Job::SUCCEEDED) {
      job->mutable_result()->set_name("bot");
      job->mutable_result()->set_version(2);
    }
    return grpc::Status::OK;
  }

  grpc::Status CreateJob(grpc::ServerContext* ctx, const v1::CreateJobRequest* req,
                         v1::Job* job) override {
    rec_->Saw(ctx, true);
    {
      absl::MutexLock l(&mu_);
      last_create_ = *req;
    }
    job->set_id("job-ok");
    job->set_state(v1::Job::QUEUED);
    *job->mutable_spec() = req->spec();
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    rec_->Saw(ctx, false);
    {
      absl::MutexLock l(&rec_->mu);
      rec_->watch_after.push_back(req->after_event_id());
    }
    if (req->id() == "job-down") return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
    if (req->id().rfind("job-", 0) != 0) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no");
    const bool drop = drop_first_watch.exchange(false);
    int sent = 0;
    for (v1::JobEvent e : Events(req->id())) {
      if (e.event_id() <= req->after_event_id()) continue;
      e.set_job_id(req->id());
      if (drop && sent == 2) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "simulated connection loss");
      }
      // Replays one already-delivered event after a reconnect, as a racy server might; the
      // client must not deliver it twice.
      if (!drop && sent == 0 && req->after_event_id() > 0) {
        v1::JobEvent old = Events(req->id())[req->after_event_id() - 1];
        writer->Write(old);
      }
      writer->Write(e);
      ++sent;
    }
    return grpc::Status::OK;
  }

  v1::CreateJobRequest last_create() {
    absl::MutexLock l(&mu_);
    return last_create_;
  }

 private:
  Record* rec_;
  absl::Mutex mu_;
  v1::CreateJobRequest last_create_ ABSL_GUARDED_BY(mu_);
};

class FakeDatasets final : public v1::DatasetService::Service {
 public:
  explicit FakeDatasets(Record* rec) : rec_(rec) {}
  grpc::Status UploadDataset(grpc::ServerContext* ctx,
                             grpc::ServerReader<v1::UploadDatasetRequest>* reader,
                             v1::Dataset* out) override {
    rec_->Saw(ctx, false);
    v1::UploadDatasetRequest msg;
    if (!reader->Read(&msg) || !msg.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no header first");
    }
    const v1::UploadDatasetHeader header = msg.header();
    std::string data;
    std::vector<size_t> chunks;
    while (reader->Read(&msg)) {
      if (msg.has_header()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "2nd header");
      chunks.push_back(msg.chunk().size());
      data += msg.chunk();
    }
    {
      absl::MutexLock l(&rec_->mu);
      rec_->upload_chunks = chunks;
    }
    if (static_cast<int64_t>(data.size()) != header.size_bytes() ||
        Sha256(data) != header.sha256()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "size or sha256 mismatch");
    }
    out->set_id("ds-1");
    out->set_name(header.name());
    out->set_sha256(header.sha256());
    out->set_size_bytes(header.size_bytes());
    out->set_format(header.format());
    return grpc::Status::OK;
  }

 private:
  Record* rec_;
};

// Adapter "bot": two files; version 2 is fine, version 3's second file is corrupt on the wire.
class FakeAdapters final : public v1::AdapterService::Service {
 public:
  explicit FakeAdapters(Record* rec) : rec_(rec) {}
  grpc::Status DownloadAdapter(grpc::ServerContext* ctx, const v1::DownloadAdapterRequest* req,
                               grpc::ServerWriter<v1::DownloadAdapterResponse>* writer) override {
    rec_->Saw(ctx, false);
    if (req->ref().name() != "bot") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no adapter");
    const std::string big(2'500'000, 'w');
    const std::vector<std::pair<std::string, std::string>> files = {
        {"adapter_config.json", "{\"peft_type\": \"OFT\"}"}, {"adapter_model.safetensors", big}};
    for (const auto& [name, content] : files) {
      if (!req->file_names().empty() &&
          std::find(req->file_names().begin(), req->file_names().end(), name) ==
              req->file_names().end()) {
        continue;
      }
      v1::DownloadAdapterResponse h;
      h.mutable_file_header()->set_name(name);
      h.mutable_file_header()->set_size_bytes(static_cast<int64_t>(content.size()));
      h.mutable_file_header()->set_sha256(Sha256(content));
      writer->Write(h);
      std::string wire = content;
      if (req->ref().version() == 3 && name == "adapter_model.safetensors") wire[100] ^= 1;
      for (size_t off = 0; off < wire.size(); off += 1 << 20) {
        v1::DownloadAdapterResponse c;
        c.set_chunk(wire.substr(off, 1 << 20));
        writer->Write(c);
      }
    }
    return grpc::Status::OK;
  }

 private:
  Record* rec_;
};

class FakeServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&jobs_);
    builder.RegisterService(&datasets_);
    builder.RegisterService(&adapters_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ClientOptions opts;
    opts.server = Address();
    opts.api_key = "k1";
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Create(opts);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
    dir_ = ::testing::TempDir() + "/h1_client_" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }
  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }

  // Runs oftctl in-process against the fake.
  int Oftctl(std::vector<std::string> args, std::string* out, std::string* err,
             bool tty = false) {
    std::ostringstream o, e;
    CliEnv env;
    env.out_is_tty = tty;
    env.terminal_width = 100;
    env.out = &o;
    env.err = &e;
    env.server_env = Address();
    env.api_key_env = "k1";
    const int code = RunOftctl(args, env);
    *out = o.str();
    *err = e.str();
    return code;
  }

  Record rec_;
  FakeJobs jobs_{&rec_};
  FakeDatasets datasets_{&rec_};
  FakeAdapters adapters_{&rec_};
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Client> client_;
  std::string dir_;
};

TEST_F(FakeServerTest, UnaryCallsSendBearerKeyAndDeadline) {
  absl::StatusOr<v1::Job> job = client_->GetJob("job-ok");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::Job::SUCCEEDED);
  absl::StatusOr<v1::Job> missing = client_->GetJob("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "job nope not found");
  absl::MutexLock l(&rec_.mu);
  EXPECT_THAT(rec_.auth, ElementsAre("Bearer k1", "Bearer k1"));
  EXPECT_THAT(rec_.unary_has_deadline, ElementsAre(true, true));
}

TEST_F(FakeServerTest, WatchReconnectsAndDeliversEachEventOnce) {
  std::vector<int64_t> ids;
  WatchOptions wo;
  wo.backoff = absl::Milliseconds(1);
  absl::Status s = client_->WatchJob(
      "job-ok", 0, [&](const v1::JobEvent& e) { ids.push_back(e.event_id()); return true; }, wo);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(ids, ElementsAre(1, 2, 3, 4, 5, 6));
  absl::MutexLock l(&rec_.mu);
  EXPECT_THAT(rec_.watch_after, ElementsAre(0, 2));  // resumed after the last event seen
}

TEST_F(FakeServerTest, WatchStopsWhenCallbackSaysSo) {
  jobs_.drop_first_watch = false;
  std::vector<int64_t> ids;
  absl::Status s = client_->WatchJob("job-ok", 1, [&](const v1::JobEvent& e) {
    ids.push_back(e.event_id());
    return ids.size() < 2;
  });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(ids, ElementsAre(2, 3));
}

TEST_F(FakeServerTest, WatchAfterTerminalEventReturnsOk) {
  jobs_.drop_first_watch = false;
  int calls = 0;
  absl::Status s = client_->WatchJob("job-ok", 6, [&](const v1::JobEvent&) { return ++calls; });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(calls, 0);
}

TEST_F(FakeServerTest, WatchGivesUpAfterMaxReconnects) {
  WatchOptions wo;
  wo.max_reconnects = 3;
  wo.backoff = absl::Milliseconds(1);
  absl::Status s = client_->WatchJob("job-down", 0, [](const v1::JobEvent&) { return true; }, wo);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  absl::MutexLock l(&rec_.mu);
  EXPECT_EQ(rec_.watch_after.size(), 4u);  // first try + 3 reconnects
}

TEST_F(FakeServerTest, WatchDoesNotRetryNotFound) {
  absl::Status s = client_->WatchJob("nope", 0, [](const v1::JobEvent&) { return true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  absl::MutexLock l(&rec_.mu);
  EXPECT_EQ(rec_.watch_after.size(), 1u);
}

TEST_F(FakeServerTest, UploadStreamsHeaderThenMiBChunks) {
  const std::string path = dir_ + "/train.jsonl";
  std::string content;
  while (content.size() < 2'600'000) content += "{\"text\": \"hello world\"}\n";
  std::ofstream(path, std::ios::binary) << content;
  absl::StatusOr<v1::Dataset> ds =
      client_->UploadDataset(path, "train", v1::DATASET_FORMAT_TEXT);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->sha256(), Sha256(content));
  EXPECT_EQ(ds->size_bytes(), static_cast<int64_t>(content.size()));
  EXPECT_EQ(ds->format(), v1::DATASET_FORMAT_TEXT);
  {
    absl::MutexLock l(&rec_.mu);
    ASSERT_EQ(rec_.upload_chunks.size(), 3u);
    EXPECT_EQ(rec_.upload_chunks[0], size_t{1} << 20);
    EXPECT_EQ(rec_.auth.back(), "Bearer k1");
  }
  absl::StatusOr<v1::Dataset> mem = client_->UploadDatasetBytes("{\"text\": \"a\"}\n", "small");
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_EQ(client_->UploadDataset(dir_ + "/missing.jsonl", "x").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(FakeServerTest, DownloadVerifiesAndWritesFiles) {
  v1::AdapterVersionRef ref;
  ref.set_name("bot");
  ref.set_version(2);
  absl::StatusOr<std::vector<v1::AdapterFile>> files =
      client_->DownloadAdapter(ref, dir_ + "/out");
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 2u);
  std::ifstream in(dir_ + "/out/adapter_model.safetensors", std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, std::string(2'500'000, 'w'));
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/out")) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 2);  // no temp files left

  // Only the named files.
  files = client_->DownloadAdapter(ref, dir_ + "/one", {"adapter_config.json"});
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 1u);
  EXPECT_EQ((*files)[0].name(), "adapter_config.json");
}

TEST_F(FakeServerTest, DownloadChecksumMismatchIsDataLossAndRemovesPartialFile) {
  v1::AdapterVersionRef ref;
  ref.set_name("bot");
  ref.set_version(3);
  absl::StatusOr<std::vector<v1::AdapterFile>> files =
      client_->DownloadAdapter(ref, dir_ + "/bad");
  ASSERT_EQ(files.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(files.status().message(), HasSubstr("adapter_model.safetensors"));
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/bad")) {
    names.push_back(e.path().filename().string());
  }
  EXPECT_THAT(names, ElementsAre("adapter_config.json"));  // the good file; nothing partial
}

TEST_F(FakeServerTest, OftctlWatchExitCodesFollowFinalState) {
  std::string out, err;
  jobs_.drop_first_watch = false;
  EXPECT_EQ(Oftctl({"watch", "job-ok"}, &out, &err), 0) << err;
  EXPECT_THAT(out, HasSubstr("#6 state RUNNING -> SUCCEEDED"));
  EXPECT_THAT(out, HasSubstr("job-ok SUCCEEDED: published bot:2"));
  EXPECT_EQ(Oftctl({"watch", "job-fail"}, &out, &err), 3) << err;
  EXPECT_THAT(out, HasSubstr("FAILED"));
  EXPECT_EQ(Oftctl({"watch", "job-cancel", "--after=5"}, &out, &err), 4) << err;
  EXPECT_THAT(out, ::testing::Not(HasSubstr("#5 ")));
  EXPECT_EQ(Oftctl({"--json", "watch", "job-ok", "--after", "4"}, &out, &err), 0) << err;
  EXPECT_THAT(out, HasSubstr("\"eventId\":\"5\""));
}

TEST_F(FakeServerTest, OftctlWatchOnTerminalRedrawsOneLine) {
  jobs_.drop_first_watch = false;
  std::string out, err;
  EXPECT_EQ(Oftctl({"watch", "job-ok"}, &out, &err, /*tty=*/true), 0) << err;
  // Step events redraw the bar in place; other events print a line above it.
  EXPECT_THAT(out, HasSubstr("\rRUNNING [##########"));
  EXPECT_THAT(out, HasSubstr("3/3 100% loss 0.3333"));
  EXPECT_THAT(out, HasSubstr("\x1b[K"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("#3 step")));
  EXPECT_THAT(out, HasSubstr("#6 state RUNNING -> SUCCEEDED\n"));
  EXPECT_THAT(out, HasSubstr("job-ok SUCCEEDED: published bot:2\n"));
}

TEST_F(FakeServerTest, OftctlErrorsAndUsage) {
  std::string out, err;
  EXPECT_EQ(Oftctl({"status", "nope"}, &out, &err), 1);
  EXPECT_EQ(err, "oftctl: NOT_FOUND: job nope not found\n");
  EXPECT_EQ(Oftctl({"status"}, &out, &err), 2);
  EXPECT_EQ(Oftctl({"frobnicate"}, &out, &err), 2);
  EXPECT_EQ(Oftctl({"status", "job-ok", "--bogus=1"}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("unknown flag --bogus"));
  EXPECT_EQ(Oftctl({"submit", "--max-steps=ten"}, &out, &err), 2);
  EXPECT_EQ(Oftctl({"download", "bot:x", "--out=/tmp"}, &out, &err), 2);
  EXPECT_EQ(Oftctl({"--help"}, &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("usage: oftctl"));
  // The usage lists every command of the table, with its synopsis.
  for (const char* line : {"  upload FILE --name=N", "  watch JOB [--after=EVENT_ID]",
                           "  alias set ALIAS NAME[:VERSION] | delete ALIAS", "  loaded",
                           "  delete-dataset ID"}) {
    EXPECT_THAT(out, HasSubstr(line));
  }
  EXPECT_EQ(Oftctl({"--version"}, &out, &err), 0);
  EXPECT_THAT(out, ::testing::StartsWith("oftctl "));
  // Wrong argument counts name the command's synopsis.
  EXPECT_EQ(Oftctl({"watch", "a", "b"}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("usage: oftctl watch JOB"));
  EXPECT_EQ(Oftctl({"alias", "frob", "x"}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("alias set ALIAS"));
  EXPECT_EQ(Oftctl({"status", "job-ok", "--json"}, &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("\"id\": \"job-ok\""));
}

TEST_F(FakeServerTest, OftctlMissingLocalFileExitsSixNotTheRpcErrorCode) {
  std::string out, err;
  const std::string missing = dir_ + "/no-such-file.jsonl";
  EXPECT_EQ(Oftctl({"upload", missing, "--name=x"}, &out, &err), 6);
  EXPECT_THAT(err, HasSubstr("cannot read " + missing));
  EXPECT_EQ(Oftctl({"submit", "--file=" + missing}, &out, &err), 6);
  EXPECT_THAT(err, HasSubstr(missing));
  EXPECT_EQ(Oftctl({"generate", "--adapter=bot:1", "--chat-file=" + missing}, &out, &err), 6);
  EXPECT_EQ(Oftctl({"status", "job-ok", "--tls", "--ca-cert=" + missing}, &out, &err), 6);
  EXPECT_THAT(err, HasSubstr("cannot read " + missing));
  {
    absl::MutexLock l(&rec_.mu);
    EXPECT_TRUE(rec_.upload_chunks.empty()) << "an unreadable file must not reach the server";
  }
  // An RPC error stays 1.
  EXPECT_EQ(Oftctl({"status", "nope"}, &out, &err), 1);
  EXPECT_EQ(Oftctl({"--help"}, &out, &err), 0);
  EXPECT_THAT(out, HasSubstr("6 a local file"));
}

TEST_F(FakeServerTest, OftctlSubmitMergesFileAndFlags) {
  const std::string job = dir_ + "/job.yaml";
  std::ofstream(job) << "base_model: default\ntraining_dataset_ids: [ds-1]\n"
                        "output_adapter_name: bot\nhyperparameters:\n  max_steps: 10\n";
  std::string out, err;
  ASSERT_EQ(Oftctl({"submit", "--file=" + job, "--epochs=2", "--dataset", "ds-2",
                    "--idempotency-key=abc"},
                   &out, &err),
            0)
      << err;
  EXPECT_THAT(out, HasSubstr("submitted job-ok (QUEUED)"));
  const v1::CreateJobRequest req = jobs_.last_create();
  EXPECT_EQ(req.idempotency_key(), "abc");
  EXPECT_EQ(req.spec().base_model(), "default");
  EXPECT_THAT(req.spec().training_dataset_ids(), ElementsAre("ds-2"));
  EXPECT_EQ(req.spec().hyperparameters().epochs(), 2);
  EXPECT_FALSE(req.spec().hyperparameters().has_max_steps());

  std::ofstream(job) << "base_model: default\nhyperparameters:\n  max_step: 10\n";
  EXPECT_EQ(Oftctl({"submit", "--file=" + job}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr(job + ":3: unknown key \"max_step\""));
}

TEST_F(FakeServerTest, OftctlDownloadChecksumMismatchExitsFive) {
  std::string out, err;
  EXPECT_EQ(Oftctl({"download", "bot:2", "--out=" + dir_ + "/d2"}, &out, &err), 0) << err;
  EXPECT_THAT(out, HasSubstr("adapter_model.safetensors"));
  EXPECT_EQ(Oftctl({"download", "bot:3", "--out=" + dir_ + "/d3"}, &out, &err), 5);
  EXPECT_THAT(err, HasSubstr("oftctl: DATA_LOSS: "));
}

TEST(ClientOptionsTest, CreateValidatesTlsFiles) {
  ClientOptions o;
  o.client_cert_file = "/nonexistent.pem";
  EXPECT_EQ(Client::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.tls = true;
  EXPECT_EQ(Client::Create(o).status().code(), absl::StatusCode::kInvalidArgument);  // no key
  o.client_key_file = "/nonexistent.key";
  EXPECT_EQ(Client::Create(o).status().code(), absl::StatusCode::kNotFound);
}

TEST(AdapterRefTest, ParseAndFormat) {
  absl::StatusOr<v1::AdapterVersionRef> r = ParseAdapterRef("bot:3");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->name(), "bot");
  EXPECT_EQ(r->version(), 3);
  EXPECT_EQ(FormatAdapterRef(*r), "bot:3");
  EXPECT_EQ(ParseAdapterRef("bot")->version(), 0);
  EXPECT_EQ(ParseAdapterRef("bot:latest")->version(), 0);
  EXPECT_FALSE(ParseAdapterRef("bot:0").ok());
  EXPECT_FALSE(ParseAdapterRef(":3").ok());
  EXPECT_FALSE(ParseAdapterRef("bot:x").ok());
}

}  // namespace
}  // namespace oft
