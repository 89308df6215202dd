#include "server/artifacts/store.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/artifacts/peft_format.h"
#include "server/common/file_util.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"

namespace oft {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kManifest[] = "manifest.json";
constexpr const char* kAdapterFiles[] = {kAdapterConfigFile, kAdapterWeightsFile};

std::string NowRfc3339() {
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool IsVersionName(const std::string& s) {
  return !s.empty() && s.size() < 12 && std::all_of(s.begin(), s.end(), ::isdigit) && s[0] != '0';
}

}  // namespace

std::string AdapterManifest::ToJson() const {
  json j;
  j["tenant"] = tenant;
  j["name"] = name;
  j["version"] = version;
  j["job_id"] = job_id;
  j["base_model"] = base_model;
  j["base_model_config_sha256"] = base_model_config_sha256;
  json hp = json::parse(hyperparameters_json, nullptr, false);
  j["hyperparameters"] = hp.is_discarded() ? json(hyperparameters_json) : hp;
  j["metrics"] = metrics;
  j["files"] = json::object();
  for (const auto& [f, sha] : files) {
    j["files"][f] = {{"sha256", sha}, {"bytes", file_sizes.count(f) ? file_sizes.at(f) : 0}};
  }
  j["created_at"] = created_at;
  j["format"] = "peft-oft";
  j["peft_version"] = kPeftFormatVersion;
  return j.dump(2) + "\n";
}

absl::StatusOr<AdapterManifest> AdapterManifest::FromJson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError("manifest.json is not a JSON object");
  AdapterManifest m;
  try {
    m.tenant = j.at("tenant").get<std::string>();
    m.name = j.at("name").get<std::string>();
    m.version = j.at("version").get<int64_t>();
    m.job_id = j.value("job_id", "");
    m.base_model = j.value("base_model", "");
    m.base_model_config_sha256 = j.value("base_model_config_sha256", "");
    m.hyperparameters_json = j.contains("hyperparameters") ? j["hyperparameters"].dump() : "{}";
    if (j.contains("metrics")) m.metrics = j["metrics"].get<std::map<std::string, double>>();
    for (const auto& [f, v] : j.at("files").items()) {
      m.files[f] = v.at("sha256").get<std::string>();
      m.file_sizes[f] = v.value("bytes", int64_t{0});
    }
    m.created_at = j.value("created_at", "");
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("manifest.json: ", e.what()));
  }
  return m;
}

absl::StatusOr<std::unique_ptr<AdapterStore>> AdapterStore::Open(const std::string& root) {
  std::error_code ec;
  fs::create_directories(fs::path(root) / "adapters", ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", root, "/adapters: ", ec.message()));
  // Remove temp dirs left by publishes interrupted by a crash.
  for (auto it = fs::recursive_directory_iterator(fs::path(root) / "adapters", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it.depth() == 2 && it->is_directory() && it->path().filename().string().rfind(".tmp-", 0) == 0) {
      fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
      for (const auto& f : fs::directory_iterator(it->path(), ec)) {
        fs::permissions(f.path(), fs::perms::owner_all, fs::perm_options::add, ec);
      }
      fs::remove_all(it->path(), ec);
      it.disable_recursion_pending();
    }
  }
  return std::unique_ptr<AdapterStore>(new AdapterStore(root));
}

std::string AdapterStore::AdapterDir(const std::string& tenant, const std::string& name) const {
  return (fs::path(root_) / "adapters" / tenant / name).string();
}

std::vector<int64_t> AdapterStore::Versions(const std::string& tenant, const std::string& name) const {
  std::vector<int64_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(AdapterDir(tenant, name), ec)) {
    const std::string f = e.path().filename().string();
    if (e.is_directory() && IsVersionName(f)) out.push_back(std::stoll(f));
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<AdapterManifest> AdapterStore::Publish(const std::string& tenant,
                                                      const std::string& name,
                                                      const std::string& staging_dir,
                                                      const PublishInfo& info) {
  OFT_RETURN_IF_ERROR(ValidateName("tenant", tenant));
  OFT_RETURN_IF_ERROR(ValidateName("adapter name", name));
  for (const char* f : kAdapterFiles) {
    if (!fs::is_regular_file(fs::path(staging_dir) / f)) {
      return absl::InvalidArgumentError(absl::StrCat("staged adapter in ", staging_dir, " lacks ", f));
    }
  }
  absl::MutexLock lock(&mu_);
  const auto versions = Versions(tenant, name);
  AdapterManifest m;
  m.tenant = tenant;
  m.name = name;
  m.version = versions.empty() ? 1 : versions.back() + 1;
  m.job_id = info.job_id;
  m.base_model = info.base_model;
  m.base_model_config_sha256 = info.base_model_config_sha256;
  m.hyperparameters_json = info.hyperparameters_json;
  m.metrics = info.metrics;
  m.created_at = NowRfc3339();

  const fs::path parent = AdapterDir(tenant, name);
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", parent.string(), ": ", ec.message()));
  const fs::path tmp = parent / absl::StrCat(".tmp-", m.version, "-", ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", tmp.string(), ": ", ec.message()));
  auto cleanup = [&](absl::Status s) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return s;
  };
  for (const char* f : kAdapterFiles) {
    auto bytes = ReadFile((fs::path(staging_dir) / f).string());
    if (!bytes.ok()) return cleanup(bytes.status());
    m.files[f] = Sha256Hex(*bytes);
    m.file_sizes[f] = static_cast<int64_t>(bytes->size());
    if (auto s = WriteFileAtomic((tmp / f).string(), *bytes, 0444); !s.ok()) return cleanup(s);
  }
  if (auto s = WriteFileAtomic((tmp / kManifest).string(), m.ToJson(), 0444); !s.ok()) return cleanup(s);
  // The rename claims the version. Another process (a training worker publishing into the
  // same store) may have claimed it first: then take the next free one.
  fs::path final_dir = parent / std::to_string(m.version);
  for (int attempt = 0;; ++attempt) {
    fs::rename(tmp, final_dir, ec);
    if (!ec) break;
    const bool taken = ec == std::errc::directory_not_empty || ec == std::errc::file_exists;
    if (!taken || attempt == 100) {
      return cleanup(absl::InternalError(absl::StrCat("rename to ", final_dir.string(), ": ", ec.message())));
    }
    const auto now = Versions(tenant, name);
    m.version = std::max(m.version, now.empty() ? int64_t{0} : now.back()) + 1;
    if (auto s = WriteFileAtomic((tmp / kManifest).string(), m.ToJson(), 0444); !s.ok()) return cleanup(s);
    final_dir = parent / std::to_string(m.version);
  }
  ::chmod(final_dir.c_str(), 0555);
  OFT_RETURN_IF_ERROR(FsyncDirectory(parent.string()));
  return m;
}

absl::StatusOr<std::string> AdapterStore::VersionDir(const std::string& tenant, const std::string& name,
                                                     int64_t version) const {
  OFT_RETURN_IF_ERROR(ValidateName("tenant", tenant));
  OFT_RETURN_IF_ERROR(ValidateName("adapter name", name));
  if (version <= 0) {
    const auto v = Versions(tenant, name);
    if (v.empty()) return absl::NotFoundError(absl::StrCat("adapter ", name, " has no versions"));
    version = v.back();
  }
  const fs::path d = fs::path(AdapterDir(tenant, name)) / std::to_string(version);
  if (!fs::is_directory(d)) {
    return absl::NotFoundError(absl::StrCat("adapter ", name, " version ", version, " not found"));
  }
  return d.string();
}

absl::StatusOr<AdapterManifest> AdapterStore::Get(const std::string& tenant, const std::string& name,
                                                  int64_t version) const {
  OFT_ASSIGN_OR_RETURN(std::string dir, VersionDir(tenant, name, version));
  OFT_ASSIGN_OR_RETURN(std::string text, ReadFile((fs::path(dir) / kManifest).string(), 1 << 20));
  return AdapterManifest::FromJson(text);
}

absl::StatusOr<std::vector<AdapterManifest>> AdapterStore::List(const std::string& tenant) const {
  OFT_RETURN_IF_ERROR(ValidateName("tenant", tenant));
  std::vector<AdapterManifest> out;
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(fs::path(root_) / "adapters" / tenant, ec)) {
    if (e.is_directory() && ValidateName("name", e.path().filename().string()).ok()) {
      names.push_back(e.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    for (int64_t v : Versions(tenant, n)) {
      OFT_ASSIGN_OR_RETURN(AdapterManifest m, Get(tenant, n, v));
      out.push_back(std::move(m));
    }
  }
  return out;
}

absl::Status AdapterStore::Verify(const std::string& tenant, const std::string& name,
                                  int64_t version) const {
  OFT_ASSIGN_OR_RETURN(std::string dir, VersionDir(tenant, name, version));
  OFT_ASSIGN_OR_RETURN(AdapterManifest m, Get(tenant, name, version));
  for (const auto& [f, sha] : m.files) {
    OFT_ASSIGN_OR_RETURN(std::string got, Sha256File((fs::path(dir) / f).string()));
    if (got != sha) {
      return absl::DataLossError(absl::StrCat("adapter ", name, " version ", m.version, ": ", f,
                                              " has sha256 ", got, ", manifest says ", sha));
    }
  }
  return absl::OkStatus();
}

absl::Status AdapterStore::Delete(const std::string& tenant, const std::string& name, int64_t version) {
  absl::MutexLock lock(&mu_);
  OFT_ASSIGN_OR_RETURN(std::string dir, VersionDir(tenant, name, version));
  std::error_code ec;
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add, ec);
  for (const auto& f : fs::directory_iterator(dir, ec)) {
    fs::permissions(f.path(), fs::perms::owner_all, fs::perm_options::add, ec);
  }
  fs::remove_all(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("remove ", dir, ": ", ec.message()));
  return FsyncDirectory(AdapterDir(tenant, name));
}

}  // namespace oft
