#include "server/common/log.h"

#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace oft {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

std::vector<std::string> Lines(const std::ostringstream& out) {
  return absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
}

TEST(LogTest, JsonLinesAreObjectsWithTypedFields) {
  std::ostringstream out;
  InitLogging(LogFormat::kJson, LogLevel::kInfo, "oft_server", &out);
  LogEvent(LogLevel::kInfo, "job started",
           {{"job_id", "job-1"}, {"step", 3}, {"loss", 0.5}, {"resumed", true},
            {"note", "quote \" and\nnewline"}});
  const std::vector<std::string> lines = Lines(out);
  ASSERT_EQ(lines.size(), 1u) << out.str();
  const nlohmann::json j = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(j["msg"], "job started");
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["logger"], "oft_server");
  EXPECT_EQ(j["job_id"], "job-1");
  EXPECT_EQ(j["step"], 3);
  EXPECT_TRUE(j["step"].is_number_integer());
  EXPECT_DOUBLE_EQ(j["loss"].get<double>(), 0.5);
  EXPECT_EQ(j["resumed"], true);
  EXPECT_EQ(j["note"], "quote \" and\nnewline");
  EXPECT_THAT(j["time"].get<std::string>(),
              MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z"));
}

TEST(LogTest, InvalidUtf8StillGivesValidJson) {
  std::ostringstream out;
  InitLogging(LogFormat::kJson, LogLevel::kInfo, "oft_server", &out);
  LogEvent(LogLevel::kWarn, "bad \xff bytes", {{"v", "\xc3"}});
  const std::vector<std::string> lines = Lines(out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_FALSE(nlohmann::json::parse(lines[0], nullptr, false).is_discarded()) << lines[0];
}

TEST(LogTest, LevelFiltersAndDebugIsOffByDefault) {
  std::ostringstream out;
  InitLogging(LogFormat::kJson, LogLevel::kInfo, "oft_server", &out);
  EXPECT_FALSE(LogEnabled(LogLevel::kDebug));
  LogEvent(LogLevel::kDebug, "rpc");
  LogEvent(LogLevel::kError, "bad");
  ASSERT_EQ(Lines(out).size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(Lines(out)[0])["level"], "error");
  std::ostringstream debug;
  InitLogging(LogFormat::kJson, LogLevel::kDebug, "oft_server", &debug);
  EXPECT_TRUE(LogEnabled(LogLevel::kDebug));
  LogEvent(LogLevel::kDebug, "rpc");
  EXPECT_EQ(Lines(debug).size(), 1u);
}

TEST(LogTest, TextLinesQuoteValuesThatAreNotOneWord) {
  std::ostringstream out;
  InitLogging(LogFormat::kText, LogLevel::kInfo, "oft_server", &out);
  LogEvent(LogLevel::kInfo, "job finished",
           {{"job_id", "job-1"}, {"message", "published bot version 2"}, {"ok", false}, {"n", 7}});
  const std::vector<std::string> lines = Lines(out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], MatchesRegex("[0-9T:.-]+Z info oft_server: job finished job_id=job-1 "
                                     "message=\"published bot version 2\" ok=false n=7"));
}

TEST(LogTest, FlagValuesParseAndBadOnesNameTheFlag) {
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_EQ(*ParseLogLevel("warn"), LogLevel::kWarn);
  EXPECT_THAT(std::string(ParseLogFormat("xml").status().message()), HasSubstr("--log_format"));
  EXPECT_THAT(std::string(ParseLogLevel("loud").status().message()), HasSubstr("--log_level"));
}

}  // namespace
}  // namespace oft
