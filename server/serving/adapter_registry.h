// Loaded OFTv2 adapter versions for serving, with aliases, a memory budget and persistence.
//
// The registry loads adapter versions from the AdapterStore onto in-memory ServingAdapters
// (rotation blocks built once, never attached to the shared base model). Lifecycle, as in
// TF Serving: a version is loaded completely before anything refers to it; aliases
// ("prod" -> name:version) are swapped under a lock; requests hold an AdapterHandle
// (shared_ptr) for their whole life, so an unloaded, evicted or replaced version stays usable
// by them and is freed when the last handle drops. A failed load changes nothing.
//
// Memory: loaded versions of all tenants, and what engines hold beside them (SetHolderBytes),
// share `memory_budget_bytes`; after a load the
// least recently used versions (other than the new one) leave the registry until the rest
// fits. Versions in use by requests are evicted last; evicting one only stops new requests
// from finding it loaded (it is loaded again on demand). Requests naming an unloaded
// version load it on demand.
//
// Persistence: with a state_dir, the loaded set and the aliases are written to
// <state_dir>/serving_state.json (atomically) after every change and restored by Create().
//
// This header is LibTorch-free. Thread-safe: every method may be called from any thread.
#ifndef OFT_SERVER_SERVING_ADAPTER_REGISTRY_H_
#define OFT_SERVER_SERVING_ADAPTER_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/model/served_rotations.h"

namespace oft {

class AdapterStore;
class LlamaModel;
class ServingAdapter;

// One adapter version of one tenant.
struct AdapterId {
  std::string tenant;
  std::string name;
  int64_t version = 0;

  bool operator==(const AdapterId&) const = default;
  bool operator<(const AdapterId& o) const {
    return std::tie(tenant, name, version) < std::tie(o.tenant, o.name, o.version);
  }
};

// A loaded version. Immutable except the in-use counter.
struct LoadedAdapter {
  AdapterId id;
  std::string base_model;
  int64_t memory_bytes = 0;
  absl::Time load_time;
  std::shared_ptr<const ServingAdapter> weights;  // the rotation blocks
  // Requests using it now (maintained by whoever runs them, e.g. the engine).
  mutable std::atomic<int64_t> active_requests{0};
};

// What a request holds: keeps the version alive until released.
using AdapterHandle = std::shared_ptr<const LoadedAdapter>;

struct LoadedAdapterInfo {
  AdapterId id;
  std::string base_model;
  int64_t memory_bytes = 0;
  int64_t active_requests = 0;
  std::vector<std::string> aliases;
  absl::Time load_time;
  std::optional<absl::Time> last_used_time;
};

struct AliasInfo {
  std::string alias;
  AdapterId target;
  std::optional<AdapterId> previous_target;  // SetAlias only
  absl::Time update_time;
};

struct RegistryListing {
  std::vector<LoadedAdapterInfo> adapters;  // by name, then version
  std::vector<AliasInfo> aliases;           // by alias
  int64_t memory_used_bytes = 0;            // all tenants
  int64_t memory_budget_bytes = 0;
};

// A base model adapters can be served on.
struct ServingBase {
  const LlamaModel* model = nullptr;  // not owned; outlives the registry
  std::string config_sha256;          // of its config.json; "" = not checked
};

struct AdapterRegistryOptions {
  AdapterStore* store = nullptr;               // not owned; required
  std::map<std::string, ServingBase> bases;    // base model name -> model; at least one
  int64_t memory_budget_bytes = int64_t{1} << 30;  // for loaded adapters, all tenants
  std::string state_dir;                       // "" = no persistence
  std::function<void(double seconds)> on_load;     // after each successful load (metrics)
  std::function<void(int64_t count)> loaded_count; // after each change of the loaded set
  ServedRotations served_rotations = ServedRotations::kCompact;  // ServingAdapter's form
};

class AdapterRegistry {
 public:
  // Restores the persisted state (versions that fail to load are skipped with a log line;
  // aliases are kept and load on demand). Errors: INVALID_ARGUMENT (missing store or bases,
  // budget < 1, unreadable state file).
  static absl::StatusOr<std::unique_ptr<AdapterRegistry>> Create(AdapterRegistryOptions options);
  ~AdapterRegistry();

  // Loads a version (0 = the latest published) if not loaded, and returns it. Errors:
  // INVALID_ARGUMENT (names), NOT_FOUND, FAILED_PRECONDITION (its base model is not served
  // here or its config differs), RESOURCE_EXHAUSTED (larger than the whole budget),
  // DATA_LOSS (files do not match the manifest), INVALID_ARGUMENT (bad adapter files).
  absl::StatusOr<AdapterHandle> Load(const std::string& tenant, const std::string& name,
                                     int64_t version);

  // Stops routing new requests to the version. NOT_FOUND (not loaded), FAILED_PRECONDITION
  // (an alias points at it).
  absl::Status Unload(const std::string& tenant, const std::string& name, int64_t version);

  // For a request: the version (0 = the latest published version),
  // loaded on demand; marks it used (LRU). Errors: as Load.
  absl::StatusOr<AdapterHandle> Acquire(const std::string& tenant, const std::string& name,
                                        int64_t version);
  // For a request: the alias's current target, loaded on demand. NOT_FOUND for an unknown
  // alias; else as Load.
  absl::StatusOr<AdapterHandle> AcquireAlias(const std::string& tenant, const std::string& alias);

  // Loads the target (0 = latest published) first, then points the alias at it atomically;
  // if the load fails the alias keeps its old target. Errors: INVALID_ARGUMENT (alias name),
  // else as Load.
  absl::StatusOr<AliasInfo> SetAlias(const std::string& tenant, const std::string& alias,
                                     const std::string& name, int64_t version);
  // NOT_FOUND when absent.
  absl::Status DeleteAlias(const std::string& tenant, const std::string& alias);

  RegistryListing List(const std::string& tenant) const;

  // Bytes held for serving outside the loaded versions by `holder` (e.g. an engine's cache
  // of stacked adapter blocks, AdapterBatchCache); replaces that holder's previous value.
  // Counted in the budget: least recently used versions are evicted until everything fits.
  void SetHolderBytes(const std::string& holder, int64_t bytes);

  // Bytes of loaded versions plus every holder's bytes (what the budget counts).
  int64_t memory_used_bytes() const;
  // Bytes of every version not yet freed: loaded ones plus unloaded or evicted ones still
  // held by requests. Drops when the last handle of a removed version is released.
  int64_t live_bytes() const { return live_->load(); }

 private:
  struct Entry {
    AdapterHandle handle;
    std::optional<absl::Time> last_used;
    uint64_t lru_tick = 0;
  };
  struct AliasEntry {
    AdapterId target;
    absl::Time update_time;
  };
  using AliasKey = std::pair<std::string, std::string>;  // tenant, alias

  explicit AdapterRegistry(AdapterRegistryOptions options);
  absl::Status Restore();
  // Loads outside the lock; inserts under it (returns an already inserted copy instead).
  absl::StatusOr<AdapterHandle> LoadAndInsert(const AdapterId& id, bool touch)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<AdapterHandle> LoadFromStore(const AdapterId& id);
  // Evicts until loaded versions + holder bytes fit (never `keep`).
  void EvictOverBudget(const AdapterId& keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Touch(Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Persist() ABSL_LOCKS_EXCLUDED(mu_);

  const AdapterRegistryOptions options_;
  std::shared_ptr<std::atomic<int64_t>> live_ = std::make_shared<std::atomic<int64_t>>(0);
  mutable absl::Mutex mu_;
  std::map<AdapterId, Entry> loaded_ ABSL_GUARDED_BY(mu_);
  std::map<AliasKey, AliasEntry> aliases_ ABSL_GUARDED_BY(mu_);
  int64_t used_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // loaded versions
  std::map<std::string, int64_t> holder_bytes_ ABSL_GUARDED_BY(mu_);
  int64_t holder_total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t tick_ ABSL_GUARDED_BY(mu_) = 0;
  bool restoring_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex persist_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // orders state-file writes
};

}  // namespace oft

#endif  // OFT_SERVER_SERVING_ADAPTER_REGISTRY_H_
