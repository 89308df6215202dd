#include "server/common/echo.h"

#include <gtest/gtest.h>

#include <string>

namespace oft {
namespace {

TEST(Echo, ShortValuesUnchanged) {
  EXPECT_EQ(Echo("q_proj"), "q_proj");
  EXPECT_EQ(Echo(std::string(kMaxEchoChars, 'a')), std::string(kMaxEchoChars, 'a'));
}

TEST(Echo, LongValuesCutWithLength) {
  const std::string big(20000, 'x');
  const std::string e = Echo(big);
  EXPECT_EQ(e, std::string(kMaxEchoChars, 'x') + "…(20000 bytes)");
  EXPECT_LT(e.size(), 120u);
}

TEST(Echo, NeverSplitsAUtf8Sequence) {
  // "é" is two bytes; a cut at an odd offset would land inside one.
  std::string s;
  for (int i = 0; i < 100; ++i) s += "é";
  const std::string e = Echo(s, 5);
  EXPECT_EQ(e, "éé…(200 bytes)");
}

}  // namespace
}  // namespace oft
