// The LibTorch-free facade of inference serving (issue 6) for the gRPC service: one adapter
// registry shared by every base model, one continuous-batching engine per base model, and
// request validation (errors name the GenerateRequest field).
//
// Construct once in server/main.cc (the composition root) after loading the base models,
// then pass it to InferenceServiceImpl. Thread-safe: every method from any thread.
#ifndef OFT_SERVER_SERVING_SERVING_H_
#define OFT_SERVER_SERVING_SERVING_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/data/chat_template.h"
#include "server/data/dataset.h"
#include "server/model/served_rotations.h"
#include "server/serving/adapter_registry.h"
#include "server/serving/generate_params.h"
#include "server/serving/generation_types.h"

namespace oft {

class AdapterStore;
class Engine;
class LlamaModel;
class Tokenizer;

struct ServedBaseModel {
  std::string name;                    // e.g. "default"
  const LlamaModel* model = nullptr;   // not owned; outlives the backend; no adapters attached
  const Tokenizer* tokenizer = nullptr;  // not owned; required
  std::optional<ChatTemplateKind> chat_template;  // unset: chat prompts are rejected
  std::string config_sha256;           // of its config.json ("" = adapters not checked)
};

struct InferenceOptions {
  AdapterStore* store = nullptr;              // not owned; required
  std::vector<ServedBaseModel> bases;         // at least one; the first is the default
  int64_t adapter_memory_budget_bytes = int64_t{1} << 30;
  std::string state_dir;                      // loaded set + aliases persisted here; "" = off
  int engine_threads = 0;                     // torch threads per engine; 0 = per Forward by its work
  int64_t max_batch = 16;                     // rows per decode step and base model
  ServedRotations served_rotations = ServedRotations::kCompact;  // adapters' served form
  std::function<void(double seconds)> on_adapter_load;  // oft_adapter_load_seconds
  std::function<void(int64_t count)> on_adapters_loaded;  // oft_adapters_loaded
  std::function<void(int64_t tokens)> on_tokens;        // oft_generated_tokens_total
  std::function<void(double seconds)> on_first_token;   // oft_time_to_first_token_seconds
};


struct GenerateStart {
  uint64_t ticket = 0;                  // for CancelGenerate
  std::optional<AdapterId> served_by;   // unset = base only
  uint64_t seed = 0;
  int64_t prompt_tokens = 0;
  std::string base_model;
};

class InferenceBackend {
 public:
  // INVALID_ARGUMENT for missing store/bases/models/tokenizers or duplicate base names;
  // errors restoring the registry state.
  static absl::StatusOr<std::unique_ptr<InferenceBackend>> Create(InferenceOptions options);
  // Stops the engines (requests in flight end with UNAVAILABLE).
  ~InferenceBackend();

  // As AdapterRegistry (errors listed there), for the caller's tenant.
  absl::StatusOr<LoadedAdapterInfo> LoadAdapter(const std::string& tenant, const std::string& name,
                                                int64_t version);
  absl::Status UnloadAdapter(const std::string& tenant, const std::string& name, int64_t version);
  RegistryListing ListLoadedAdapters(const std::string& tenant) const;
  absl::StatusOr<AliasInfo> SetAlias(const std::string& tenant, const std::string& alias,
                                     const std::string& name, int64_t version);
  absl::Status DeleteAlias(const std::string& tenant, const std::string& alias);

  // Validates, resolves the adapter (on-demand load), tokenizes and queues the request.
  // `on_chunk` / `on_done` run on an engine thread and must not block; on_done is called
  // exactly once iff this returns OK. Errors: INVALID_ARGUMENT (field named), NOT_FOUND
  // (base model, adapter, alias), FAILED_PRECONDITION (adapter of another base; chat without
  // a template), RESOURCE_EXHAUSTED (queue full), DATA_LOSS (adapter files damaged).
  absl::StatusOr<GenerateStart> StartGenerate(
      const std::string& tenant, const GenerateParams& params,
      std::function<void(const GenerationChunk&)> on_chunk,
      std::function<void(const GenerationOutcome&)> on_done);
  // Ends a request with CANCELLED before its next token; unknown tickets are ignored.
  void CancelGenerate(uint64_t ticket);

  AdapterRegistry& registry() { return *registry_; }

 private:
  struct Base;
  InferenceBackend();
  std::vector<std::unique_ptr<Base>> bases_;
  std::unique_ptr<AdapterRegistry> registry_;
};

// A base model loaded for serving, with its tokenizer (LibTorch stays inside `owner`).
struct LoadedServingBase {
  std::shared_ptr<void> owner;  // keeps the model and tokenizer alive
  ServedBaseModel served;       // points into `owner`
};

// Loads `dir` (an HF model directory) on `device` ("cpu": fp32; "cuda:N": the checkpoint's
// dtype) with its tokenizer.json, for InferenceOptions::bases. On the CPU (fp32) every dense
// Linear also gets a packed copy of its weight for decode-size GEMMs (PackLinearsForDecode;
// about the base weights' size again in memory). Errors as LlamaModel::Load and
// Tokenizer::FromFile, prefixed with the model's name.
absl::StatusOr<LoadedServingBase> LoadServingBase(const std::string& name, const std::string& dir,
                                                  const std::string& device,
                                                  std::optional<ChatTemplateKind> chat_template,
                                                  const std::string& config_sha256);

// Whether the PEFT OFT adapter in `dir` loads onto `base` for serving: ReadPeftAdapterFiles
// (tensor names, floating dtypes, finite values) then PrepareServingAdapter (every targeted
// module exists, shapes match, no tensor without a module). Errors INVALID_ARGUMENT /
// NOT_FOUND naming the file and the tensor or module. Loads nothing into the registry.
absl::Status CheckAdapterLoads(const ServedBaseModel& base, const std::string& dir);

}  // namespace oft

#endif  // OFT_SERVER_SERVING_SERVING_H_
