// AdapterService.ImportAdapter against the real oft_server (issue 12, "Beyond one machine":
// how an adapter trained outside the server reaches its store). One server per suite; an
// adapter trained by a 4-step job there is downloaded once and re-imported, intact or broken:
// a good import round-trips byte for byte and generates exactly what the trained version
// generates; a bad config field, a mis-shaped tensor and a NaN are refused naming the field or
// tensor; an unknown base model is NOT_FOUND; the size limit names the file; a stream cut
// midway leaves no version and no staging files; another tenant cannot see an import; oftctl
// import-adapter exits 6 on a missing local file. End to end: oft_train run as 2 ranks
// (torchrun variables, Gloo over loopback) on the server's base model directory, imported with
// oftctl, generates through the server exactly what oft_generate --adapter_dir generates.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "oft/v1/adapters.grpc.pb.h"
#include "tests/integration/job_util.h"
#include "tests/dist/rank_process.h"
#include "tests/integration/server_process.h"

namespace oft::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kConfig[] = "adapter_config.json";
constexpr char kWeights[] = "adapter_model.safetensors";

v1::AdapterVersionRef Ref(const std::string& name, int64_t version) {
  v1::AdapterVersionRef r;
  r.set_name(name);
  r.set_version(version);
  return r;
}

v1::ImportAdapterMetadata Meta(const std::string& name, const std::string& base = "default") {
  v1::ImportAdapterMetadata m;
  m.set_name(name);
  m.set_base_model(base);
  m.set_description("trained elsewhere");
  return m;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// A safetensors file split into its JSON header and its data.
struct Safetensors {
  nlohmann::json header;
  size_t header_bytes = 0;
  std::string data;

  static Safetensors Parse(const std::string& bytes) {
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    Safetensors s;
    s.header_bytes = static_cast<size_t>(n);
    s.header = nlohmann::json::parse(bytes.substr(8, s.header_bytes));
    s.data = bytes.substr(8 + s.header_bytes);
    return s;
  }
  std::string Serialize() const {
    std::string h = header.dump();
    if (h.size() < header_bytes) h.resize(header_bytes, ' ');  // keep the data aligned
    const uint64_t n = h.size();
    std::string out(8, '\0');
    std::memcpy(out.data(), &n, 8);
    return out + h + data;
  }
  // The first tensor's name (the header is sorted; "__metadata__" skipped).
  std::string FirstTensor() const {
    for (const auto& [k, v] : header.items()) {
      if (k != "__metadata__") return k;
    }
    return "";
  }
};

// The module a tensor name belongs to: "base_model.model.<module>.oft_R.weight" -> <module>.
std::string ModuleOf(const std::string& tensor) {
  const std::string prefix = "base_model.model.";
  const std::string suffix = ".oft_R.weight";
  return tensor.substr(prefix.size(), tensor.size() - prefix.size() - suffix.size());
}

class ImportAdapterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    server_ = new ServerProcess(ServerProcessOptions{
        .data_dir = dir_->Sub("data"), .api_keys = {AliceFlag(), BobFlag()}});
    ASSERT_TRUE(server_->Start().ok()) << server_->LogTail();
    std::unique_ptr<Client> alice = server_->NewClient(kAliceKey);
    absl::StatusOr<v1::Dataset> ds = alice->UploadDatasetBytes(SampleTrainHead(64), "train");
    ASSERT_TRUE(ds.ok()) << ds.status();
    v1::CreateJobRequest req;
    *req.mutable_spec() = SmallSpec(ds->id(), "trained", 4);
    absl::StatusOr<v1::Job> job = alice->CreateJob(req);
    ASSERT_TRUE(job.ok()) << job.status();
    ASSERT_TRUE(WaitForState(*alice, job->id(), v1::Job::SUCCEEDED, absl::Seconds(90)).ok())
        << server_->LogTail();
    ASSERT_TRUE(alice->DownloadAdapter(Ref("trained", 1), Trained(), {kConfig, kWeights}).ok());
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    alice_ = server_->NewClient(kAliceKey);
  }

  static std::string Trained() { return dir_->Sub("trained"); }
  // A copy of the trained adapter in a fresh directory, to break.
  static std::string CopyOfTrained(const std::string& name) {
    const std::string d = dir_->Sub(name);
    fs::create_directories(d);
    for (const char* f : {kConfig, kWeights}) {
      fs::copy_file(fs::path(Trained()) / f, fs::path(d) / f, fs::copy_options::overwrite_existing);
    }
    return d;
  }
  // Whether nothing of an import is left on the server's disk.
  static bool NoStagingLeft() {
    const fs::path imports = fs::path(server_->data_dir()) / "imports";
    std::error_code ec;
    return !fs::exists(imports, ec) || fs::is_empty(imports, ec);
  }
  std::vector<int64_t> GreedyTokens(const std::string& name, int64_t version) {
    v1::GenerateRequest req;
    req.set_text("Question: What is the opposite of hot?\nAnswer:");
    req.set_max_tokens(12);
    req.set_temperature(0);
    *req.mutable_adapter_ref() = Ref(name, version);
    std::vector<int64_t> tokens;
    absl::Status st = alice_->Generate(req, [&](const v1::GenerateResponse& r) {
      tokens.insert(tokens.end(), r.token_ids().begin(), r.token_ids().end());
      return true;
    });
    EXPECT_TRUE(st.ok()) << st;
    return tokens;
  }
  // Importing `dir` as `name` is INVALID_ARGUMENT naming `what` (not the staging path), and
  // leaves no version and no staging files.
  void ExpectRefusedNaming(const std::string& dir, const std::string& name, const std::string& what) {
    absl::Status st = alice_->ImportAdapter(dir, Meta(name)).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_THAT(st.message(), HasSubstr(what));
    EXPECT_THAT(st.message(), ::testing::Not(HasSubstr(".import-")));
    EXPECT_EQ(alice_->GetAdapter(Ref(name, 0)).status().code(), absl::StatusCode::kNotFound);
    EXPECT_TRUE(WaitUntil(NoStagingLeft, absl::Seconds(10)));  // removed as the call ends
  }
  // A raw ImportAdapter stream of alice's, its metadata sent (for streams the client library
  // never sends).
  struct RawImport {
    explicit RawImport(const std::string& name)
        : stub(v1::AdapterService::NewStub(
              grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()))) {
      ctx.AddMetadata("authorization", absl::StrCat("Bearer ", kAliceKey));
      writer = stub->ImportAdapter(&ctx, &out);
      v1::ImportAdapterRequest m;
      *m.mutable_metadata() = Meta(name);
      metadata_sent = writer->Write(m);
    }
    bool Header(const std::string& file, int64_t size) {
      v1::ImportAdapterRequest m;
      m.mutable_file_header()->set_name(file);
      m.mutable_file_header()->set_size_bytes(size);
      return writer->Write(m);
    }
    bool Chunk(const std::string& bytes) {
      v1::ImportAdapterRequest m;
      m.set_chunk(bytes);
      return writer->Write(m);
    }
    std::unique_ptr<v1::AdapterService::Stub> stub;
    grpc::ClientContext ctx;
    v1::Adapter out;
    std::unique_ptr<grpc::ClientWriter<v1::ImportAdapterRequest>> writer;
    bool metadata_sent = false;
  };

  static TempDir* dir_;
  static ServerProcess* server_;
  std::unique_ptr<Client> alice_;
};

TempDir* ImportAdapterTest::dir_ = nullptr;
ServerProcess* ImportAdapterTest::server_ = nullptr;

TEST_F(ImportAdapterTest, RoundTripPublishesNextVersionThatServesLikeTheOriginal) {
  absl::StatusOr<v1::Adapter> a = alice_->ImportAdapter(Trained(), Meta("imported"));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->ref().version(), 1);
  EXPECT_EQ(a->base_model(), "default");
  EXPECT_FALSE(a->base_model_config_sha256().empty());
  EXPECT_THAT(a->hyperparameters_json(), HasSubstr("trained elsewhere"));
  absl::StatusOr<v1::Adapter> again = alice_->ImportAdapter(Trained(), Meta("imported"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ref().version(), 2);

  const std::string out = dir_->Sub("roundtrip");
  ASSERT_TRUE(alice_->DownloadAdapter(Ref("imported", 1), out).ok());
  for (const char* f : {kConfig, kWeights}) {
    EXPECT_EQ(ReadFileOrDie(fs::path(out) / f), ReadFileOrDie(fs::path(Trained()) / f)) << f;
  }
  const std::vector<int64_t> trained = GreedyTokens("trained", 1);
  ASSERT_FALSE(trained.empty());
  EXPECT_EQ(GreedyTokens("imported", 1), trained);
  EXPECT_EQ(GreedyTokens("imported", 2), trained);
  EXPECT_TRUE(WaitUntil(NoStagingLeft, absl::Seconds(10)));  // removed as the call ends
}

TEST_F(ImportAdapterTest, AnotherTenantCannotSeeAnImport) {
  ASSERT_TRUE(alice_->ImportAdapter(Trained(), Meta("private")).ok());
  std::unique_ptr<Client> bob = server_->NewClient(kBobKey);
  EXPECT_EQ(bob->GetAdapter(Ref("private", 1)).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::vector<v1::Adapter>> listed = bob->ListAllAdapters("private");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_TRUE(listed->empty());
}

TEST_F(ImportAdapterTest, BadConfigFieldIsNamed) {
  const std::string d = CopyOfTrained("bad-config");
  nlohmann::json config = nlohmann::json::parse(ReadFileOrDie(fs::path(d) / kConfig));
  config["peft_type"] = "LORA";
  WriteBytes(fs::path(d) / kConfig, config.dump(2));
  ExpectRefusedNaming(d, "bad-config", "peft_type");
}

TEST_F(ImportAdapterTest, WrongTensorShapeIsNamed) {
  const std::string d = CopyOfTrained("bad-shape");
  Safetensors st = Safetensors::Parse(ReadFileOrDie(fs::path(d) / kWeights));
  const std::string tensor = st.FirstTensor();
  auto& shape = st.header[tensor]["shape"];
  ASSERT_EQ(shape.size(), 2u);
  const int64_t rows = shape[0], cols = shape[1];
  ASSERT_NE(rows, cols);
  shape = {cols, rows};  // same bytes, wrong shape
  WriteBytes(fs::path(d) / kWeights, st.Serialize());
  ExpectRefusedNaming(d, "bad-shape", ModuleOf(tensor));
}

TEST_F(ImportAdapterTest, NanTensorIsNamed) {
  const std::string d = CopyOfTrained("nan");
  Safetensors st = Safetensors::Parse(ReadFileOrDie(fs::path(d) / kWeights));
  const std::string tensor = st.FirstTensor();
  ASSERT_EQ(st.header[tensor]["dtype"].get<std::string>(), "F32");
  const size_t begin = st.header[tensor]["data_offsets"][0];
  const float nan = std::nanf("");
  std::memcpy(st.data.data() + begin, &nan, sizeof(nan));
  WriteBytes(fs::path(d) / kWeights, st.Serialize());
  ExpectRefusedNaming(d, "nan", tensor);
}

TEST_F(ImportAdapterTest, UnknownBaseModelIsNotFound) {
  absl::Status st = alice_->ImportAdapter(Trained(), Meta("orphan", "no-such-model")).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_THAT(st.message(), HasSubstr("metadata.base_model"));
  EXPECT_THAT(st.message(), HasSubstr("no-such-model"));
}

TEST_F(ImportAdapterTest, SizeLimitNamesTheFile) {
  RawImport call("too-big");
  call.Header(kConfig, int64_t{2} << 20);  // the config limit is 1 MiB
  call.writer->WritesDone();
  grpc::Status st = call.writer->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr(kConfig));
  EXPECT_THAT(st.error_message(), HasSubstr("limit"));
  EXPECT_TRUE(WaitUntil(NoStagingLeft, absl::Seconds(10)));
}

TEST_F(ImportAdapterTest, StreamCutMidwayLeavesNothing) {
  const std::string config = ReadFileOrDie(fs::path(Trained()) / kConfig);
  const std::string weights = ReadFileOrDie(fs::path(Trained()) / kWeights);
  {
    RawImport call("cut");
    ASSERT_TRUE(call.metadata_sent);
    // The config whole, the weights only half.
    ASSERT_TRUE(call.Header(kConfig, static_cast<int64_t>(config.size())));
    ASSERT_TRUE(call.Chunk(config));
    ASSERT_TRUE(call.Header(kWeights, static_cast<int64_t>(weights.size())));
    ASSERT_TRUE(call.Chunk(weights.substr(0, weights.size() / 2)));
    // The server now holds staging files for this import.
    EXPECT_TRUE(WaitUntil([] { return !NoStagingLeft(); }, absl::Seconds(10)));
    call.ctx.TryCancel();
    EXPECT_FALSE(call.writer->Finish().ok());
  }
  EXPECT_TRUE(WaitUntil(NoStagingLeft, absl::Seconds(10)));
  EXPECT_EQ(alice_->GetAdapter(Ref("cut", 0)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(fs::path(server_->data_dir()) / "adapters" / "alice" / "cut" / "1"));
}

TEST_F(ImportAdapterTest, OftctlImportsAndExitsSixOnAMissingFile) {
  const std::vector<std::string> common = {"--server=" + server_->address(),
                                           absl::StrCat("--api-key=", kAliceKey)};
  std::vector<std::string> argv = {OftctlBinary(), "import-adapter", Trained(), "--name=cli",
                                   "--base-model=default"};
  argv.insert(argv.end(), common.begin(), common.end());
  CommandResult ok = RunCommand(argv);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("imported cli:1"));

  const std::string empty = dir_->Sub("empty");
  fs::create_directories(empty);
  argv[2] = empty;
  CommandResult missing = RunCommand(argv);
  EXPECT_EQ(missing.exit_code, 6) << missing.err;
  EXPECT_THAT(missing.err, HasSubstr(kConfig));

  argv[2] = Trained();
  argv[4] = "--base-model=no-such-model";
  CommandResult refused = RunCommand(argv);
  EXPECT_EQ(refused.exit_code, 1) << refused.err;
  EXPECT_THAT(refused.err, HasSubstr("NOT_FOUND"));
}

TEST_F(ImportAdapterTest, TwoRankOftTrainAdapterServesLikeOftGenerate) {
  const std::string model_dir = SourceDir() + "/models/default";
  const std::string out = dir_->Sub("dist-adapter");
  const int port = FreePort();
  CommandResult ranks[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      ranks[r] = RunCommand({OFT_TRAIN_BINARY, "--model_dir=" + model_dir,
                             "--train=" + SourceDir() + "/data/sample/train.jsonl", "--out=" + out,
                             "--threads=1", "--max_steps=4", "--batch_size=4", "--learning_rate=0.004",
                             "--max_seq_len=64", "--seed=7", "--checkpoint_every=0",
                             "--dist_timeout_seconds=60"},
                            RankEnv(r, 2, port), absl::Seconds(150));
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < 2; ++r) ASSERT_EQ(ranks[r].exit_code, 0) << "rank " << r << ": " << ranks[r].err;

  CommandResult imported = RunCommand({OftctlBinary(), "import-adapter", out, "--name=dist",
                                       "--base-model=default", "--server=" + server_->address(),
                                       absl::StrCat("--api-key=", kAliceKey)});
  ASSERT_EQ(imported.exit_code, 0) << imported.err;
  EXPECT_THAT(imported.out, HasSubstr("imported dist:1"));

  constexpr char kPrompt[] = "Question: What is the opposite of hot? Answer:";
  CommandResult local = RunCommand({OFT_GENERATE_BINARY, "--model_dir=" + model_dir,
                                    "--adapter_dir=" + out, "--max_tokens=12", "--temperature=0",
                                    "--threads=1", kPrompt},
                                   {}, absl::Seconds(120));
  ASSERT_EQ(local.exit_code, 0) << local.err;
  const std::string expected = nlohmann::json::parse(local.out)["completion"].get<std::string>();
  ASSERT_FALSE(expected.empty());

  v1::GenerateRequest req;
  req.set_text(kPrompt);
  req.set_max_tokens(12);
  req.set_temperature(0);
  *req.mutable_adapter_ref() = Ref("dist", 1);
  std::string served;
  absl::Status st = alice_->Generate(req, [&](const v1::GenerateResponse& r) {
    served += r.text_delta();
    return true;
  });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(served, expected);

  // The adapter matters: the base model alone says something else.
  req.clear_adapter_ref();
  std::string base;
  ASSERT_TRUE(alice_->Generate(req, [&](const v1::GenerateResponse& r) {
                       base += r.text_delta();
                       return true;
                     }).ok());
  EXPECT_NE(base, expected);
}

}  // namespace
}  // namespace oft::testing
