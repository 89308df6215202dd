// Small durable-file helpers shared by every component that writes state to disk.
//
// WriteFileAtomic writes `path` so that readers see either the old file or the complete
// new one, never a torn write, and the new one survives a crash once it returns OK:
// write a temp file beside it, fsync it, rename over `path`, fsync the directory.
// All functions are thread-safe (no shared state besides a temp-name counter).
#ifndef OFT_SERVER_COMMON_FILE_UTIL_H_
#define OFT_SERVER_COMMON_FILE_UTIL_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oft {

// errno -> Status with `what` as context (ENOENT -> NOT_FOUND, ENOSPC -> RESOURCE_EXHAUSTED,
// EACCES/EPERM -> PERMISSION_DENIED, others -> INTERNAL).
absl::Status ErrnoStatus(int err, absl::string_view what);

// A sink handed to WriteFileAtomic's producer: appends bytes to the temp file.
using ByteSink = std::function<absl::Status(const void* data, size_t size)>;

// Atomically replaces `path` with what `produce` writes through the sink.
absl::Status WriteFileAtomic(const std::string& path,
                             const std::function<absl::Status(const ByteSink&)>& produce,
                             int mode = 0644);
absl::Status WriteFileAtomic(const std::string& path, absl::string_view contents, int mode = 0644);

// fsync a directory so renames/creations inside it are durable.
absl::Status FsyncDirectory(const std::string& dir);

// Whole-file read. NOT_FOUND when absent; FAILED_PRECONDITION over `max_bytes`.
absl::StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes = size_t{1} << 30);

// Lowercase hex SHA-256 of bytes / of a file's contents (streamed).
std::string Sha256Hex(absl::string_view bytes);
absl::StatusOr<std::string> Sha256File(const std::string& path);

// Incremental SHA-256 (for uploads arriving in chunks). Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t size);
  std::string HexDigest();  // finishes; call once

 private:
  void* ctx_;  // EVP_MD_CTX
};

}  // namespace oft

#endif  // OFT_SERVER_COMMON_FILE_UTIL_H_
