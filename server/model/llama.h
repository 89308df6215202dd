// The decoder of every supported family (hf_config.h: Llama, Qwen2, Mistral, Qwen3, OLMo 2,
// Granite, Gemma 2, Gemma 3 text, Phi-3) in LibTorch, with OFTv2 adapters attached to its
// Linear layers by PEFT's rules.
//
// Architecture (matches transformers): scaled token embedding; per layer grouped-query
// self-attention with RoPE (plain, llama3- or linear-scaled, possibly partial; optional q/k
// RMSNorm; optional logit soft-cap) and a gated MLP (SwiGLU or tanh-GeGLU), each branch
// between the family's pre/post RMSNorms and added to the residual; final RMSNorm; lm_head
// (tied or untied), optionally scaled and soft-capped. What varies per family is read from
// ModelConfig::family (model_family.h) only. Attention takes causal, padding and
// sliding-window masks (the window on the layers the family marks); an optional KvCache
// makes incremental decoding O(T) per token.
//
// Module names follow the HF checkpoint ("model.layers.3.self_attn.q_proj", "lm_head"; Phi-3's
// fused "self_attn.qkv_proj" and "mlp.gate_up_proj"), so adapters saved from here carry
// PEFT's key names; an adapter on a fused module rotates the fused Linear's input, as PEFT's.
//
// Two ways to apply adapters, one per pass: training attaches adapters to the model
// (AddAdapter, SetActiveAdapters) and runs Forward; serving prepares adapters without
// attaching them (PrepareServingAdapter, MakeAdapterBatch) and runs ForwardBatch, where every
// row has its own adapter and KV cache (server/model/serving_batch.h).
//
// Ownership: the model owns its base weights (frozen, never requires grad) and the adapters'
// parameters. Thread-compatibility: Forward() and ForwardBatch() may run concurrently with
// each other only when no adapter is being added, removed, or switched (the serving layer
// never attaches any); training owns the model exclusively.
// Forward throws c10::Error on bad shapes (hot path); module APIs return Status.
#ifndef OFT_SERVER_MODEL_LLAMA_H_
#define OFT_SERVER_MODEL_LLAMA_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ATen/core/Generator.h"
#include "ATen/core/Tensor.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/hf_config.h"
#include "server/model/kv_pool.h"
#include "server/model/targeting.h"
#include "server/oft/config.h"
#include "server/model/packed_linear.h"
#include "server/model/serving_batch.h"
#include "server/oft/oft_linear.h"
#include "server/quant/qoft_linear.h"

namespace oft {

// How an adapted Linear applies its OFT rotation. All give the same result up to rounding.
//   kInputCentric (OFTv2): rotate the activations block-wise, then the base GEMM.
//   kFolded: fold the rotation into the weight for the pass, W' = W R^T, and run one GEMM
//     with W' (folded_linear.h); backward never rotates the activations' gradient.
//   kAuto (the model's default): kFolded where it costs fewer multiply-adds (the pass has at
//     least as many tokens as the Linear has outputs: FoldedOftPays) on the CPU, else
//     input-centric. The rule reads only shapes and the device, so a job's arithmetic does not
//     depend on timing. CUDA keeps input-centric until folding is measured there.
//   kWeightCentric (the original OFT, a reference for tests and benchmarks): the dense
//     block-diagonal R, W' = W R^T through autograd, one GEMM with W'.
// kFolded and kAuto fold only a dense base with exactly one active rotation; stacked
// adapters and NF4 bases (QOFT) stay input-centric.
enum class OftCompute { kAuto, kInputCentric, kFolded, kWeightCentric };

// A frozen Linear (dense, or NF4-quantized for QOFT) plus the OFT rotations of the
// adapters attached to it.
class AdaptedLinear {
 public:
  AdaptedLinear(std::string name, at::Tensor weight, at::Tensor bias);
  AdaptedLinear(std::string name, std::unique_ptr<Nf4Linear> quantized);

  // y = base(R_a(...R_b(x))) for the active adapters (in attachment order), or base(x).
  // `loss_pass`: a pass of LlamaModel::CausalLmLoss (training and evaluation loss), where a
  // frozen fp32 CPU base GEMM may run in the training GEMM library (cpu_linear.h); inference
  // passes keep at::linear / the packed weight.
  at::Tensor Forward(const at::Tensor& x, const std::vector<std::string>& active,
                     OftCompute compute = OftCompute::kInputCentric, bool loss_pass = false) const;
  // R_a(...R_b(x)) for the active adapters, input-centric: Forward's input to the base GEMM.
  at::Tensor RotateInput(const at::Tensor& x, const std::vector<std::string>& active) const;
  // Forward of several Linears that read the same x (q/k/v, gate/up): out[j] equals
  // linears[j]->Forward(x, ...) in value. When compute is input-centric and each Linear has
  // exactly one active rotation, the Linears that fold run as one folded group and the
  // others' rotations as one oft::BlockRotateMany (x read once either way; backward sums x's
  // gradient in the same pass); otherwise each Forward runs. Blocks() are drawn in the
  // Linears' order either way.
  static std::vector<at::Tensor> ForwardSiblings(const std::vector<const AdaptedLinear*>& linears,
                                                 const at::Tensor& x,
                                                 const std::vector<std::string>& active,
                                                 OftCompute compute, bool loss_pass);

  const std::string& name() const { return name_; }
  int64_t in_features() const { return nf4_ ? nf4_->in_features() : weight_.size(1); }
  int64_t out_features() const { return nf4_ ? nf4_->out_features() : weight_.size(0); }
  bool quantized() const { return nf4_ != nullptr; }
  // The dense base weight (undefined when quantized; see DenseWeight).
  at::Tensor& weight() { return weight_; }
  // The base weight in full precision: the dense weight, or the NF4 weight dequantized.
  at::Tensor DenseWeight(at::ScalarType dtype) const;
  const at::Tensor& bias() const { return nf4_ ? nf4_->bias() : bias_; }
  // Bytes held by the base weight and bias (NF4 codes + absmax when quantized).
  int64_t BaseWeightBytes() const;

  // A pre-packed copy of the base weight for small-row (decode) GEMMs: Forward uses it for
  // the inputs it Handles(), else at::linear. Null (the default) = at::linear always. Not
  // while Forward() runs (same rule as Attach).
  void set_packed(std::shared_ptr<const PackedLinear> packed) { packed_ = std::move(packed); }
  const PackedLinear* packed() const { return packed_.get(); }

  void Attach(const std::string& adapter, std::shared_ptr<OftRotation> rotation);
  void Detach(const std::string& adapter);
  OftRotation* Rotation(const std::string& adapter) const;  // nullptr when absent

 private:
  // The base Linear of Forward on an already rotated input.
  at::Tensor Base(const at::Tensor& h, bool loss_pass) const;
  // Whether this Linear folds `rotation` into its weight for input x (OftCompute above).
  bool Folds(const at::Tensor& x, OftCompute compute, const at::Tensor& rotation) const;
  // Folded Linears (folded_linear.h) that read the same x, with their rotations.
  static std::vector<at::Tensor> Folded(const std::vector<const AdaptedLinear*>& linears,
                                        const at::Tensor& x,
                                        const std::vector<at::Tensor>& rotations, bool loss_pass);
  // The rotations of the adapters named in `active`, in attachment order.
  std::vector<OftRotation*> ActiveRotations(const std::vector<std::string>& active) const;

  std::string name_;
  at::Tensor weight_;  // [out, in], frozen; undefined when quantized
  at::Tensor bias_;    // [out] or undefined
  std::unique_ptr<Nf4Linear> nf4_;  // QOFT base, or null
  std::vector<std::pair<std::string, std::shared_ptr<OftRotation>>> rotations_;
  std::shared_ptr<const PackedLinear> packed_;  // or null
};

// Per-request key/value cache: one [B, kv_heads, capacity, head_dim] pair per layer, of
// which the first `length` positions hold cached tokens. Forward writes new tokens in place
// and doubles the capacity when it runs out (amortised O(1) per token, no re-concatenation).
// A copy of a KvCache shares the tensors: extending both the copy and the original writes
// the same positions, so extend only one of them (or clone the tensors).
// A serving row may keep its entries in a slot of a KvPool instead (pool and slot set;
// keys / values stay empty; kv_pool.h): a decode step whose rows are all in one pool
// attends with one call per layer. A pooled cache is for ServingBatch::caches only
// (ForwardBatch); the pool must outlive the cache's use and the slot must be held.
struct KvCache {
  std::vector<at::Tensor> keys, values;
  int64_t length = 0;  // tokens already cached
  KvPool* pool = nullptr;
  int64_t slot = -1;
};

// Options of LlamaModel::Forward, the training and evaluation pass (the model's active
// adapters). Serving passes per-row state through ServingBatch and ForwardBatch instead.
struct ForwardOptions {
  at::Tensor attention_mask;  // [B, T_total] 1 = token, 0 = padding (T_total = cached + T)
  at::Tensor position_ids;    // [B, T]; default: cached .. cached+T-1
  KvCache* cache = nullptr;   // appended to when set
  bool logits_for_last_only = false;  // only the last position's logits (generation)
  // [B, T] integer document id per token (packed training sequences; -1 = padding). When
  // defined, a token attends only to earlier tokens with the same id (block-diagonal causal
  // mask). Only without a cache or with an empty one; undefined: no effect.
  at::Tensor document_ids;
  // When set (and no cache is used), each decoder layer runs as
  // layer_runner(index, body, hidden) instead of body(hidden); `body` maps the residual
  // stream [B, T, H] to the layer's output and may be called again later (e.g. activation
  // checkpointing recomputes it in backward), so it owns copies of what it needs.
  std::function<at::Tensor(int64_t layer, const std::function<at::Tensor(const at::Tensor&)>& body,
                           const at::Tensor& hidden)>
      layer_runner;
};

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  // compute dtype of the base weights
  std::string device = "cpu";         // "cpu" or "cuda:N"
  bool quantize_nf4 = false;          // QOFT: decoder Linears stored as NF4 (not lm_head)
  bool nf4_double_quant = false;      // also quantize the NF4 absmax values
};

class LlamaModel {
 public:
  // Loads config.json and model.safetensors (or a sharded checkpoint) from `dir`.
  // Errors: NOT_FOUND (missing files), INVALID_ARGUMENT (unsupported architecture, a
  // missing or mis-shaped tensor, naming it).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& dir,
                                                          const LoadOptions& options);
  // Builds from a config and a tensor source (name -> tensor), e.g. for tests.
  using TensorSource = std::function<absl::StatusOr<at::Tensor>(const std::string&)>;
  static absl::StatusOr<std::unique_ptr<LlamaModel>> FromSource(const ModelConfig& config,
                                                                const TensorSource& source,
                                                                const LoadOptions& options);

  // Training and evaluation: ids [B, T] (int64) -> logits [B, T, vocab] (or [B, 1, vocab])
  // in the model dtype, through the active adapters (SetActiveAdapters). Ids outside
  // [0, vocab_size) throw when `ids` is on the CPU; ids already on an accelerator are not
  // read back (no host synchronisation): their callers (the trainer, the serving engine)
  // check them on the host first.
  at::Tensor Forward(const at::Tensor& ids, const ForwardOptions& options = {}) const;
  // The training loss: the SUM over positions with targets != ignore_index of
  // cross_entropy(Forward(ids, options)[b, t] in fp32, targets[b, t]), without building the
  // [B, T, vocab] logits (LinearCrossEntropy; gradients flow to the adapters as through
  // Forward). targets: [B, T] integer, ids' shape. Weight-centric compute and an NF4 head take
  // the logits path. Throws c10::Error with a cache, logits_for_last_only, or a bad target.
  at::Tensor CausalLmLoss(const at::Tensor& ids, const at::Tensor& targets,
                          const ForwardOptions& options = {}, int64_t ignore_index = -100) const;
  // Serving: one pass over the rows of `batch`, each with its own cache, positions and
  // adapter (ServingBatch); the active adapters are not applied. ids is [rows, T], or
  // [1, sum(batch.lengths)] when packed. Returns logits [rows, T, vocab] ([1, sum, vocab]
  // when packed), or [rows, 1, vocab] with logits_for_last_only. Same id rule as Forward.
  // Throws c10::Error on a malformed batch (null or missing caches, lengths that do not
  // match ids, an adapter batch for another number of rows).
  at::Tensor ForwardBatch(const at::Tensor& ids, const ServingBatch& batch) const;

  // Attaches a new adapter to every Linear that `targets` selects. `generator` (CPU, or
  // undefined for the process-wide default) draws the adapter's random init and its
  // module-dropout choices (OftRotation::Create); a training job passes its own. Errors:
  // ALREADY_EXISTS, INVALID_ARGUMENT (bad config; a block size illegal for a module),
  // NOT_FOUND (no module matched).
  absl::Status AddAdapter(const std::string& name, const OftConfig& config,
                          const TargetSpec& targets, at::Generator generator = {});
  absl::Status RemoveAdapter(const std::string& name);
  // Builds a serving adapter from packed parameters (module name -> oft_R [rows, b(b-1)/2],
  // as PEFT saves them) without attaching anything to the model. Reads only the config and
  // the Linear shapes, so it may run concurrently with Forward(). Errors: INVALID_ARGUMENT
  // (bad config; a targeted module without a tensor, a tensor for a module not targeted, a
  // shape mismatch — each named; with the compact form, R - I beyond fp16's range),
  // NOT_FOUND (no module matched the targets). `form`: serving_batch.h.
  absl::StatusOr<std::shared_ptr<const ServingAdapter>> PrepareServingAdapter(
      const OftConfig& config, const TargetSpec& targets,
      const std::map<std::string, at::Tensor>& packed,
      ServedRotations form = ServedRotations::kCompact) const;
  // The per-row adapter selection for a batch: rows[i] rotates row i (nullptr: base).
  // Every adapter must come from this model's PrepareServingAdapter. Throws c10::Error.
  AdapterBatch MakeAdapterBatch(const std::vector<const ServingAdapter*>& rows) const;

  // Adapters applied by Forward (empty: the base model). Errors: NOT_FOUND.
  absl::Status SetActiveAdapters(const std::vector<std::string>& names);
  const std::vector<std::string>& active_adapters() const { return active_; }
  std::vector<std::string> adapter_names() const;
  // The adapter's parameters by module name ("model.layers.0.self_attn.q_proj" -> oft_r).
  absl::StatusOr<std::map<std::string, at::Tensor>> AdapterParameters(const std::string& name) const;
  absl::StatusOr<OftConfig> AdapterConfig(const std::string& name) const;
  // Sets training mode of the adapter rotations (module dropout).
  void SetTraining(bool training);
  // How adapted Linears apply rotations (default kAuto). Same thread rules as
  // adding adapters: not while Forward() runs.
  void set_oft_compute(OftCompute compute) { oft_compute_ = compute; }
  OftCompute oft_compute() const { return oft_compute_; }

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  c10::Device device() const;
  // Names of all Linear modules, in model order, and lookup.
  std::vector<std::string> LinearNames() const;
  AdaptedLinear* Linear(const std::string& name);
  // Bytes held by the base weights (embedding, norms, linears; a tied head counted once;
  // NF4 storage for quantized Linears).
  int64_t BaseWeightBytes() const;
  // Every base tensor by HF name (for merged export and tests), in the model dtype;
  // quantized Linears are dequantized to fp32.
  std::map<std::string, at::Tensor> BaseTensors() const;

 private:
  struct Layer {
    // [H], undefined where the family has no such norm (ModelFamily's names).
    at::Tensor pre_attn_norm, post_attn_norm, pre_ffn_norm, post_ffn_norm;
    at::Tensor q_norm, k_norm;  // [head_dim] or [heads * head_dim]; undefined: none
    std::vector<std::unique_ptr<AdaptedLinear>> linears;  // in slots_ order
  };
  // Where each projection sits in Layer::linears (-1: absent). Unfused: q k v o gate up
  // down; Phi-3: qkv o gate_up down.
  struct LinearSlots {
    int q = -1, k = -1, v = -1, qkv = -1, o = -1, gate = -1, up = -1, gate_up = -1, down = -1;
    int per_layer = 0;
  };
  // The attention mask of one kind of layer: additive [B or 1, 1, T, total], or undefined
  // with `causal` selecting SDPA's is_causal (queries start at key 0) or no mask at all.
  struct LayerMask {
    at::Tensor additive;
    bool causal = false;
  };
  // RoPE tables [B or 1, 1, T, rotary dims] of the full-attention layers and, when the
  // family has a local RoPE base, of the sliding layers (else undefined).
  struct RopeTables {
    at::Tensor cos, sin, local_cos, local_sin;
  };
  LlamaModel() = default;
  // How one pass applies adapters and attention. Forward (training) sets `active`: the
  // active adapters, one cache or none, one mask for the batch. ForwardBatch (serving) sets
  // the per-row members: adapters, caches and masks of each row.
  struct RowState {
    const std::vector<std::string>* active = nullptr;  // null: no attached adapter applied
    bool loss_pass = false;  // CausalLmLoss's pass (AdaptedLinear::Forward's loss_pass)
    const AdapterBatch* adapters = nullptr;             // per-row rotations, or null
    const std::vector<KvCache*>* caches = nullptr;      // one per row, or null
    // Per row, for full [0] and sliding-window [1] layers: an additive mask, or undefined =
    // no mask, or, when causal is 1, SDPA's is_causal.
    const std::vector<at::Tensor>* masks[2] = {nullptr, nullptr};
    const std::vector<uint8_t>* causal[2] = {nullptr, nullptr};
    // Packed rows (ServingBatch::lengths): row i is tokens [offsets[i], +lengths[i]) of the
    // one sequence; tokens_per_row expands per-row adapter indices to tokens.
    std::vector<int64_t> offsets, lengths;
    at::Tensor tokens_per_row;
    // A decode step whose rows are all in one KvPool: one attention per layer (kv_pool.h),
    // with the plan of full [0] or sliding-window [1] layers.
    const PooledDecode* pooled[2] = {nullptr, nullptr};
  };
  using LayerRunner = decltype(ForwardOptions::layer_runner);
  // ids [B, T] -> hidden states [B, T, H]; checks the ids as Forward documents.
  at::Tensor Embed(const at::Tensor& ids) const;
  // RoPE tables (model dtype) for positions [B or 1, T]. `seq_lens` (broadcastable to
  // positions): the length the forward reaches for each token's row, used only by dynamic
  // NTK scaling (undefined otherwise).
  RopeTables Rope(const at::Tensor& positions, const at::Tensor& seq_lens = {}) const;
  bool DynamicRope() const;  // rope_scaling.rope_type == "dynamic"
  at::Tensor DynamicNtkInverseFrequencies(const at::Tensor& seq_lens) const;
  // [t, p + t] bool: which keys each of t queries after p cached tokens may attend to
  // (causal by absolute position, and the sliding window when `sliding`).
  at::Tensor Allowed(int64_t p, int64_t t, bool sliding) const;
  // Whether the sliding window (on a `sliding` layer) excludes some key of p + t tokens.
  bool WindowBites(int64_t p, int64_t t, bool sliding) const;
  // Whether layer `index` attends within the sliding window.
  bool Slides(int64_t index) const;
  // 0 where `allowed`, the most negative finite value of the model dtype elsewhere.
  at::Tensor AdditiveMask(const at::Tensor& allowed) const;
  // Every decoder layer over h [B, T, H]; each through `runner` when set and no cache is
  // used. masks[0] serves full-attention layers, masks[1] sliding-window ones.
  at::Tensor Layers(at::Tensor h, const RopeTables& rope, const LayerMask masks[2],
                    KvCache* cache, const RowState& rows, const LayerRunner& runner) const;
  // One layer's attention. With rows.pooled, every row attends to its own pool slot in one
  // call; with rows.caches, each row attends to its own cache with its own mask; else
  // `mask` serves the batch.
  at::Tensor Attention(const Layer& layer, int64_t index, const at::Tensor& h,
                       const RopeTables& rope, const LayerMask& mask, KvCache* cache,
                       const RowState& rows) const;
  // One layer's gated MLP.
  at::Tensor Mlp(const Layer& layer, int64_t index, const at::Tensor& x, const RowState& rows) const;
  // Forward up to the head: the final norm'd hidden states [B, T, H] ([B, 1, H] with
  // logits_for_last_only), updating the cache as Forward does.
  at::Tensor FinalHidden(const at::Tensor& ids, const ForwardOptions& options,
                         bool loss_pass = false) const;
  // Final norm'd hidden states -> logits (lm_head, logits scaling and soft-cap).
  at::Tensor Head(const at::Tensor& h, const RowState& rows,
                  const at::Tensor& tokens_per_row = {}) const;
  at::Tensor Norm(const at::Tensor& x, const at::Tensor& w) const;
  // lin(x), with per-row adapter rotations when rows.adapters is set, else rows.active.
  // Row i owns tokens_per_row[i] consecutive tokens of x (undefined: an equal share each).
  at::Tensor Project(const AdaptedLinear& lin, int64_t linear_index, const at::Tensor& x,
                     const RowState& rows, const at::Tensor& tokens_per_row = {}) const;
  // Project for the Linears of `slots` in layer `index` that read the same x (q/k/v,
  // gate/up): AdaptedLinear::ForwardSiblings in training and plain passes, one Project each
  // for serving batches.
  std::vector<at::Tensor> ProjectSiblings(const Layer& layer, int64_t index,
                                          const std::vector<int>& slots, const at::Tensor& x,
                                          const RowState& rows) const;
  std::vector<AdaptedLinear*> AllLinears() const;

  ModelConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor embed_;       // [V, H]
  at::Tensor final_norm_;  // [H]
  std::vector<Layer> layers_;
  std::unique_ptr<AdaptedLinear> lm_head_;  // shares embed_ when tied
  LinearSlots slots_;
  at::Tensor inv_freq_;        // [rotary dims / 2] fp32, with rope scaling applied
  at::Tensor local_inv_freq_;  // the sliding layers' (family.local_rope_theta), or undefined
  std::map<std::string, OftConfig> adapters_;
  std::vector<std::string> active_;
  OftCompute oft_compute_ = OftCompute::kAuto;
};

// The compute dtype a model is loaded with on `device`: fp32 on the CPU; on CUDA the
// checkpoint's bfloat16 / float16 when config.json names one, else fp32.
at::ScalarType DeviceComputeDtype(const ModelConfig& config, const std::string& device);

// RoPE inverse frequencies for `config` (transformers' default, linear, llama3 and yarn rules,
// over the rotary dims head_dim * partial_rotary_factor), fp32. `local`: the sliding
// layers' plain RoPE with family.local_rope_theta.
at::Tensor RopeInverseFrequencies(const ModelConfig& config, bool local = false);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_LLAMA_H_
