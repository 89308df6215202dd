#include "server/serving/serving.h"

#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "server/common/names.h"
#include "server/artifacts/peft_format.h"
#include "server/common/status_macros.h"
#include "server/model/llama.h"
#include "server/model/packed_linear.h"
#include "server/model/tokenizer.h"
#include "server/serving/engine.h"
#include "server/serving/prompt_ids.h"

namespace oft {

namespace {

constexpr int kTicketShift = 48;  // ticket = base index << 48 | engine request id
// Linear calls of at most this many rows (decode steps, short prefills) use the packed
// weights; longer prefills use at::linear, where packing per call is amortised.
constexpr int64_t kPackedDecodeRows = 64;

LoadedAdapterInfo InfoOf(const AdapterRegistry& registry, const AdapterHandle& h) {
  for (const auto& i : registry.List(h->id.tenant).adapters) {
    if (i.id == h->id) return i;
  }
  LoadedAdapterInfo i;  // evicted meanwhile
  i.id = h->id;
  i.base_model = h->base_model;
  i.memory_bytes = h->memory_bytes;
  i.active_requests = h->active_requests.load();
  i.load_time = h->load_time;
  return i;
}

}  // namespace

struct InferenceBackend::Base {
  ServedBaseModel spec;
  std::unique_ptr<Engine> engine;
};

InferenceBackend::InferenceBackend() = default;

InferenceBackend::~InferenceBackend() {
  for (auto& b : bases_) b->engine->Stop();
}

absl::StatusOr<std::unique_ptr<InferenceBackend>> InferenceBackend::Create(InferenceOptions options) {
  if (options.bases.empty()) return absl::InvalidArgumentError("InferenceOptions.bases is empty");
  std::unique_ptr<InferenceBackend> b(new InferenceBackend());
  AdapterRegistryOptions ro;
  ro.store = options.store;
  ro.memory_budget_bytes = options.adapter_memory_budget_bytes;
  ro.state_dir = options.state_dir;
  ro.served_rotations = options.served_rotations;
  ro.on_load = options.on_adapter_load;
  ro.loaded_count = options.on_adapters_loaded;
  for (const auto& spec : options.bases) {
    if (spec.model == nullptr || spec.tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("base model \"", spec.name, "\" needs a model and a tokenizer"));
    }
    if (ro.bases.count(spec.name)) {
      return absl::InvalidArgumentError(absl::StrCat("base model \"", spec.name, "\" given twice"));
    }
    ro.bases[spec.name] = ServingBase{spec.model, spec.config_sha256};
    auto base = std::make_unique<Base>();
    base->spec = spec;
    EngineOptions eo;
    eo.model = spec.model;
    eo.tokenizer = spec.tokenizer;
    eo.max_batch = options.max_batch;
    eo.threads = options.engine_threads;
    eo.on_tokens = options.on_tokens;
    eo.on_first_token = options.on_first_token;
    // The registry is made below, before any request can reach the engine.
    eo.on_cache_bytes = [registry = &b->registry_, name = spec.name](int64_t bytes) {
      if (*registry) (*registry)->SetHolderBytes("engine:" + name, bytes);
    };
    OFT_ASSIGN_OR_RETURN(base->engine, Engine::Create(std::move(eo)));
    b->bases_.push_back(std::move(base));
  }
  OFT_ASSIGN_OR_RETURN(b->registry_, AdapterRegistry::Create(std::move(ro)));
  return b;
}

absl::StatusOr<LoadedAdapterInfo> InferenceBackend::LoadAdapter(const std::string& tenant,
                                                               const std::string& name,
                                                               int64_t version) {
  OFT_ASSIGN_OR_RETURN(AdapterHandle h, registry_->Load(tenant, name, version));
  return InfoOf(*registry_, h);
}

absl::Status InferenceBackend::UnloadAdapter(const std::string& tenant, const std::string& name,
                                             int64_t version) {
  OFT_RETURN_IF_ERROR(ValidateName("ref.name", name));
  return registry_->Unload(tenant, name, version);
}

RegistryListing InferenceBackend::ListLoadedAdapters(const std::string& tenant) const {
  return registry_->List(tenant);
}

absl::StatusOr<AliasInfo> InferenceBackend::SetAlias(const std::string& tenant,
                                                     const std::string& alias,
                                                     const std::string& name, int64_t version) {
  return registry_->SetAlias(tenant, alias, name, version);
}

absl::Status InferenceBackend::DeleteAlias(const std::string& tenant, const std::string& alias) {
  return registry_->DeleteAlias(tenant, alias);
}

absl::StatusOr<GenerateStart> InferenceBackend::StartGenerate(
    const std::string& tenant, const GenerateParams& p,
    std::function<void(const GenerationChunk&)> on_chunk,
    std::function<void(const GenerationOutcome&)> on_done) {
  OFT_RETURN_IF_ERROR(ValidateGenerateParams(p));
  size_t base_index = 0;
  if (!p.base_model.empty()) {
    base_index = bases_.size();
    for (size_t i = 0; i < bases_.size(); ++i) {
      if (bases_[i]->spec.name == p.base_model) base_index = i;
    }
    if (base_index == bases_.size()) {
      return absl::NotFoundError(absl::StrCat("base_model \"", p.base_model, "\" is not served here"));
    }
  }
  AdapterHandle adapter;
  if (p.adapter) {
    OFT_ASSIGN_OR_RETURN(adapter, registry_->Acquire(tenant, p.adapter->name, p.adapter->version));
  } else if (p.alias) {
    OFT_ASSIGN_OR_RETURN(adapter, registry_->AcquireAlias(tenant, *p.alias));
  }
  if (adapter) {
    if (!p.base_model.empty() && adapter->base_model != p.base_model) {
      return absl::FailedPreconditionError(absl::StrCat(
          "adapter ", adapter->id.name, ":", adapter->id.version, " belongs to base model \"",
          adapter->base_model, "\", not base_model \"", p.base_model, "\""));
    }
    for (size_t i = 0; i < bases_.size(); ++i) {
      if (bases_[i]->spec.name == adapter->base_model) base_index = i;
    }
  }
  Base& base = *bases_[base_index];
  const Tokenizer& tok = *base.spec.tokenizer;
  OFT_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                       PromptIds(tok, base.spec.chat_template, base.spec.name, p));
  GenerationRequest r;
  r.prompt = ids;
  r.sampling.max_tokens = p.max_tokens == 0 ? 256 : p.max_tokens;
  r.sampling.temperature = p.temperature.value_or(1.0);
  r.sampling.top_p = p.top_p.value_or(1.0);
  r.sampling.top_k = p.top_k.value_or(0);
  r.sampling.stop_strings = p.stop;
  std::set<int32_t> eos(base.spec.model->config().eos_token_ids.begin(),
                        base.spec.model->config().eos_token_ids.end());
  if (tok.eos_id()) eos.insert(*tok.eos_id());
  r.sampling.stop_ids.assign(eos.begin(), eos.end());
  r.sampling.seed = p.seed ? *p.seed : std::random_device{}() * uint64_t{0x100000000} + std::random_device{}();
  r.adapter = adapter;
  r.on_chunk = std::move(on_chunk);
  r.on_done = std::move(on_done);
  GenerateStart start;
  start.seed = r.sampling.seed;
  start.prompt_tokens = static_cast<int64_t>(ids.size());
  start.base_model = base.spec.name;
  if (adapter) start.served_by = adapter->id;
  OFT_ASSIGN_OR_RETURN(uint64_t id, base.engine->Submit(std::move(r)));
  start.ticket = (static_cast<uint64_t>(base_index) << kTicketShift) | id;
  return start;
}

void InferenceBackend::CancelGenerate(uint64_t ticket) {
  const size_t index = ticket >> kTicketShift;
  if (index < bases_.size()) bases_[index]->engine->Cancel(ticket & ((uint64_t{1} << kTicketShift) - 1));
}

absl::StatusOr<LoadedServingBase> LoadServingBase(const std::string& name, const std::string& dir,
                                                  const std::string& device,
                                                  std::optional<ChatTemplateKind> chat_template,
                                                  const std::string& config_sha256) {
  struct Owner {
    std::unique_ptr<LlamaModel> model;
    std::unique_ptr<Tokenizer> tokenizer;
  };
  auto owner = std::make_shared<Owner>();
  LoadOptions lo;
  lo.device = device;
  lo.dtype = at::kFloat;
  if (absl::StatusOr<ModelConfig> config = LoadModelConfig(dir); config.ok()) {
    lo.dtype = DeviceComputeDtype(*config, device);
  }
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(dir, lo);
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat("serving base model '", name, "': ",
                                                            model.status().message()));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(dir + "/tokenizer.json");
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(), absl::StrCat("serving base model '", name, "': ",
                                                                tokenizer.status().message()));
  }
  if (PackedLinear::Available()) {
    // Decode-time GEMMs on pre-packed weights (docs/benchmarks.md, decode_gemm_bench).
    absl::StatusOr<int64_t> packed = PackLinearsForDecode(**model, kPackedDecodeRows);
    if (!packed.ok()) {
      return absl::Status(packed.status().code(), absl::StrCat("serving base model '", name, "': ",
                                                               packed.status().message()));
    }
  }
  owner->model = std::move(*model);
  owner->tokenizer = std::move(*tokenizer);
  LoadedServingBase out;
  out.served.name = name;
  out.served.model = owner->model.get();
  out.served.tokenizer = owner->tokenizer.get();
  out.served.chat_template = chat_template;
  out.served.config_sha256 = config_sha256;
  out.owner = std::move(owner);
  return out;
}

absl::Status CheckAdapterLoads(const ServedBaseModel& base, const std::string& dir) {
  OFT_ASSIGN_OR_RETURN(PeftAdapterFiles files, ReadPeftAdapterFiles(dir));
  return base.model->PrepareServingAdapter(files.config.oft, files.config.targets, files.packed).status();
}

}  // namespace oft
