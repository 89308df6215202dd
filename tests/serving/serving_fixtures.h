// Shared fixtures for serving tests: a tiny random Llama (tests/train/tiny_model.h) and
// random OFT adapters published into a temporary AdapterStore.
#ifndef OFT_TESTS_SERVING_SERVING_FIXTURES_H_
#define OFT_TESTS_SERVING_SERVING_FIXTURES_H_

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "server/artifacts/peft_format.h"
#include "server/artifacts/store.h"
#include "server/model/llama.h"
#include "server/serving/adapter_registry.h"
#include "tests/train/tiny_model.h"

namespace oft::testing {

inline std::string MakeTempDir(const std::string& tag) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (tag + "-XXXXXX")).string();
  char* p = mkdtemp(tmpl.data());
  return p ? std::string(p) : std::string();
}

// A random adapter (init_weights = false, seeded) of block size `block` on `targets`.
inline OftConfig RandomOftConfig(int64_t block = 8, bool share = false) {
  OftConfig c;
  c.oft_block_size = block;
  c.init_weights = false;
  c.block_share = share;
  return c;
}

inline TargetSpec AllLinear() {
  TargetSpec t;
  t.target_modules = {"all-linear"};
  return t;
}

// Attaches a seeded random adapter `name` to `model` (caller removes it when done).
inline absl::Status AddRandomAdapter(LlamaModel& model, const std::string& name, uint64_t seed,
                                     const OftConfig& config = RandomOftConfig(),
                                     const TargetSpec& targets = AllLinear()) {
  at::manual_seed(seed);
  absl::Status s = model.AddAdapter(name, config, targets);
  if (!s.ok()) return s;
  model.SetTraining(false);
  return absl::OkStatus();
}

// Publishes a seeded random adapter as the next version of tenant/name for base `base`.
inline absl::StatusOr<AdapterManifest> PublishRandomAdapter(
    AdapterStore& store, LlamaModel& scratch, const std::string& tenant, const std::string& name,
    uint64_t seed, const std::string& base = "tiny", const OftConfig& config = RandomOftConfig(),
    const TargetSpec& targets = AllLinear()) {
  const std::string tmp = "scratch-" + std::to_string(seed);
  absl::Status s = AddRandomAdapter(scratch, tmp, seed, config, targets);
  if (!s.ok()) return s;
  const std::string staging = MakeTempDir("oft-staging");
  s = SavePeftAdapter(scratch, tmp, targets, base, staging);
  scratch.RemoveAdapter(tmp).IgnoreError();
  if (!s.ok()) return s;
  PublishInfo info;
  info.base_model = base;
  info.job_id = "job-" + std::to_string(seed);
  auto m = store.Publish(tenant, name, staging, info);
  std::filesystem::remove_all(staging);
  return m;
}

// The serving form of adapter `name` attached to `attached`, prepared on `serving` (as the
// registry does on load); null after a failed expectation.
inline std::shared_ptr<const ServingAdapter> Prepare(
    const LlamaModel& serving, const LlamaModel& attached, const std::string& name,
    const TargetSpec& targets = AllLinear(), ServedRotations form = ServedRotations::kCompact) {
  auto params = attached.AdapterParameters(name);
  EXPECT_TRUE(params.ok()) << params.status();
  auto cfg = attached.AdapterConfig(name);
  if (!params.ok() || !cfg.ok()) return nullptr;
  auto a = serving.PrepareServingAdapter(*cfg, targets, *params, form);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *a : nullptr;
}

// A registry handle (tenant "t", version 1) holding `weights`, for engine requests.
inline AdapterHandle Handle(std::shared_ptr<const ServingAdapter> weights, const std::string& name) {
  auto h = std::make_shared<LoadedAdapter>();
  h->id = {"t", name, 1};
  h->weights = std::move(weights);
  return h;
}

}  // namespace oft::testing

#endif  // OFT_TESTS_SERVING_SERVING_FIXTURES_H_
