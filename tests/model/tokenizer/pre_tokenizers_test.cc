#include "server/model/tokenizer/pre_tokenizers.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Apply(const char* json, const std::string& text) {
  auto p = ParsePreTokenizer(Json::parse(json), "pre_tokenizer");
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return {};
  std::vector<Piece> pieces = {{text, true}};
  (*p)->PreTokenize(&pieces);
  std::vector<std::string> out;
  for (const Piece& piece : pieces) out.push_back(piece.text);
  return out;
}

std::vector<std::string> Split(const std::string& text, std::vector<Match> matches,
                               SplitBehavior behavior, bool invert = false) {
  std::vector<Piece> out;
  SplitPiece({text, true}, matches, behavior, invert, &out);
  std::vector<std::string> texts;
  for (const Piece& p : out) texts.push_back(p.text);
  return texts;
}

TEST(PreTokenizersTest, SplitBehaviorsMatchNormalizedStringSplit) {
  // "a-b-" split at each "-" (tokenizers' NormalizedString::split documentation example).
  const std::vector<Match> dashes = {{1, 2}, {3, 4}};
  EXPECT_THAT(Split("a-b-", dashes, SplitBehavior::kRemoved), ElementsAre("a", "b"));
  EXPECT_THAT(Split("a-b-", dashes, SplitBehavior::kIsolated), ElementsAre("a", "-", "b", "-"));
  EXPECT_THAT(Split("a-b-", dashes, SplitBehavior::kMergedWithPrevious), ElementsAre("a-", "b-"));
  EXPECT_THAT(Split("a-b-", dashes, SplitBehavior::kMergedWithNext), ElementsAre("a", "-b", "-"));
  EXPECT_THAT(Split("a--b", {{1, 2}, {2, 3}}, SplitBehavior::kContiguous),
              ElementsAre("a", "--", "b"));
  EXPECT_THAT(Split("a-b-", dashes, SplitBehavior::kRemoved, /*invert=*/true),
              ElementsAre("-", "-"));
}

TEST(PreTokenizersTest, ByteLevelMapsBytesToVisibleCharacters) {
  EXPECT_THAT(Apply(R"({"type": "ByteLevel", "add_prefix_space": false})", "hi there\n"),
              ElementsAre("hi", "Ġthere", "Ċ"));
  EXPECT_THAT(Apply(R"({"type": "ByteLevel", "add_prefix_space": true})", "hi"),
              ElementsAre("Ġhi"));
  EXPECT_THAT(
      Apply(R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false})", "a b"),
      ElementsAre("aĠb"));
  EXPECT_EQ(ByteTable()[' '], "Ġ");
  EXPECT_EQ(ByteTable()['a'], "a");
  EXPECT_EQ(ByteTable()[0xE9], "é");  // Printable Latin-1 maps to itself.
}

TEST(PreTokenizersTest, SplitWithRegexAndBehavior) {
  EXPECT_THAT(
      Apply(R"({"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Isolated"})", "ab12c"),
      ElementsAre("ab", "1", "2", "c"));
  EXPECT_THAT(Apply(R"({"type": "Split", "pattern": {"String": " "}, "behavior": "Removed",
                      "invert": false})",
                    "a b"),
              ElementsAre("a", "b"));
}

TEST(PreTokenizersTest, MetaspaceReplacesSpacesAndPrepends) {
  EXPECT_THAT(
      Apply(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})", "hi there"),
      ElementsAre("▁hi", "▁there"));
  EXPECT_THAT(Apply(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never",
                      "split": false})",
                    "hi there"),
              ElementsAre("hi▁there"));
  // prepend_scheme "first" only prepends to a piece at the start of the input.
  auto p = ParsePreTokenizer(
      Json::parse(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"})"),
      "pre_tokenizer");
  ASSERT_TRUE(p.ok());
  std::vector<Piece> pieces = {{"a", true}, {"b", false}};
  (*p)->PreTokenize(&pieces);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].text, "▁a");
  EXPECT_EQ(pieces[1].text, "b");
}

TEST(PreTokenizersTest, PrependSchemeAndLegacyAddPrefixSpace) {
  EXPECT_EQ(*ParsePrependScheme(Json::parse(R"({"add_prefix_space": false})"), "p"),
            PrependScheme::kNever);
  EXPECT_EQ(*ParsePrependScheme(Json::parse(R"({})"), "p"), PrependScheme::kAlways);
  EXPECT_EQ(*ParsePrependScheme(Json::parse(R"({"prepend_scheme": "first"})"), "p"),
            PrependScheme::kFirst);
  auto bad = ParsePrependScheme(Json::parse(R"({"prepend_scheme": "sometimes"})"), "p");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("p.prepend_scheme: unknown value \"sometimes\""));
  EXPECT_FALSE(ParsePrependScheme(
                   Json::parse(R"({"prepend_scheme": "first", "add_prefix_space": false})"), "p")
                   .ok());
}

TEST(PreTokenizersTest, ErrorsNameTypeAndPath) {
  auto p = ParsePreTokenizer(Json::parse(R"({"type": "Whitespace"})"), "pre_tokenizer");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(p.status().message(), HasSubstr("pre_tokenizer.type is \"Whitespace\""));
  p = ParsePreTokenizer(
      Json::parse(R"({"type": "Split", "pattern": {"String": "x"}, "behavior": "Sideways"})"),
      "pre_tokenizer");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("pre_tokenizer.behavior: unknown behavior"));
}

}  // namespace
}  // namespace oft::tokenizer
