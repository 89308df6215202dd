#include "server/model/tokenizer/added_tokens.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft::tokenizer {
namespace {

using ::testing::HasSubstr;

// Segments as "text" or "<id>" strings, for readable expectations.
std::vector<std::string> Show(const AddedTokenMatcher& m, const std::string& s) {
  std::vector<std::string> out;
  for (const Segment& seg : m.Split(s)) {
    out.push_back(seg.id >= 0 ? absl::StrCat("<", seg.id, ">")
                              : s.substr(seg.start, seg.end - seg.start));
  }
  return out;
}

AddedToken Token(const std::string& content, int32_t id) {
  AddedToken t;
  t.content = content;
  t.id = id;
  return t;
}

TEST(AddedTokensTest, LeftmostLongestMatch) {
  AddedToken eot = Token("<|end|>", 1), eotx = Token("<|end|>x", 2);
  AddedTokenMatcher m;
  m.Add(eot.content, &eot);
  m.Add(eotx.content, &eotx);
  EXPECT_THAT(Show(m, "a<|end|>xb<|end|>"), testing::ElementsAre("a", "<2>", "b", "<1>"));
  EXPECT_THAT(Show(m, "plain"), testing::ElementsAre("plain"));
  EXPECT_THAT(Show(AddedTokenMatcher(), "plain"), testing::ElementsAre("plain"));
}

TEST(AddedTokensTest, SingleWordOnlyBetweenNonWordCharacters) {
  AddedToken t = Token("ok", 5);
  t.single_word = true;
  AddedTokenMatcher m;
  m.Add(t.content, &t);
  EXPECT_THAT(Show(m, "ok book ok."), testing::ElementsAre("<5>", " book ", "<5>", "."));
}

TEST(AddedTokensTest, StripTakesNeighbouringWhitespace) {
  AddedToken t = Token("<m>", 7);
  t.lstrip = true;
  t.rstrip = true;
  AddedTokenMatcher m;
  m.Add(t.content, &t);
  EXPECT_THAT(Show(m, "a  <m>\t b"), testing::ElementsAre("a", "<7>", "b"));
}

TEST(AddedTokensTest, ParseDefaultsNormalizedToNotSpecial) {
  auto t = ParseAddedToken(Json::parse(R"({"id": 3, "content": "<s>", "special": true})"),
                           "added_tokens[0]");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->special);
  EXPECT_FALSE((*t)->normalized);
  t = ParseAddedToken(Json::parse(R"({"id": 4, "content": "hi"})"), "added_tokens[1]");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE((*t)->normalized);
  t = ParseAddedToken(Json::parse(R"({"content": "x"})"), "added_tokens[2]");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("added_tokens[2].id: missing required field"));
  t = ParseAddedToken(Json::parse(R"({"id": 1, "content": "x", "lstrip": "yes"})"),
                      "added_tokens[3]");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("added_tokens[3].lstrip: expected a boolean"));
}

}  // namespace
}  // namespace oft::tokenizer
