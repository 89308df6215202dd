#include "server/common/client_regex.h"

#include <gtest/gtest.h>

#include <string>

namespace oft {
namespace {

TEST(ClientRegex, FullMatchSemantics) {
  auto re = ClientRegex::Compile("target_modules", R"(.*\.(q|v)_proj)");
  ASSERT_TRUE(re.ok()) << re.status();
  EXPECT_TRUE(re->FullMatch("model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(re->FullMatch("model.layers.0.self_attn.q_proj.base"));  // whole name, not a prefix
  EXPECT_FALSE(re->FullMatch("model.layers.0.mlp.up_proj"));
}

// Catastrophic for a backtracking engine (std::regex needs exponential time on this input);
// RE2 answers in linear time. The answer must be right, and it must come back at all: the
// test would hang, not fail, on a backtracking engine.
TEST(ClientRegex, PathologicalPatternsAnswer) {
  for (const char* p : {"(.*.*)*X", "(a*)*b", "(a|aa)*c", "(x+x+)+y"}) {
    auto re = ClientRegex::Compile("target_modules", p);
    ASSERT_TRUE(re.ok()) << p << ": " << re.status();
    EXPECT_FALSE(re->FullMatch(std::string(5000, 'a'))) << p;
  }
  auto re = ClientRegex::Compile("target_modules", "(.*.*)*X");
  EXPECT_TRUE(re->FullMatch(std::string(5000, 'a') + "X"));
}

TEST(ClientRegex, RejectsWhatRe2CannotRunWithTheFieldName) {
  auto backref = ClientRegex::Compile("exclude_modules", R"((a)\1)");
  ASSERT_FALSE(backref.ok());
  EXPECT_EQ(backref.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(backref.status().message().find("exclude_modules: invalid regex"), std::string::npos)
      << backref.status();
  EXPECT_FALSE(ClientRegex::Compile("f", "(?=x)x").ok());  // lookahead
  EXPECT_FALSE(ClientRegex::Compile("f", "([").ok());
}

TEST(ClientRegex, SizeLimitsAndBoundedMessages) {
  const std::string huge(kMaxClientRegexBytes + 1, 'a');
  auto too_long = ClientRegex::Compile("target_modules", huge);
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.status().message().find("the limit is 1024"), std::string::npos);
  EXPECT_LT(too_long.status().message().size(), 200u);

  // Under the byte limit but a huge program: bounded by RE2's memory budget.
  auto big_program = ClientRegex::Compile("target_modules", "((((a{100}){100}){100}){100})");
  ASSERT_FALSE(big_program.ok());
  EXPECT_LT(big_program.status().message().size(), 400u) << big_program.status();

  // An invalid pattern near the byte limit is quoted only in part.
  auto bad = ClientRegex::Compile("target_modules", std::string(1000, 'b') + "(");
  ASSERT_FALSE(bad.ok());
  EXPECT_LT(bad.status().message().size(), 400u) << bad.status().message().size();
}

}  // namespace
}  // namespace oft
