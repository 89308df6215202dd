// Regex (PCRE2) and the JSON field accessors the components parse with.
#include "server/model/tokenizer/regex.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/tokenizer/json_fields.h"

namespace oft::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<Regex> Compile(const std::string& pattern, bool literal = false) {
  auto r = Regex::Create(pattern, literal, "test");
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(*r) : nullptr;
}

TEST(RegexTest, Gpt2PatternSplitsWordsNumbersAndSpaces) {
  auto r = Compile(kGpt2Pattern);
  const std::string s = "Hello world's 42  !";
  std::vector<std::string> parts;
  for (const auto& [a, b] : r->FindAll(s)) parts.push_back(s.substr(a, b - a));
  EXPECT_THAT(parts, ElementsAre("Hello", " world", "'s", " 42", " ", " !"));
}

TEST(RegexTest, UnicodePropertiesMatchNonAscii) {
  auto r = Compile(R"(\p{L}+)");
  EXPECT_THAT(r->FindAll("é x"), ElementsAre(Match(0, 2), Match(3, 4)));
}

TEST(RegexTest, LiteralPatternsAreNotRegexes) {
  auto r = Compile(".", /*literal=*/true);
  EXPECT_THAT(r->FindAll("a.b"), ElementsAre(Match(1, 2)));
}

TEST(RegexTest, EmptyMatchAfterAMatchIsSkipped) {
  // Oniguruma's find_iter: "a*" on "baa" gives "", "aa" and no empty match at the end.
  auto r = Compile("a*");
  EXPECT_THAT(r->FindAll("baa"), ElementsAre(Match(0, 0), Match(1, 3)));
}

TEST(RegexTest, BadPatternNamesPathAndOffset) {
  auto r = Regex::Create("(ab", false, "pre_tokenizer.pattern.Regex");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("pre_tokenizer.pattern.Regex"));
  EXPECT_THAT(r.status().message(), HasSubstr("at offset 3"));
}

TEST(RegexTest, ParsePatternAndReplaceAll) {
  auto r = ParsePattern(Json::parse(R"({"pattern": {"String": " "}})"), "normalizer");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReplaceAll(**r, "a b  c", "_"), "a_b__c");
  auto bad = ParsePattern(Json::parse(R"({"pattern": "x"})"), "normalizer");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("normalizer.pattern: expected {\"String\""));
}

TEST(JsonFieldsTest, ErrorsNameThePath) {
  const Json j = Json::parse(R"({"s": "x", "b": 1, "n": -1, "c": "ab", "id": 7})");
  EXPECT_EQ(*RequireString(j, "s", "p"), "x");
  EXPECT_THAT(RequireString(j, "missing", "p").status().message(),
              HasSubstr("tokenizer.json: p.missing: missing required field"));
  EXPECT_THAT(OptionalBool(j, "b", "p", false).status().message(),
              HasSubstr("p.b: expected a boolean"));
  EXPECT_EQ(*OptionalBool(j, "absent", "p", true), true);
  EXPECT_THAT(OptionalCount(j, "n", "p", 0).status().message(),
              HasSubstr("p.n: expected a non-negative integer"));
  EXPECT_THAT(RequireChar(j, "c", "p").status().message(),
              HasSubstr("expected a single character"));
  EXPECT_EQ(*AsId(j["id"], "p.id"), 7);
  EXPECT_FALSE(AsId(Json(-1), "p.id").ok());
  EXPECT_FALSE(AsId(Json(int64_t{1} << 31), "p.id").ok());
  EXPECT_EQ(Key("", "model"), "model");
  EXPECT_EQ(Index(Key("model", "merges"), 3), "model.merges[3]");
  const absl::Status u = Unsupported("decoder", "decoder", "CTC", "ByteLevel");
  EXPECT_EQ(u.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(u.message(), HasSubstr("decoder.type is \"CTC\""));
}

}  // namespace
}  // namespace oft::tokenizer
