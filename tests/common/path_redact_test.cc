#include "server/common/path_redact.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(PathRedactorTest, ReplacesTheDirectoryAsGivenAbsoluteAndCanonical) {
  const fs::path tmp = fs::temp_directory_path() / ("redact-" + std::to_string(::getpid()));
  fs::create_directories(tmp / "real");
  std::error_code ec;
  fs::create_directory_symlink(tmp / "real", tmp / "link", ec);
  ASSERT_FALSE(ec) << ec.message();
  PathRedactor r;
  r.Add((tmp / "link").string(), "<data_dir>");
  const std::string canonical = fs::canonical(tmp / "link").string();
  EXPECT_EQ(r.Redact("resumed from " + (tmp / "link").string() + "/jobs/j1/checkpoints/step-3"),
            "resumed from <data_dir>/jobs/j1/checkpoints/step-3");
  EXPECT_EQ(r.Redact("cannot read " + canonical + "/datasets/d.jsonl: no such file"),
            "cannot read <data_dir>/datasets/d.jsonl: no such file");
  fs::remove_all(tmp);
}

TEST(PathRedactorTest, RelativeDirectoryMatchesItsAbsoluteSpellingToo) {
  PathRedactor r;
  r.Add("oft-data", "<data_dir>");
  const std::string abs = (fs::current_path() / "oft-data").string();
  EXPECT_EQ(r.Redact(abs + "/jobs/x"), "<data_dir>/jobs/x");
  EXPECT_EQ(r.Redact("oft-data/jobs/x"), "<data_dir>/jobs/x");
}

TEST(PathRedactorTest, LongestDirectoryWinsAndNamesThatOnlyStartAlikeStay) {
  PathRedactor r;
  r.Add("/srv/oft", "<data_dir>");
  r.Add("/srv/oft/models/tiny", "<model tiny>");
  EXPECT_EQ(r.Redact("/srv/oft/models/tiny/model.safetensors and /srv/oft/jobs"),
            "<model tiny>/model.safetensors and <data_dir>/jobs");
  // "/srv/oft2" and "/srv/oft-old" are other directories.
  EXPECT_EQ(r.Redact("/srv/oft2/x /srv/oft-old /srv/oft"), "/srv/oft2/x /srv/oft-old <data_dir>");
}

TEST(PathRedactorTest, TrivialDirectoriesAreIgnored) {
  PathRedactor r;
  r.Add("", "<a>");
  r.Add(".", "<b>");
  r.Add("/", "<c>");
  EXPECT_EQ(r.Redact("a/b. c/d"), "a/b. c/d");
}

}  // namespace
}  // namespace oft
