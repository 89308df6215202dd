#include "server/common/file_util.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace oft {

absl::Status ErrnoStatus(int err, absl::string_view what) {
  const std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR: return absl::NotFoundError(msg);
    case ENOSPC:
    case EDQUOT: return absl::ResourceExhaustedError(msg);
    case EACCES:
    case EPERM:
    case EROFS: return absl::PermissionDeniedError(msg);
    default: return absl::InternalError(msg);
  }
}

absl::Status FsyncDirectory(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open directory ", dir));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus(err, absl::StrCat("fsync directory ", dir));
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path,
                             const std::function<absl::Status(const ByteSink&)>& produce,
                             int mode) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("create ", tmp));
  auto fail = [&](absl::Status s) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  ByteSink sink = [&](const void* data, size_t size) -> absl::Status {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      // Linux caps a single write at ~2 GiB.
      const ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, absl::StrCat("write ", tmp));
      }
      p += n;
      size -= static_cast<size_t>(n);
    }
    return absl::OkStatus();
  };
  if (absl::Status s = produce(sink); !s.ok()) return fail(s);
  if (::fsync(fd) != 0) return fail(ErrnoStatus(errno, absl::StrCat("fsync ", tmp)));
  const int rc = ::close(fd);
  fd = -1;
  if (rc != 0) return fail(ErrnoStatus(errno, absl::StrCat("close ", tmp)));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(ErrnoStatus(errno, absl::StrCat("rename ", tmp, " to ", path)));
  }
  return FsyncDirectory(std::filesystem::path(path).parent_path().string());
}

absl::Status WriteFileAtomic(const std::string& path, absl::string_view contents, int mode) {
  return WriteFileAtomic(
      path, [&](const ByteSink& sink) { return sink(contents.data(), contents.size()); }, mode);
}

namespace {

// Streams the file through `chunk` in 64 KiB pieces; stops early when `chunk` fails.
absl::Status ReadChunks(const std::string& path, size_t max_bytes,
                        const std::function<absl::Status(const char*, size_t)>& chunk) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
  absl::Status status;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("stat ", path));
  } else if (static_cast<size_t>(st.st_size) > max_bytes) {
    status = absl::FailedPreconditionError(
        absl::StrCat(path, " is ", st.st_size, " bytes, over the limit of ", max_bytes));
  }
  char buf[1 << 16];
  size_t total = 0;
  while (status.ok()) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      status = ErrnoStatus(errno, absl::StrCat("read ", path));
    } else if (n == 0) {
      break;
    } else if ((total += static_cast<size_t>(n)) > max_bytes) {
      status = absl::FailedPreconditionError(
          absl::StrCat(path, " is over the limit of ", max_bytes, " bytes"));
    } else {
      status = chunk(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return status;
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes) {
  std::string out;
  absl::Status s = ReadChunks(path, max_bytes, [&](const char* data, size_t n) {
    out.append(data, n);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256::Update(const void* data, size_t size) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size);
}

std::string Sha256::HexDigest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

std::string Sha256Hex(absl::string_view bytes) {
  Sha256 h;
  h.Update(bytes.data(), bytes.size());
  return h.HexDigest();
}

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  Sha256 h;
  absl::Status s = ReadChunks(path, ~size_t{0}, [&](const char* data, size_t n) {
    h.Update(data, n);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return h.HexDigest();
}

}  // namespace oft
