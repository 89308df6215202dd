// tests/test_main.cc gives each test process its own TempDir(): not the shared /tmp/, a
// directory only this user can enter, and one that exists when the test starts.
#include <sys/stat.h>

#include <string>

#include "gtest/gtest.h"

namespace {

TEST(TestMainTest, TempDirIsAFreshPrivateDirectoryOfThisProcess) {
  const std::string dir = ::testing::TempDir();
  EXPECT_NE(dir, "/tmp/");
  EXPECT_NE(dir.find("/oft-test-"), std::string::npos) << dir;
  struct stat st {};
  ASSERT_EQ(stat(dir.c_str(), &st), 0) << dir;
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

}  // namespace
