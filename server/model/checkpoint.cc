#include "server/model/checkpoint.h"

#include "server/common/file_util.h"

#include <sys/stat.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/status_macros.h"

namespace oft {
namespace {

using json = nlohmann::json;

// Index files are a few MiB even for the largest models.
constexpr std::streamsize kMaxIndexBytes = 64 << 20;

absl::StatusOr<bool> IsRegularFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return ErrnoStatus(errno, absl::StrCat("stat ", path));
  }
  return S_ISREG(st.st_mode);
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string text;
  char buf[1 << 16];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (static_cast<std::streamsize>(text.size()) > kMaxIndexBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": larger than ", kMaxIndexBytes, " bytes"));
    }
  }
  if (in.bad()) return absl::InternalError(absl::StrCat("error reading ", path));
  return text;
}

}  // namespace

namespace internal {

bool IsPlainFileName(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  return name.find_first_of(std::string("/\\\0", 3)) == std::string::npos;
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  const std::string index_path = absl::StrCat(dir, "/", kSafetensorsIndexName);
  const std::string single_path = absl::StrCat(dir, "/", kSafetensorsWeightsName);
  OFT_ASSIGN_OR_RETURN(bool has_index, IsRegularFile(index_path));

  if (!has_index) {
    OFT_ASSIGN_OR_RETURN(bool has_single, IsRegularFile(single_path));
    if (!has_single) {
      return absl::NotFoundError(absl::StrCat(dir, ": no ", kSafetensorsWeightsName, " or ",
                                              kSafetensorsIndexName,
                                              " (only safetensors checkpoints are supported)"));
    }
    OFT_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single_path));
    for (const auto& name : file->names()) ckpt->where_[name] = file.get();
    ckpt->shards_[kSafetensorsWeightsName] = std::move(file);
  } else {
    ckpt->sharded_ = true;
    OFT_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(index_path));
    json index = json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": not valid JSON"));
    }
    if (!index.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": must be a JSON object"));
    }
    auto map_it = index.find("weight_map");
    if (map_it == index.end() || !map_it->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": \"weight_map\" must be an object of tensor -> shard file"));
    }
    if (map_it->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": \"weight_map\" is empty"));
    }
    std::map<std::string, std::string> weight_map;
    for (const auto& [tensor, shard] : map_it->items()) {
      if (!shard.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": weight_map entry for tensor '", tensor, "' must be a file name string"));
      }
      const std::string& shard_name = shard.get_ref<const std::string&>();
      if (!internal::IsPlainFileName(shard_name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": weight_map entry for tensor '", tensor, "' names shard '", shard_name,
            "', which is not a plain file name inside the checkpoint directory"));
      }
      weight_map[tensor] = shard_name;
    }
    for (const auto& [tensor, shard_name] : weight_map) {
      auto it = ckpt->shards_.find(shard_name);
      if (it == ckpt->shards_.end()) {
        const std::string shard_path = absl::StrCat(dir, "/", shard_name);
        auto file = SafetensorsFile::Open(shard_path);
        if (!file.ok()) {
          if (absl::IsNotFound(file.status())) {
            return absl::NotFoundError(absl::StrCat(index_path, ": shard '", shard_name,
                                                    "' (for tensor '", tensor,
                                                    "') is missing: ", file.status().message()));
          }
          return file.status();
        }
        it = ckpt->shards_.emplace(shard_name, *std::move(file)).first;
      }
      if (!it->second->Has(tensor)) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor '", tensor,
                                                       "' is mapped to shard '", shard_name,
                                                       "' but that file does not contain it"));
      }
      ckpt->where_[tensor] = it->second.get();
    }
  }
  ckpt->names_.reserve(ckpt->where_.size());
  for (const auto& [name, file] : ckpt->where_) ckpt->names_.push_back(name);
  return ckpt;
}

std::vector<std::string> Checkpoint::shard_files() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : shards_) out.push_back(name);
  return out;
}

absl::StatusOr<const SafetensorsTensorInfo*> Checkpoint::Info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": checkpoint has no tensor '", name, "'"));
  }
  return it->second->Info(name);
}

std::map<std::string, Checkpoint::DtypeStats> Checkpoint::DtypeSummary() const {
  std::map<std::string, DtypeStats> out;
  for (const auto& [name, file] : where_) {
    auto info = file->Info(name);
    if (!info.ok()) continue;  // unreachable: where_ only holds names present in the file
    DtypeStats& s = out[std::string(SafetensorsDtypeName((*info)->dtype))];
    s.tensors += 1;
    s.elements += (*info)->numel;
    s.bytes += static_cast<int64_t>((*info)->byte_size());
  }
  return out;
}

}  // namespace oft
