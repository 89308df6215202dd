// Owning a data dir (leveldb's LOCK file and recovery sweep).
//
// One server process owns a --data_dir for its whole life. DataDirLock takes an exclusive
// flock(2) on <data_dir>/LOCK and holds it until destroyed (or the process dies: the kernel
// drops the lock with the last descriptor, so a crashed server never leaves a stale lock).
// The file holds the owner's pid, which a second server names when it refuses to start.
// The descriptor is close-on-exec: worker processes the server starts do not hold the lock.
//
// SweepTemporaryFiles removes what a crash left half-written: partial uploads
// (datasets/.upload-*), adapter imports in progress (imports/.import-*/, whole directories)
// and atomic-write temporaries (<file>.tmp.<pid>.<n>). Call it only
// while holding the lock, before serving.
#ifndef OFT_SERVER_COMMON_DATA_DIR_H_
#define OFT_SERVER_COMMON_DATA_DIR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace oft {

class DataDirLock {
 public:
  // Creates <dir>/LOCK if needed and locks it. FAILED_PRECONDITION naming the holder's pid
  // when another process holds it; INTERNAL on I/O errors (naming the path).
  static absl::StatusOr<std::unique_ptr<DataDirLock>> Acquire(const std::string& dir);
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  DataDirLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

// Removes partial uploads, import staging directories and atomic-write temporaries under
// `dir`; returns how many files (and directories) it removed. Errors on single files are skipped (a file that cannot be removed stays).
int64_t SweepTemporaryFiles(const std::string& dir);

}  // namespace oft

#endif  // OFT_SERVER_COMMON_DATA_DIR_H_
