// Versioned, content-hashed store of adapter artifacts:
//
//   <root>/adapters/<tenant>/<name>/<version>/adapter_config.json
//                                            /adapter_model.safetensors
//                                            /manifest.json
//
// Publish() copies a staged adapter (PEFT layout) into the next version atomically: files
// are written into a hidden temp directory, fsynced, made read-only, then the directory is
// renamed to its version number and the parent fsynced. A version, once published, never
// changes; a crash leaves either no version or a complete one (temp dirs are removed on
// Open). manifest.json records the sha256 of every file, the base model and its config
// hash, the job, hyperparameters, final metrics and the creation time.
//
// Thread-safe: one mutex serialises publishes and deletes; reads take no lock beyond
// the file system's guarantees.
#ifndef OFT_SERVER_ARTIFACTS_STORE_H_
#define OFT_SERVER_ARTIFACTS_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace oft {

struct AdapterManifest {
  std::string tenant;
  std::string name;
  int64_t version = 0;
  std::string job_id;
  std::string base_model;               // the base model's name as the server knows it
  std::string base_model_config_sha256; // sha256 of the base model's config.json
  std::string hyperparameters_json;     // the job's hyperparameters and adapter config (JSON)
  std::map<std::string, double> metrics;        // final metrics (loss, eval_loss, steps, ...)
  std::map<std::string, std::string> files;     // file name -> sha256 (hex)
  std::map<std::string, int64_t> file_sizes;    // file name -> bytes
  std::string created_at;               // RFC 3339 UTC

  std::string ToJson() const;
  static absl::StatusOr<AdapterManifest> FromJson(const std::string& text);
};

// What the caller knows about a new version (the store fills tenant/name/version/files).
struct PublishInfo {
  std::string job_id;
  std::string base_model;
  std::string base_model_config_sha256;
  std::string hyperparameters_json = "{}";
  std::map<std::string, double> metrics;
};

class AdapterStore {
 public:
  // Creates <root>/adapters if needed and removes leftovers of interrupted publishes.
  static absl::StatusOr<std::unique_ptr<AdapterStore>> Open(const std::string& root);

  // Publishes `staging_dir` (must hold adapter_config.json and adapter_model.safetensors)
  // as the next version of tenant/name. Errors: INVALID_ARGUMENT (bad names, missing files),
  // file-system errors.
  absl::StatusOr<AdapterManifest> Publish(const std::string& tenant, const std::string& name,
                                          const std::string& staging_dir, const PublishInfo& info)
      ABSL_LOCKS_EXCLUDED(mu_);

  // version 0 = the latest. NOT_FOUND when absent.
  absl::StatusOr<AdapterManifest> Get(const std::string& tenant, const std::string& name,
                                      int64_t version = 0) const;
  // Every version of every adapter of `tenant`, by name then version.
  absl::StatusOr<std::vector<AdapterManifest>> List(const std::string& tenant) const;
  // The directory of a published version (for loading / downloading).
  absl::StatusOr<std::string> VersionDir(const std::string& tenant, const std::string& name,
                                         int64_t version) const;
  // Recomputes every file's sha256 against the manifest. DATA_LOSS naming the file on mismatch.
  absl::Status Verify(const std::string& tenant, const std::string& name, int64_t version) const;
  // Removes one version. NOT_FOUND when absent.
  absl::Status Delete(const std::string& tenant, const std::string& name, int64_t version)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit AdapterStore(std::string root) : root_(std::move(root)) {}
  std::string AdapterDir(const std::string& tenant, const std::string& name) const;
  std::vector<int64_t> Versions(const std::string& tenant, const std::string& name) const;

  const std::string root_;
  mutable absl::Mutex mu_;
};

}  // namespace oft

#endif  // OFT_SERVER_ARTIFACTS_STORE_H_
