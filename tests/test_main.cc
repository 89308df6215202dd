// main() of every oft_test binary: each test process gets a fresh private directory as
// ::testing::TempDir() (through TEST_TMPDIR), removed when the process ends. Tests name
// their files under TempDir(), so two runs at once (another worktree, ctest -j, CI) never
// share or clobber a fixed /tmp path, and nothing is left behind.
#include <stdlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"

int main(int argc, char** argv) {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/oft-test-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    std::fprintf(stderr, "test main: mkdtemp(%s): %s\n", templ.c_str(), std::strerror(errno));
    return 1;
  }
  const std::string dir = buf.data();
  setenv("TEST_TMPDIR", (dir + "/").c_str(), /*overwrite=*/1);
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
