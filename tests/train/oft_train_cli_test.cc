// oft_train's command line and job.json (issue 16): every option is honoured or rejected by
// name, a block size PEFT's divisor rule changes is announced, and max_steps / epochs follow
// one stated rule.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "tests/train/child_process.h"
#include "tests/train/tiny_model.h"

namespace oft {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct Result {
  int exit_code = -1;
  std::vector<nlohmann::json> events;
  std::string err;
};

class OftTrainCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / "oft_train_cli";  // private (test main)
    fs::remove_all(root_);
    fs::create_directories(root_ / "model");
    ASSERT_TRUE(testing::WriteTinyModelDir((root_ / "model").string()).ok());
    ASSERT_TRUE(WriteFileAtomic((root_ / "train.jsonl").string(),
                                testing::RowsToJsonl(testing::RepetitiveRows(8))).ok());
  }

  Result Run(const std::vector<std::string>& extra, const std::string& config_json = "") {
    std::vector<std::string> args = {OFT_TRAIN_BINARY, "--model_dir=" + (root_ / "model").string(),
                                     "--train=" + (root_ / "train.jsonl").string(),
                                     "--out=" + (root_ / "out").string(), "--threads=1",
                                     "--batch_size=2", "--max_seq_len=32"};
    if (!config_json.empty()) {
      std::ofstream(root_ / "job.json") << config_json;
      args.push_back("--config=" + (root_ / "job.json").string());
    }
    args.insert(args.end(), extra.begin(), extra.end());
    const std::string err_path = (root_ / "stderr.txt").string();
    testing::Child c = testing::Spawn(args, err_path);
    Result r;
    r.events = testing::ReadEvents(c, nullptr);
    r.exit_code = testing::Wait(c);
    std::ifstream in(err_path);
    std::stringstream ss;
    ss << in.rdbuf();
    r.err = ss.str();
    return r;
  }

  static std::string ErrorOf(const Result& r) {
    for (const auto& e : r.events) {
      if (e.value("kind", "") == "error") return e.value("message", "");
    }
    return "";
  }

  fs::path root_;
};

TEST_F(OftTrainCliTest, UnknownOrMistypedJobKeysAreRejectedByName) {
  Result r = Run({"--max_steps=1"}, R"({"oft_blocksize": 8})");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(ErrorOf(r), HasSubstr("unknown key \"oft_blocksize\""));
  r = Run({"--max_steps=1"}, R"({"block_share": "yes"})");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(ErrorOf(r), HasSubstr("\"block_share\" must be true or false"));
  r = Run({"--max_steps=1", "--num_cayley_neumann_terms=many"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(ErrorOf(r), HasSubstr("num_cayley_neumann_terms"));
  EXPECT_FALSE(fs::exists(root_ / "out" / "adapter_config.json"));
}

TEST_F(OftTrainCliTest, AdapterOptionsFromJobJsonAreHonoured) {
  Result r = Run({"--max_steps=1"},
                 R"({"oft_block_size": 8, "block_share": true, "coft": true, "eps": 0.0001,
                     "use_cayley_neumann": false, "num_cayley_neumann_terms": 3,
                     "target_modules": ["q_proj", "v_proj"]})");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto text = ReadFile((root_ / "out" / "adapter_config.json").string());
  ASSERT_TRUE(text.ok()) << text.status();
  const nlohmann::json cfg = nlohmann::json::parse(*text);
  EXPECT_EQ(cfg.value("block_share", false), true) << cfg.dump();
  EXPECT_EQ(cfg.value("coft", false), true);
  EXPECT_DOUBLE_EQ(cfg.value("eps", 0.0), 0.0001);
  EXPECT_EQ(cfg.value("use_cayley_neumann", true), false);
  EXPECT_EQ(cfg.value("oft_block_size", 0), 8);
}

TEST_F(OftTrainCliTest, AdjustedBlockSizeIsAnnounced) {
  // 12 divides neither 32 (hidden) nor 64 (intermediate): PEFT's rule picks 8 for both.
  Result r = Run({"--max_steps=1", "--oft_block_size=12"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("oft_train: warning: oft_block_size 12 does not divide in_features 32"));
  EXPECT_THAT(r.err, HasSubstr("does not divide in_features 64"));
  int warnings = 0;
  for (const auto& e : r.events) {
    if (e.value("kind", "") == "warning" &&
        e.value("message", "").find("using block size 8") != std::string::npos) {
      ++warnings;
    }
  }
  EXPECT_EQ(warnings, 2);
  // A block size that divides everything says nothing.
  r = Run({"--max_steps=1", "--oft_block_size=8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("does not divide")));
}

TEST_F(OftTrainCliTest, MaxStepsAndEpochsTogetherAreRefused) {
  Result r = Run({"--max_steps=2", "--epochs=1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(ErrorOf(r), HasSubstr("exactly one of max_steps and epochs"));
  // Naming one selects it.
  r = Run({"--epochs=1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace oft
