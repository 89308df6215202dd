#include "server/serving/adapter_registry.h"

#include <chrono>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/artifacts/peft_format.h"
#include "server/artifacts/store.h"
#include "server/common/file_util.h"
#include "server/common/names.h"
#include "server/common/runtime.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/model/llama.h"
#include "server/model/safetensors_torch.h"

namespace oft {
namespace {

namespace fs = std::filesystem;

constexpr char kStateFile[] = "serving_state.json";

std::string Describe(const AdapterId& id) {
  return absl::StrCat(id.name, ":", id.version);
}

std::string TimeString(absl::Time t) { return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone()); }

absl::Time ParseTimeOr(const std::string& s, absl::Time fallback) {
  absl::Time t;
  std::string err;
  return absl::ParseTime(absl::RFC3339_full, s, &t, &err) ? t : fallback;
}

}  // namespace

AdapterRegistry::AdapterRegistry(AdapterRegistryOptions options) : options_(std::move(options)) {}

AdapterRegistry::~AdapterRegistry() = default;

absl::StatusOr<std::unique_ptr<AdapterRegistry>> AdapterRegistry::Create(
    AdapterRegistryOptions options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("AdapterRegistryOptions.store is required");
  if (options.bases.empty()) return absl::InvalidArgumentError("AdapterRegistryOptions.bases is empty");
  for (const auto& [name, base] : options.bases) {
    if (base.model == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("base model \"", name, "\" has no model"));
    }
  }
  if (options.memory_budget_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("memory_budget_bytes must be >= 1, got ",
                                                   options.memory_budget_bytes));
  }
  std::unique_ptr<AdapterRegistry> r(new AdapterRegistry(std::move(options)));
  OFT_RETURN_IF_ERROR(r->Restore());
  return r;
}

absl::Status AdapterRegistry::Restore() {
  if (options_.state_dir.empty()) return absl::OkStatus();
  const std::string path = (fs::path(options_.state_dir) / kStateFile).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::OkStatus();
  OFT_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 64 << 20));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  {
    absl::MutexLock lock(&mu_);
    restoring_ = true;
    for (const auto& a : j.value("aliases", nlohmann::json::array())) {
      AliasEntry e;
      e.target = {a.value("tenant", ""), a.value("name", ""), a.value("version", int64_t{0})};
      e.update_time = ParseTimeOr(a.value("update_time", ""), absl::Now());
      aliases_[{e.target.tenant, a.value("alias", "")}] = e;
    }
  }
  for (const auto& l : j.value("loaded", nlohmann::json::array())) {
    AdapterId id{l.value("tenant", ""), l.value("name", ""), l.value("version", int64_t{0})};
    auto h = LoadAndInsert(id, /*touch=*/false);
    if (!h.ok()) {
      std::cerr << "serving: not restoring adapter " << id.tenant << "/" << Describe(id) << ": "
                << h.status() << "\n";
    }
  }
  {
    absl::MutexLock lock(&mu_);
    restoring_ = false;
  }
  return absl::OkStatus();
}

absl::StatusOr<AdapterHandle> AdapterRegistry::LoadFromStore(const AdapterId& id) {
  const auto start = std::chrono::steady_clock::now();
  OFT_ASSIGN_OR_RETURN(AdapterManifest manifest, options_.store->Get(id.tenant, id.name, id.version));
  auto base = options_.bases.find(manifest.base_model);
  if (base == options_.bases.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "adapter ", Describe(id), " was trained on base model \"", manifest.base_model,
        "\", which this server does not serve"));
  }
  if (!base->second.config_sha256.empty() && !manifest.base_model_config_sha256.empty() &&
      base->second.config_sha256 != manifest.base_model_config_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        "adapter ", Describe(id), " was trained on a different \"", manifest.base_model,
        "\" (config.json sha256 ", manifest.base_model_config_sha256, ", served: ",
        base->second.config_sha256, ")"));
  }
  OFT_RETURN_IF_ERROR(options_.store->Verify(id.tenant, id.name, id.version));
  OFT_ASSIGN_OR_RETURN(std::string dir, options_.store->VersionDir(id.tenant, id.name, id.version));
  OFT_ASSIGN_OR_RETURN(PeftAdapterFiles files, ReadPeftAdapterFiles(dir));
  OFT_ASSIGN_OR_RETURN(std::shared_ptr<const ServingAdapter> weights,
                       base->second.model->PrepareServingAdapter(files.config.oft, files.config.targets,
                                                                 files.packed,
                                                                 options_.served_rotations));
  if (weights->bytes() > options_.memory_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "adapter ", Describe(id), " needs ", weights->bytes(), " bytes, more than the whole adapter "
        "memory budget of ", options_.memory_budget_bytes));
  }
  const int64_t bytes = weights->bytes();
  live_->fetch_add(bytes);
  auto live = live_;
  auto* loaded = new LoadedAdapter();
  loaded->id = id;
  loaded->base_model = manifest.base_model;
  loaded->memory_bytes = bytes;
  loaded->load_time = absl::Now();
  loaded->weights = std::move(weights);
  AdapterHandle handle(loaded, [live, bytes](const LoadedAdapter* p) {
    delete p;
    live->fetch_sub(bytes);
  });
  if (options_.on_load) {
    options_.on_load(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return handle;
}

absl::StatusOr<AdapterHandle> AdapterRegistry::LoadAndInsert(const AdapterId& requested, bool touch) {
  OFT_RETURN_IF_ERROR(ValidateName("tenant", requested.tenant));
  OFT_RETURN_IF_ERROR(ValidateName("adapter name", requested.name));
  if (requested.version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("version must be >= 0, got ", requested.version));
  }
  AdapterId id = requested;
  if (id.version == 0) {
    OFT_ASSIGN_OR_RETURN(AdapterManifest m, options_.store->Get(id.tenant, id.name, 0));
    id.version = m.version;
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = loaded_.find(id);
    if (it != loaded_.end()) {
      if (touch) Touch(it->second);
      return it->second.handle;
    }
  }
  OFT_ASSIGN_OR_RETURN(AdapterHandle handle, LoadFromStore(id));
  int64_t count = 0;
  bool persist = false;
  bool evicted = false;
  {
    absl::MutexLock lock(&mu_);
    auto [it, inserted] = loaded_.try_emplace(id);
    if (inserted) {
      it->second.handle = handle;
      it->second.lru_tick = ++tick_;  // a fresh load counts as the most recent use
      used_bytes_ += handle->memory_bytes;
      const size_t before = loaded_.size();
      EvictOverBudget(id);
      evicted = loaded_.size() < before;
      persist = !restoring_;
    }
    if (touch) Touch(it->second);
    handle = it->second.handle;  // a concurrent load of the same version may have won
    count = static_cast<int64_t>(loaded_.size());
  }
  if (options_.loaded_count) options_.loaded_count(count);
  // Evicted versions no request holds are freed now: give their GPU blocks back.
  if (evicted) ReleaseCachedCudaMemory();
  if (persist) Persist();
  return handle;
}

void AdapterRegistry::Touch(Entry& e) {
  e.last_used = absl::Now();
  e.lru_tick = ++tick_;
}

void AdapterRegistry::EvictOverBudget(const AdapterId& keep) {
  while (used_bytes_ + holder_total_ > options_.memory_budget_bytes) {
    // Least recently used first; versions in use by requests only when nothing else is left.
    auto victim = loaded_.end();
    for (int pass = 0; pass < 2 && victim == loaded_.end(); ++pass) {
      for (auto it = loaded_.begin(); it != loaded_.end(); ++it) {
        if (it->first == keep) continue;
        if (pass == 0 && it->second.handle->active_requests.load() > 0) continue;
        if (victim == loaded_.end() || it->second.lru_tick < victim->second.lru_tick) victim = it;
      }
    }
    if (victim == loaded_.end()) return;
    used_bytes_ -= victim->second.handle->memory_bytes;
    loaded_.erase(victim);
  }
}

absl::StatusOr<AdapterHandle> AdapterRegistry::Load(const std::string& tenant,
                                                    const std::string& name, int64_t version) {
  return LoadAndInsert({tenant, name, version}, /*touch=*/false);
}

absl::StatusOr<AdapterHandle> AdapterRegistry::Acquire(const std::string& tenant,
                                                       const std::string& name, int64_t version) {
  // Version 0 resolves to the latest *published* version (one manifest read), so the
  // adapter of a job that just finished is served at once, loaded on demand.
  return LoadAndInsert({tenant, name, version}, /*touch=*/true);
}

absl::StatusOr<AdapterHandle> AdapterRegistry::AcquireAlias(const std::string& tenant,
                                                            const std::string& alias) {
  AdapterId target;
  {
    absl::MutexLock lock(&mu_);
    auto a = aliases_.find({tenant, alias});
    if (a == aliases_.end()) {
      return absl::NotFoundError(absl::StrCat("alias \"", alias, "\" does not exist"));
    }
    target = a->second.target;
    auto it = loaded_.find(target);
    if (it != loaded_.end()) {
      Touch(it->second);
      return it->second.handle;
    }
  }
  return LoadAndInsert(target, /*touch=*/true);  // evicted, or not restored: on demand
}

absl::Status AdapterRegistry::Unload(const std::string& tenant, const std::string& name,
                                     int64_t version) {
  if (version <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("version must be > 0, got ", version));
  }
  const AdapterId id{tenant, name, version};
  int64_t count = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = loaded_.find(id);
    if (it == loaded_.end()) {
      return absl::NotFoundError(absl::StrCat("adapter ", Describe(id), " is not loaded"));
    }
    for (const auto& [key, a] : aliases_) {
      if (a.target == id) {
        return absl::FailedPreconditionError(absl::StrCat(
            "alias \"", key.second, "\" points at ", Describe(id), ": move or delete it first"));
      }
    }
    used_bytes_ -= it->second.handle->memory_bytes;
    loaded_.erase(it);  // requests in flight keep their handles
    count = static_cast<int64_t>(loaded_.size());
  }
  if (options_.loaded_count) options_.loaded_count(count);
  Persist();
  return absl::OkStatus();
}

absl::StatusOr<AliasInfo> AdapterRegistry::SetAlias(const std::string& tenant,
                                                    const std::string& alias,
                                                    const std::string& name, int64_t version) {
  OFT_RETURN_IF_ERROR(ValidateName("alias", alias));
  OFT_ASSIGN_OR_RETURN(AdapterHandle h, LoadAndInsert({tenant, name, version}, /*touch=*/true));
  AliasInfo info;
  info.alias = alias;
  info.target = h->id;
  info.update_time = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    auto& e = aliases_[{tenant, alias}];
    if (!e.target.name.empty()) info.previous_target = e.target;
    e.target = h->id;
    e.update_time = info.update_time;
  }
  Persist();
  return info;
}

absl::Status AdapterRegistry::DeleteAlias(const std::string& tenant, const std::string& alias) {
  {
    absl::MutexLock lock(&mu_);
    if (aliases_.erase({tenant, alias}) == 0) {
      return absl::NotFoundError(absl::StrCat("alias \"", alias, "\" does not exist"));
    }
  }
  Persist();
  return absl::OkStatus();
}

RegistryListing AdapterRegistry::List(const std::string& tenant) const {
  RegistryListing out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : loaded_) {
    if (id.tenant != tenant) continue;
    LoadedAdapterInfo i;
    i.id = id;
    i.base_model = e.handle->base_model;
    i.memory_bytes = e.handle->memory_bytes;
    i.active_requests = e.handle->active_requests.load();
    i.load_time = e.handle->load_time;
    i.last_used_time = e.last_used;
    for (const auto& [key, a] : aliases_) {
      if (key.first == tenant && a.target == id) i.aliases.push_back(key.second);
    }
    out.adapters.push_back(std::move(i));
  }
  for (const auto& [key, a] : aliases_) {
    if (key.first != tenant) continue;
    out.aliases.push_back({key.second, a.target, std::nullopt, a.update_time});
  }
  out.memory_used_bytes = used_bytes_ + holder_total_;
  out.memory_budget_bytes = options_.memory_budget_bytes;
  return out;
}

int64_t AdapterRegistry::memory_used_bytes() const {
  absl::MutexLock lock(&mu_);
  return used_bytes_ + holder_total_;
}

void AdapterRegistry::SetHolderBytes(const std::string& holder, int64_t bytes) {
  int64_t count = -1;
  {
    absl::MutexLock lock(&mu_);
    int64_t& slot = holder_bytes_[holder];
    holder_total_ += bytes - slot;
    slot = bytes;
    const size_t before = loaded_.size();
    EvictOverBudget(AdapterId{});  // no version is exempt
    if (loaded_.size() != before) count = static_cast<int64_t>(loaded_.size());
  }
  if (count >= 0) {
    if (options_.loaded_count) options_.loaded_count(count);
    Persist();
  }
}

void AdapterRegistry::Persist() {
  if (options_.state_dir.empty()) return;
  absl::MutexLock order(&persist_mu_);
  nlohmann::json j = {{"loaded", nlohmann::json::array()}, {"aliases", nlohmann::json::array()}};
  {
    absl::MutexLock lock(&mu_);
    if (restoring_) return;
    for (const auto& [id, e] : loaded_) {
      j["loaded"].push_back({{"tenant", id.tenant}, {"name", id.name}, {"version", id.version}});
    }
    for (const auto& [key, a] : aliases_) {
      j["aliases"].push_back({{"tenant", key.first}, {"alias", key.second},
                              {"name", a.target.name}, {"version", a.target.version},
                              {"update_time", TimeString(a.update_time)}});
    }
  }
  std::error_code ec;
  fs::create_directories(options_.state_dir, ec);
  const absl::Status s =
      WriteFileAtomic((fs::path(options_.state_dir) / kStateFile).string(), j.dump(2) + "\n");
  if (!s.ok()) std::cerr << "serving: cannot save the loaded adapters and aliases: " << s << "\n";
}

}  // namespace oft
