#include "server/model/safetensors.h"


#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace oft {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts need byte swapping");

namespace {

using json = nlohmann::json;

struct DtypeEntry {
  SafetensorsDtype dtype;
  const char* name;
  size_t size;
};

constexpr DtypeEntry kDtypes[] = {
    {SafetensorsDtype::kF64, "F64", 8},  {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kF16, "F16", 2},  {SafetensorsDtype::kBF16, "BF16", 2},
    {SafetensorsDtype::kI64, "I64", 8},  {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kI16, "I16", 2},  {SafetensorsDtype::kI8, "I8", 1},
    {SafetensorsDtype::kU8, "U8", 1},    {SafetensorsDtype::kBool, "BOOL", 1},
};

// Hostile names can be long or binary; keep messages readable.
std::string Quoted(absl::string_view s) {
  constexpr size_t kMax = 120;
  std::string out = absl::StrCat("'", absl::Utf8SafeCHexEscape(s.substr(0, kMax)));
  if (s.size() > kMax) absl::StrAppend(&out, "...");
  absl::StrAppend(&out, "'");
  return out;
}

absl::Status FileError(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status TensorError(const std::string& path, absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", Quoted(name), ": ", what));
}

// nlohmann's parser is iterative, but real headers are at most 3 levels deep; refusing
// deep nesting up front keeps hostile headers cheap and bounded.
absl::Status CheckNesting(const std::string& path, absl::string_view text) {
  constexpr int kMaxDepth = 16;
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) {
        return FileError(path, absl::StrCat("header JSON nests deeper than ", kMaxDepth, " levels"));
      }
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return absl::OkStatus();
}

// A JSON integer >= 0, else an error describing `field`.
absl::StatusOr<uint64_t> NonNegativeInt(const json& j, absl::string_view field) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be >= 0, got ", j.get<int64_t>()));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, " must be a non-negative integer, got ", std::string(j.type_name())));
}

absl::StatusOr<SafetensorsTensorInfo> ParseEntry(const std::string& path, const std::string& name,
                                                 const json& entry, uint64_t data_size) {
  SafetensorsTensorInfo info;
  info.name = name;
  auto bad = [&](absl::string_view what) { return TensorError(path, name, what); };
  if (!entry.is_object()) {
    return bad(absl::StrCat("entry must be an object, got ", std::string(entry.type_name())));
  }
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end()) return bad("missing \"dtype\"");
  if (shape_it == entry.end()) return bad("missing \"shape\"");
  if (offsets_it == entry.end()) return bad("missing \"data_offsets\"");

  if (!dtype_it->is_string()) return bad("\"dtype\" must be a string");
  auto dtype = ParseSafetensorsDtype(dtype_it->get_ref<const std::string&>());
  if (!dtype.ok()) return bad(dtype.status().message());
  info.dtype = *dtype;

  if (!shape_it->is_array()) return bad("\"shape\" must be an array of integers");
  // A zero dim makes the product 0 whatever the other dims are, so only check for
  // overflow when there is none (an order-independent rule).
  bool has_zero = false;
  for (size_t i = 0; i < shape_it->size(); ++i) {
    auto dim = NonNegativeInt((*shape_it)[i], absl::StrCat("shape[", i, "]"));
    if (!dim.ok()) return bad(dim.status().message());
    if (*dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return bad(absl::StrCat("shape[", i, "] = ", *dim, " does not fit in int64"));
    }
    info.shape.push_back(static_cast<int64_t>(*dim));
    if (*dim == 0) has_zero = true;
  }
  uint64_t numel = 1;
  if (has_zero) {
    numel = 0;
  } else {
    for (int64_t d : info.shape) {
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return bad(absl::StrCat("shape [", absl::StrJoin(info.shape, ", "),
                                "] has more elements than fit in int64"));
      }
    }
  }
  uint64_t expected_bytes = 0;
  if (__builtin_mul_overflow(numel, SafetensorsDtypeSize(info.dtype), &expected_bytes)) {
    return bad(absl::StrCat("shape [", absl::StrJoin(info.shape, ", "), "] of ",
                            SafetensorsDtypeName(info.dtype), " overflows the byte count"));
  }
  info.numel = static_cast<int64_t>(numel);

  if (!offsets_it->is_array() || offsets_it->size() != 2) {
    return bad("\"data_offsets\" must be an array [begin, end]");
  }
  auto begin = NonNegativeInt((*offsets_it)[0], "data_offsets[0]");
  if (!begin.ok()) return bad(begin.status().message());
  auto end = NonNegativeInt((*offsets_it)[1], "data_offsets[1]");
  if (!end.ok()) return bad(end.status().message());
  if (*begin > *end) {
    return bad(absl::StrCat("data_offsets begin ", *begin, " > end ", *end));
  }
  if (*end > data_size) {
    return bad(absl::StrCat("data_offsets end ", *end, " is past the data region of ", data_size,
                            " bytes (file truncated?)"));
  }
  if (*end - *begin != expected_bytes) {
    return bad(absl::StrCat("data_offsets span ", *end - *begin, " bytes but shape [",
                            absl::StrJoin(info.shape, ", "), "] of ",
                            SafetensorsDtypeName(info.dtype), " needs ", expected_bytes));
  }
  info.begin = *begin;
  info.end = *end;
  return info;
}

}  // namespace


absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype) {
  for (const auto& e : kDtypes) {
    if (e.dtype == dtype) return e.name;
  }
  return "?";
}

absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name) {
  for (const auto& e : kDtypes) {
    if (name == e.name) return e.dtype;
  }
  std::vector<std::string> names;
  for (const auto& e : kDtypes) names.emplace_back(e.name);
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", Quoted(name),
                                                 "; supported: ", absl::StrJoin(names, ", ")));
}

size_t SafetensorsDtypeSize(SafetensorsDtype dtype) {
  for (const auto& e : kDtypes) {
    if (e.dtype == dtype) return e.size;
  }
  return 1;
}

// Owns the mmap; shared with zero-copy tensors.
struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr) ::munmap(addr, size);
  }
};

SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  // O_NONBLOCK so that a FIFO in place of the file fails the regular-file check below
  // instead of blocking in open().
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, absl::StrCat("fstat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return FileError(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return FileError(path, absl::StrCat("file is ", file_size,
                                        " bytes, too short for the 8-byte header length"));
  }
  void* addr = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  int mmap_err = errno;
  ::close(fd);  // the mapping keeps the file open
  if (addr == MAP_FAILED) {
    return ErrnoStatus(mmap_err, absl::StrCat("mmap ", path));
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->addr = addr;
  mapping->size = file_size;
  const uint8_t* base = static_cast<const uint8_t*>(addr);

  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian host (static_assert above)
  if (header_len == 0) return FileError(path, "header length is 0");
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return FileError(path, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                        kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_len > file_size - 8) {
    return FileError(path, absl::StrCat("header length ", header_len, " is past the end of the ",
                                        file_size, "-byte file (file truncated?)"));
  }
  absl::string_view header_text(reinterpret_cast<const char*>(base + 8), header_len);
  OFT_RETURN_IF_ERROR(CheckNesting(path, header_text));
  json header;
  try {
    header = json::parse(header_text.begin(), header_text.end());
  } catch (const json::exception& e) {
    return FileError(path, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) {
    return FileError(path, absl::StrCat("header must be a JSON object, got ",
                                        std::string(header.type_name())));
  }

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->data_ = base + 8 + header_len;
  file->data_size_ = file_size - 8 - header_len;

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        return FileError(path, absl::StrCat("__metadata__ must be an object, got ",
                                            std::string(value.type_name())));
      }
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          return FileError(path, absl::StrCat("__metadata__ value for ", Quoted(mk),
                                              " must be a string, got ",
                                              std::string(mv.type_name())));
        }
        file->metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    OFT_ASSIGN_OR_RETURN(auto info, ParseEntry(path, key, value, file->data_size_));
    file->infos_.push_back(std::move(info));
  }

  std::sort(file->infos_.begin(), file->infos_.end(),
            [](const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  // The format requires the tensors to tile the data region exactly: no overlap, no hole.
  uint64_t cursor = 0;
  const SafetensorsTensorInfo* prev = nullptr;
  for (const auto& info : file->infos_) {
    if (info.begin < cursor) {
      return TensorError(path, info.name,
                         absl::StrCat("bytes [", info.begin, ", ", info.end, ") overlap tensor ",
                                      Quoted(prev->name), " at [", prev->begin, ", ", prev->end,
                                      ")"));
    }
    if (info.begin > cursor) {
      return TensorError(path, info.name,
                         absl::StrCat("starts at byte ", info.begin, " leaving a hole [", cursor,
                                      ", ", info.begin, ") in the data region"));
    }
    cursor = info.end;
    prev = &info;
  }
  if (cursor != file->data_size_) {
    return FileError(path, absl::StrCat("tensors cover ", cursor, " of the ", file->data_size_,
                                        " data bytes; the rest is unaccounted for"));
  }

  file->names_.reserve(file->infos_.size());
  for (size_t i = 0; i < file->infos_.size(); ++i) {
    file->names_.push_back(file->infos_[i].name);
    file->index_.emplace(file->infos_[i].name, i);
  }
  file->mapping_ = std::move(mapping);
  return file;
}

absl::StatusOr<const SafetensorsTensorInfo*> SafetensorsFile::Info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", Quoted(name)));
  }
  return &infos_[it->second];
}

absl::StatusOr<const uint8_t*> SafetensorsFile::Bytes(const std::string& name) const {
  OFT_ASSIGN_OR_RETURN(const SafetensorsTensorInfo* info, Info(name));
  return data_ + info->begin;
}

absl::Status WriteSafetensorsRaw(const std::string& path,
                                 const std::vector<SafetensorsRawTensor>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  std::vector<const SafetensorsRawTensor*> sorted;
  sorted.reserve(tensors.size());
  for (const auto& t : tensors) {
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": tensor ", Quoted(t.name), ": ", what));
    };
    if (t.name.empty()) return bad("name must not be empty");
    if (t.name == "__metadata__") return bad("name is reserved for metadata");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return bad(absl::StrCat("negative dim ", d));
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
        return bad("shape overflows");
      }
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, SafetensorsDtypeSize(t.dtype), &bytes) ||
        bytes != t.byte_size) {
      return bad(absl::StrCat("byte_size ", t.byte_size, " does not match shape [",
                              absl::StrJoin(t.shape, ", "), "] of ",
                              SafetensorsDtypeName(t.dtype)));
    }
    if (t.data == nullptr && t.byte_size != 0) return bad("data is null");
    sorted.push_back(&t);
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->name < b->name; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i]->name == sorted[i - 1]->name) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": duplicate tensor name ", Quoted(sorted[i]->name)));
    }
  }

  json header = json::object();  // std::map-backed: keys come out sorted
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto* t : sorted) {
    header[t->name] = {{"dtype", std::string(SafetensorsDtypeName(t->dtype))},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->byte_size}}};
    offset += t->byte_size;
  }
  std::string header_text;
  try {
    // Invalid UTF-8 in a name or metadata value throws type_error.316.
    header_text = header.dump();
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("writing ", path, ": names and metadata must be valid UTF-8: ", e.what()));
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const uint64_t header_len = header_text.size();

  uint8_t len_bytes[8];
  std::memcpy(len_bytes, &header_len, 8);
  return WriteFileAtomic(path, [&](const ByteSink& sink) -> absl::Status {
    OFT_RETURN_IF_ERROR(sink(len_bytes, 8));
    OFT_RETURN_IF_ERROR(sink(header_text.data(), header_text.size()));
    for (const auto* t : sorted) OFT_RETURN_IF_ERROR(sink(t->data, t->byte_size));
    return absl::OkStatus();
  });
}

}  // namespace oft
