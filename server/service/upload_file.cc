#include "server/service/upload_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace oft {

absl::StatusOr<std::unique_ptr<UploadFile>> UploadFile::Create(std::string path, std::string what) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("creating ", what));
  return std::unique_ptr<UploadFile>(new UploadFile(std::move(path), std::move(what), fd));
}

UploadFile::~UploadFile() {
  if (fd_ >= 0) close(fd_);
  if (!keep_) unlink(path_.c_str());
}

absl::Status UploadFile::Append(absl::string_view bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(what_, " is already finished"));
  hasher_.Update(bytes.data(), bytes.size());
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("writing ", what_));
    }
    done += static_cast<size_t>(n);
  }
  size_ += static_cast<int64_t>(bytes.size());
  return absl::OkStatus();
}

absl::Status UploadFile::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(what_, " is already finished"));
  const int fd = fd_;
  fd_ = -1;
  const bool synced = fsync(fd) == 0;
  const int err = errno;
  close(fd);
  if (!synced) return ErrnoStatus(err, absl::StrCat("fsync of ", what_));
  sha256_ = hasher_.HexDigest();
  return absl::OkStatus();
}

std::string NewTempUploadName(const std::string& dir) {
  return absl::StrFormat("%s/.upload-%016x", dir, absl::Uniform<uint64_t>(absl::BitGen()));
}

bool IsSha256Hex(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::Status ValidateChunkSize(absl::string_view chunk, int64_t max_chunk_bytes) {
  if (chunk.empty() || static_cast<int64_t>(chunk.size()) > max_chunk_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk must be 1 to ", max_chunk_bytes, " bytes, got ", chunk.size()));
  }
  return absl::OkStatus();
}

}  // namespace oft
