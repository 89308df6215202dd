#include "server/model/tokenizer/bpe_model.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<BpeModel> Parse(const std::string& json) {
  auto m = BpeModel::Parse(Json::parse(json), "model");
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

std::vector<int32_t> Tokenize(const BpeModel& m, const std::string& word) {
  std::vector<int32_t> ids;
  m.Tokenize(word, &ids);
  return ids;
}

TEST(BpeModelTest, MergesApplyByRankNotByPosition) {
  // "abc": (b c) has a lower rank than (a b), so "a" + "bc" wins over "ab" + "c".
  auto m = Parse(R"({"vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4},
                     "merges": ["b c", "a b"]})");
  EXPECT_THAT(Tokenize(*m, "abc"), ElementsAre(0, 4));
  EXPECT_THAT(Tokenize(*m, "ab"), ElementsAre(3));
  EXPECT_THAT(Tokenize(*m, ""), ElementsAre());
  EXPECT_EQ(m->max_id(), 4);
  EXPECT_EQ(*m->IdToToken(3), "ab");
  EXPECT_EQ(m->IdToToken(9), nullptr);
}

TEST(BpeModelTest, MergesAsPairsAndRepeatedPairKeepsLastRank) {
  auto m = Parse(R"({"vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4},
                     "merges": [["a", "b"], ["b", "c"], ["a", "b"]]})");
  EXPECT_THAT(Tokenize(*m, "abc"), ElementsAre(0, 4));  // (a b) now ranks after (b c).
}

TEST(BpeModelTest, UnknownCharactersUseUnkAndFuseUnk) {
  const char* vocab = R"("vocab": {"<unk>": 0, "a": 1}, "merges": [], "unk_token": "<unk>")";
  auto plain = Parse(std::string("{") + vocab + "}");
  EXPECT_THAT(Tokenize(*plain, "xya"), ElementsAre(0, 0, 1));
  auto fused = Parse(std::string("{") + vocab + R"(, "fuse_unk": true})");
  EXPECT_THAT(Tokenize(*fused, "xya"), ElementsAre(0, 1));
  auto none = Parse(R"({"vocab": {"a": 1}, "merges": []})");
  EXPECT_THAT(Tokenize(*none, "xa"), ElementsAre(1));  // No unk: unknown characters vanish.
}

TEST(BpeModelTest, ByteFallbackSpellsUnknownCharactersAsBytes) {
  auto m = Parse(R"({"vocab": {"<unk>": 0, "<0xC3>": 1, "<0xA9>": 2, "a": 3},
                     "merges": [], "unk_token": "<unk>", "byte_fallback": true})");
  EXPECT_THAT(Tokenize(*m, "aé"), ElementsAre(3, 1, 2));
  EXPECT_THAT(Tokenize(*m, "ü"), ElementsAre(0));  // <0xC3> <0xBC>: one byte missing.
}

TEST(BpeModelTest, IgnoreMergesTakesWholeWordsFromTheVocab) {
  auto m = Parse(R"({"vocab": {"a": 0, "b": 1, "ab": 2, "abab": 3}, "merges": ["a b"],
                     "ignore_merges": true})");
  EXPECT_THAT(Tokenize(*m, "abab"), ElementsAre(3));
  EXPECT_THAT(Tokenize(*m, "aba"), ElementsAre(2, 0));
}

TEST(BpeModelTest, SubwordPrefixAndSuffix) {
  auto m = Parse(R"({"vocab": {"a": 0, "##b": 1, "ab": 2, "c</w>": 3},
                     "merges": ["a ##b"], "continuing_subword_prefix": "##"})");
  EXPECT_THAT(Tokenize(*m, "ab"), ElementsAre(2));
  auto s = Parse(R"({"vocab": {"c": 0, "c</w>": 1}, "merges": [],
                     "end_of_word_suffix": "</w>"})");
  EXPECT_THAT(Tokenize(*s, "cc"), ElementsAre(0, 1));
}

TEST(BpeModelTest, ErrorsNameThePath) {
  auto m =
      BpeModel::Parse(Json::parse(R"({"vocab": {"a": 0, "b": 1}, "merges": ["a b"]})"), "model");
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(),
              HasSubstr("model.merges[0]: token \"ab\" is not in model.vocab"));
  m = BpeModel::Parse(Json::parse(R"({"vocab": [], "merges": []})"), "model");
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("model.vocab: expected an object"));
  m = BpeModel::Parse(Json::parse(R"({"vocab": {"a": 0}, "merges": [], "dropout": 0.5})"), "model");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace oft::tokenizer
