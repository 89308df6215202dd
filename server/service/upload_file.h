// One file received over a client-streaming RPC (UploadDataset, ImportAdapter), written as it
// arrives: created exclusively at a temp path (mode 0600), hashed while written, fsynced by
// Finish(), and removed when the object dies unless Keep() was called (the caller renamed or
// published it). Temp paths are named so that SweepTemporaryFiles (server/common/data_dir.h)
// removes what a crash leaves. Thread-compatible (one stream writes at a time).
#ifndef OFT_SERVER_SERVICE_UPLOAD_FILE_H_
#define OFT_SERVER_SERVICE_UPLOAD_FILE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/common/file_util.h"

namespace oft {

class UploadFile {
 public:
  // Creates `path` (O_EXCL). Errors: the errno of open(2), naming `what`.
  static absl::StatusOr<std::unique_ptr<UploadFile>> Create(std::string path, std::string what);
  ~UploadFile();
  UploadFile(const UploadFile&) = delete;
  UploadFile& operator=(const UploadFile&) = delete;

  // Appends `bytes` and adds them to the hash. Errors: write(2) failures.
  absl::Status Append(absl::string_view bytes);
  // fsyncs and closes the file and finishes the hash (sha256() is valid afterwards).
  absl::Status Finish();
  // The file stays when this object dies.
  void Keep() { keep_ = true; }

  const std::string& path() const { return path_; }
  int64_t size() const { return size_; }
  const std::string& sha256() const { return sha256_; }  // after Finish()

 private:
  UploadFile(std::string path, std::string what, int fd)
      : path_(std::move(path)), what_(std::move(what)), fd_(fd) {}

  const std::string path_;
  const std::string what_;
  int fd_;
  bool keep_ = false;
  int64_t size_ = 0;
  Sha256 hasher_;
  std::string sha256_;
};

// A random temp name "<dir>/.upload-<16 hex digits>".
std::string NewTempUploadName(const std::string& dir);

// Whether `s` is 64 lowercase hex digits (a SHA-256 as the API writes it).
bool IsSha256Hex(absl::string_view s);

// Checks one streamed chunk's size: 1 to `max_chunk_bytes` (INVALID_ARGUMENT naming both).
absl::Status ValidateChunkSize(absl::string_view chunk, int64_t max_chunk_bytes);

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_UPLOAD_FILE_H_
