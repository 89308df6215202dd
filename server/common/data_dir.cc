#include "server/common/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace oft {
namespace {

// The pid recorded in an open LOCK file, or "unknown".
std::string ReadPid(int fd) {
  char buf[32] = {};
  ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  if (n <= 0) return "unknown";
  std::string s(buf, static_cast<size_t>(n));
  absl::StripAsciiWhitespace(&s);
  int64_t pid = 0;
  return absl::SimpleAtoi(s, &pid) ? std::to_string(pid) : "unknown";
}

// "<name>.tmp.<pid>.<counter>", as WriteFileAtomic (file_util.cc) names its temporaries.
bool IsAtomicWriteTemp(const std::string& name) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, ".tmp.");
  if (parts.size() < 2) return false;
  std::vector<absl::string_view> tail = absl::StrSplit(parts.back(), '.');
  uint64_t v = 0;
  return tail.size() == 2 && absl::SimpleAtoi(tail[0], &v) && absl::SimpleAtoi(tail[1], &v);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataDirLock>> DataDirLock::Acquire(const std::string& dir) {
  std::string path = dir + "/LOCK";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = ReadPid(fd);
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--data_dir ", dir, " is in use by another oft_server (pid ", holder, ", lock ", path,
          "); stop it or choose another --data_dir"));
    }
    return absl::InternalError(absl::StrCat("cannot lock ", path, ": ", std::strerror(err)));
  }
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(err)));
  }
  return std::unique_ptr<DataDirLock>(new DataDirLock(std::move(path), fd));
}

DataDirLock::~DataDirLock() {
  // Closing the descriptor releases the flock; the file stays (its pid is stale but harmless:
  // only a held lock refuses a start).
  ::close(fd_);
}

int64_t SweepTemporaryFiles(const std::string& dir) {
  namespace fs = std::filesystem;
  int64_t removed = 0;
  std::error_code ec;
  // Adapter imports in progress (imports/.import-*): whole staging directories.
  for (fs::directory_iterator d(fs::path(dir) / "imports", ec); !ec && d != fs::directory_iterator();
       d.increment(ec)) {
    if (!absl::StartsWith(d->path().filename().string(), ".import-")) continue;
    std::error_code rm_ec;
    const auto n = fs::remove_all(d->path(), rm_ec);
    if (!rm_ec && n != static_cast<std::uintmax_t>(-1)) removed += static_cast<int64_t>(n);
  }
  ec.clear();
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) continue;
    const std::string name = it->path().filename().string();
    const bool partial_upload = absl::StartsWith(name, ".upload-") &&
                                it->path().parent_path().filename() == "datasets";
    if (!partial_upload && !IsAtomicWriteTemp(name)) continue;
    std::error_code rm_ec;
    if (fs::remove(it->path(), rm_ec)) ++removed;
  }
  return removed;
}

}  // namespace oft
