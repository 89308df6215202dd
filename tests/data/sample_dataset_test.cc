// The sample dataset shipped in data/sample/ (scripts/make_sample_dataset.py)
// must pass the same validation as an uploaded one.
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "server/data/batching.h"
#include "server/data/dataset.h"
#include "tests/data/fake_text_encoder.h"

namespace oft {
namespace {

const std::string kDir = OFT_SAMPLE_DATA_DIR;

TEST(SampleDatasetTest, BothFilesValidateAndFollowTheTemplate) {
  std::set<std::string> train_prompts;
  for (const char* name : {"train.jsonl", "valid.jsonl"}) {
    SCOPED_TRACE(name);
    const std::string path = kDir + "/" + name;
    EXPECT_LT(std::filesystem::file_size(path), 200u * 1024);
    absl::StatusOr<std::vector<Example>> examples = ParseJsonlFile(path);
    ASSERT_TRUE(examples.ok()) << examples.status();
    const bool train = absl::StrContains(name, "train");
    EXPECT_GE(examples->size(), train ? 200u : 30u);
    EXPECT_LE(examples->size(), train ? 400u : 40u);
    for (const Example& e : *examples) {
      ASSERT_EQ(e.format, RowFormat::kPromptCompletion);
      EXPECT_TRUE(absl::StartsWith(e.prompt, "Question: ")) << e.prompt;
      EXPECT_TRUE(absl::EndsWith(e.prompt, "\nAnswer:")) << e.prompt;
      EXPECT_TRUE(absl::StartsWith(e.completion, " Beep boop! ")) << e.completion;
      EXPECT_TRUE(absl::EndsWith(e.completion, ". Beep boop!")) << e.completion;
      if (train) {
        EXPECT_TRUE(train_prompts.insert(e.prompt).second) << "duplicate: " << e.prompt;
      } else {
        EXPECT_EQ(train_prompts.count(e.prompt), 0u) << "valid row also in train: " << e.prompt;
      }
    }
    // Short enough that no row is truncated at a small max_seq_len.
    testing::FakeByteEncoder encoder(testing::FakeByteEncoder::kBos,
                                     testing::FakeByteEncoder::kEos);
    TokenizeOptions options;
    options.max_seq_len = 256;
    TokenizeStats stats;
    ASSERT_TRUE(TokenizeExamples(*examples, encoder, options, &stats).ok());
    EXPECT_EQ(stats.truncated, 0);
  }
}

}  // namespace
}  // namespace oft
