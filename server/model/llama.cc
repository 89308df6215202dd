#include "server/model/llama.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/model/checkpoint.h"
#include "server/model/host_upload.h"
#include "server/model/kv_pool.h"
#include "server/model/safetensors_torch.h"
#include "server/oft/ops.h"

namespace oft {

// ---------------------------------------------------------------------------------------
// AdaptedLinear

AdaptedLinear::AdaptedLinear(std::string name, at::Tensor weight, at::Tensor bias)
    : name_(std::move(name)), weight_(std::move(weight)), bias_(std::move(bias)) {}

AdaptedLinear::AdaptedLinear(std::string name, std::unique_ptr<Nf4Linear> quantized)
    : name_(std::move(name)), nf4_(std::move(quantized)) {}

at::Tensor AdaptedLinear::DenseWeight(at::ScalarType dtype) const {
  return nf4_ ? nf4_->DequantizedWeight(dtype) : weight_.to(dtype);
}

int64_t AdaptedLinear::BaseWeightBytes() const {
  if (nf4_) return nf4_->BaseWeightBytes();
  int64_t n = weight_.numel() * static_cast<int64_t>(weight_.element_size());
  if (bias_.defined()) n += bias_.numel() * static_cast<int64_t>(bias_.element_size());
  return n;
}

at::Tensor AdaptedLinear::Forward(const at::Tensor& x, const std::vector<std::string>& active,
                                  OftCompute compute) const {
  if (compute == OftCompute::kWeightCentric) {
    // W' = W (R_a R_b ...)^T = W R_last^T ... R_first^T, then one GEMM.
    std::vector<OftRotation*> on;
    for (const auto& [adapter, rotation] : rotations_) {
      for (const auto& a : active) {
        if (a == adapter) on.push_back(rotation.get());
      }
    }
    if (!on.empty()) {
      at::Tensor w = DenseWeight(x.scalar_type());
      for (auto it = on.rbegin(); it != on.rend(); ++it) {
        w = at::matmul(w, (*it)->Dense().to(x.scalar_type()).t());
      }
      const at::Tensor& b = bias();
      return at::linear(x, w, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
    }
  }
  at::Tensor h = x;
  for (const auto& [adapter, rotation] : rotations_) {
    bool on = false;
    for (const auto& a : active) on |= (a == adapter);
    if (on) h = BlockRotate(h, rotation->Blocks());
  }
  if (nf4_) return nf4_->Forward(h);
  if (packed_ && packed_->Handles(h)) return packed_->Forward(h);
  return at::linear(h, weight_, bias_.defined() ? std::optional<at::Tensor>(bias_) : std::nullopt);
}

void AdaptedLinear::Attach(const std::string& adapter, std::shared_ptr<OftRotation> rotation) {
  rotations_.emplace_back(adapter, std::move(rotation));
}

void AdaptedLinear::Detach(const std::string& adapter) {
  std::erase_if(rotations_, [&](const auto& p) { return p.first == adapter; });
}

OftRotation* AdaptedLinear::Rotation(const std::string& adapter) const {
  for (const auto& [a, r] : rotations_) {
    if (a == adapter) return r.get();
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------
// RoPE

at::Tensor RopeInverseFrequencies(const ModelConfig& c) {
  const int64_t dim = c.head_dim;
  auto exponents = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) /
                   static_cast<double>(dim);
  auto inv = 1.0 / at::pow(c.rope_theta, exponents);
  if (!c.rope_scaling) return inv;
  // llama3: long wavelengths are divided by `factor`, short ones kept, the band between
  // interpolated smoothly.
  const auto& s = *c.rope_scaling;
  const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
  const double low_wavelen = old_ctx / s.low_freq_factor;
  const double high_wavelen = old_ctx / s.high_freq_factor;
  auto wavelen = 2 * M_PI / inv;
  auto scaled = at::where(wavelen > low_wavelen, inv / s.factor, inv);
  auto smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  auto medium = at::logical_not(wavelen < high_wavelen) & at::logical_not(wavelen > low_wavelen);
  return at::where(medium, smoothed, scaled);
}

namespace {

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto xf = x.to(at::kFloat);
  auto var = xf.pow(2).mean({-1}, /*keepdim=*/true);
  return weight * (xf * at::rsqrt(var + eps)).to(x.scalar_type());
}

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Loading

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir,
                                                             const LoadOptions& options) {
  OFT_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  OFT_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  Checkpoint* raw = ckpt.get();
  return FromSource(config, [raw](const std::string& name) { return raw->Tensor(name); }, options);
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::FromSource(const ModelConfig& config,
                                                                   const TensorSource& source,
                                                                   const LoadOptions& options) {
  OFT_RETURN_IF_ERROR(config.Validate());
  const at::ScalarType dt = options.dtype;
  if (dt != at::kFloat && dt != at::kBFloat16 && dt != at::kHalf && dt != at::kDouble) {
    return absl::InvalidArgumentError("LoadOptions.dtype must be float32, bfloat16 or float16");
  }
  c10::Device device(c10::kCPU);
  OFT_RETURN_IF_ERROR(TorchCall("device", [&] { device = c10::Device(options.device); }));
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->config_ = config;
  m->dtype_ = dt;
  const auto& c = config;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q_out = c.num_attention_heads * hd, kv_out = c.num_key_value_heads * hd;

  auto get = [&](const std::string& name, std::vector<int64_t> shape) -> absl::StatusOr<at::Tensor> {
    auto t = source(name);
    if (!t.ok()) {
      if (t.status().code() == absl::StatusCode::kNotFound) {
        return absl::InvalidArgumentError(
            absl::StrCat("checkpoint is missing tensor \"", name, "\" required by ", c.architecture));
      }
      return t.status();
    }
    if (t->sizes() != at::IntArrayRef(shape)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" has shape ",
                                                     c10::str(t->sizes()), ", expected ",
                                                     c10::str(at::IntArrayRef(shape))));
    }
    OFT_ASSIGN_OR_RETURN(at::Tensor w, TorchCall(name, [&] { return t->to(device, dt).contiguous(); }));
    // A NaN or Inf weight (a corrupt or badly converted checkpoint, or a value outside the
    // compute dtype's range) poisons every output; say which tensor instead. aminmax
    // propagates NaN and shows +-Inf, so both ends finite <=> every value finite; it reads
    // the tensor once (about 14x faster than isfinite().all() on one CPU thread).
    bool finite = true;
    OFT_RETURN_IF_ERROR(TorchCall(name, [&] {
      if (w.numel() == 0) return;
      const auto [lo, hi] = at::aminmax(w);
      finite = std::isfinite(lo.item<double>()) && std::isfinite(hi.item<double>());
    }));
    if (!finite) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name,
                                                     "\" holds NaN or Inf values (as ",
                                                     c10::toString(dt), ")"));
    }
    return w;
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in,
                    bool bias) -> absl::StatusOr<std::unique_ptr<AdaptedLinear>> {
    OFT_ASSIGN_OR_RETURN(at::Tensor w, get(name + ".weight", {out, in}));
    at::Tensor b;
    if (bias) {
      OFT_ASSIGN_OR_RETURN(b, get(name + ".bias", {out}));
    }
    if (options.quantize_nf4 && name != "lm_head") {
      Nf4Options q;
      q.double_quant = options.nf4_double_quant;
      OFT_ASSIGN_OR_RETURN(std::unique_ptr<Nf4Linear> nf4, Nf4Linear::Create(w, std::move(b), q));
      return std::make_unique<AdaptedLinear>(name, std::move(nf4));
    }
    return std::make_unique<AdaptedLinear>(name, std::move(w), std::move(b));
  };

  OFT_ASSIGN_OR_RETURN(m->embed_, get("model.embed_tokens.weight", {c.vocab_size, H}));
  OFT_ASSIGN_OR_RETURN(m->final_norm_, get("model.norm.weight", {H}));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer l;
    OFT_ASSIGN_OR_RETURN(l.input_norm, get(p + "input_layernorm.weight", {H}));
    OFT_ASSIGN_OR_RETURN(l.post_norm, get(p + "post_attention_layernorm.weight", {H}));
    OFT_ASSIGN_OR_RETURN(l.q, linear(p + "self_attn.q_proj", q_out, H, c.attention_bias));
    OFT_ASSIGN_OR_RETURN(l.k, linear(p + "self_attn.k_proj", kv_out, H, c.attention_bias));
    OFT_ASSIGN_OR_RETURN(l.v, linear(p + "self_attn.v_proj", kv_out, H, c.attention_bias));
    OFT_ASSIGN_OR_RETURN(l.o, linear(p + "self_attn.o_proj", H, q_out, c.o_proj_bias));
    OFT_ASSIGN_OR_RETURN(l.gate, linear(p + "mlp.gate_proj", I, H, c.mlp_bias));
    OFT_ASSIGN_OR_RETURN(l.up, linear(p + "mlp.up_proj", I, H, c.mlp_bias));
    OFT_ASSIGN_OR_RETURN(l.down, linear(p + "mlp.down_proj", H, I, c.mlp_bias));
    m->layers_.push_back(std::move(l));
  }
  if (c.tie_word_embeddings) {
    m->lm_head_ = std::make_unique<AdaptedLinear>("lm_head", m->embed_, at::Tensor());
  } else {
    OFT_ASSIGN_OR_RETURN(m->lm_head_, linear("lm_head", c.vocab_size, H, false));
  }
  OFT_RETURN_IF_ERROR(TorchCall("rope", [&] { m->inv_freq_ = RopeInverseFrequencies(c).to(device); }));
  return m;
}

c10::Device LlamaModel::device() const { return embed_.device(); }

// ---------------------------------------------------------------------------------------
// Forward: the parts shared by Forward (training) and ForwardBatch (serving)

at::Tensor LlamaModel::Project(const AdaptedLinear& lin, int64_t linear_index,
                               const at::Tensor& x, const RowState& rows,
                               const at::Tensor& tokens_per_row) const {
  static const std::vector<std::string> kNone;
  if (rows.adapters == nullptr) return lin.Forward(x, rows.active ? *rows.active : kNone, oft_compute_);
  const auto& groups = rows.adapters->per_linear_[linear_index];
  if (groups.empty()) return lin.Forward(x, kNone, oft_compute_);
  const int64_t d = x.size(-1);
  at::Tensor x2 = x.reshape({-1, d});  // [B * T, d], row-major by batch row
  const int64_t per_row = x2.size(0) / rows.adapters->rows();
  for (const auto& g : groups) {
    const at::Tensor idx = tokens_per_row.defined()
                               ? g.row_index.repeat_interleave(tokens_per_row, 0, x2.size(0))
                           : per_row == 1 ? g.row_index
                                          : g.row_index.repeat_interleave(per_row);
    x2 = GatheredBlockRotate(x2, g.rotations, idx);
  }
  return lin.Forward(x2.view(x.sizes()), kNone, oft_compute_);
}

at::Tensor LlamaModel::Attention(const Layer& layer, int64_t index, const at::Tensor& h,
                                 const at::Tensor& cos, const at::Tensor& sin,
                                 const at::Tensor& mask, bool causal, KvCache* cache,
                                 const RowState& rows) const {
  const auto& c = config_;
  const int64_t B = h.size(0), T = h.size(1), hd = c.head_dim;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads;
  const int64_t li = 7 * index;  // Linear indices of this layer: q k v o gate up down
  const at::Tensor& tpr = rows.tokens_per_row;
  auto q = Project(*layer.q, li, h, rows, tpr).view({B, T, nh, hd}).transpose(1, 2);
  auto k = Project(*layer.k, li + 1, h, rows, tpr).view({B, T, nkv, hd}).transpose(1, 2);
  auto v = Project(*layer.v, li + 2, h, rows, tpr).view({B, T, nkv, hd}).transpose(1, 2);
  q = q * cos + RotateHalf(q) * sin;
  k = k * cos + RotateHalf(k) * sin;
  // Writes the new keys/values at positions [length, length + t) of the layer's cache
  // (growing its capacity geometrically) and returns views of the first length + t.
  auto append = [index](KvCache* kc, at::Tensor& kk, at::Tensor& vv) {
    if (kc->pool != nullptr) {  // the row's slot of a shared pool (kv_pool.h)
      const int64_t need = kc->length + kk.size(2);
      kc->pool->Write(index, kc->slot, kc->length, kk, vv);
      kk = kc->pool->keys(index).narrow(0, kc->slot, 1).narrow(2, 0, need);
      vv = kc->pool->values(index).narrow(0, kc->slot, 1).narrow(2, 0, need);
      return;
    }
    if (static_cast<int64_t>(kc->keys.size()) <= index) {
      kc->keys.resize(index + 1);
      kc->values.resize(index + 1);
    }
    const int64_t past = kc->length, t = kk.size(2), need = past + t;
    for (auto [store, fresh] : {std::pair<at::Tensor*, at::Tensor*>{&kc->keys[index], &kk},
                                std::pair<at::Tensor*, at::Tensor*>{&kc->values[index], &vv}}) {
      const int64_t capacity = store->defined() ? store->size(2) : 0;
      if (capacity < need) {
        auto sizes = fresh->sizes().vec();
        sizes[2] = std::max(need, 2 * capacity);
        at::Tensor grown = at::empty(sizes, fresh->options());
        if (past > 0) grown.narrow(2, 0, past).copy_(store->narrow(2, 0, past));
        *store = grown;
      }
      store->narrow(2, past, t).copy_(*fresh);
      *fresh = store->narrow(2, 0, need);
    }
  };
  at::Tensor out;
  if (rows.pooled != nullptr) {
    out = PooledDecodeAttention(*rows.pooled, index, q, k, v);  // one call for every row
  } else if (rows.caches != nullptr) {
    // Prefill (or rows outside a pool): each row attends to its own cache (lengths differ),
    // exactly as it would alone. A row is a batch entry, or a slice of the one packed
    // sequence.
    const bool packed = !rows.lengths.empty();
    const int64_t n_rows = static_cast<int64_t>(rows.caches->size());
    auto slice = [&](const at::Tensor& t, int64_t r) {
      return packed ? t.narrow(2, rows.offsets[r], rows.lengths[r]) : t.narrow(0, r, 1);
    };
    std::vector<at::Tensor> outs;
    outs.reserve(n_rows);
    for (int64_t r = 0; r < n_rows; ++r) {
      at::Tensor kb = slice(k, r), vb = slice(v, r);
      append((*rows.caches)[r], kb, vb);
      const at::Tensor& mb = (*rows.masks)[r];
      outs.push_back(at::scaled_dot_product_attention(
          slice(q, r), kb, vb, mb.defined() ? std::optional<at::Tensor>(mb) : std::nullopt,
          /*dropout_p=*/0.0, /*is_causal=*/(*rows.causal)[r] != 0, /*scale=*/std::nullopt,
          /*enable_gqa=*/nkv != nh));
    }
    out = n_rows == 1 ? outs[0] : at::cat(outs, packed ? 2 : 0);
  } else {
    if (cache != nullptr) append(cache, k, v);
    out = at::scaled_dot_product_attention(
        q, k, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt,
        /*dropout_p=*/0.0, /*is_causal=*/causal, /*scale=*/std::nullopt, /*enable_gqa=*/nkv != nh);
  }
  return Project(*layer.o, li + 3, out.transpose(1, 2).reshape({B, T, nh * hd}), rows,
                 tpr);
}

at::Tensor LlamaModel::Embed(const at::Tensor& ids) const {
  const int64_t T = ids.size(1);
  TORCH_CHECK(T > 0, "ids must contain at least one token");
  if (ids.device().is_cpu()) {  // free on the host; device ids are checked by their callers
    TORCH_CHECK(ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < config_.vocab_size,
                "token id out of range [0, ", config_.vocab_size, ")");
  }
  // Host ids (the decode loop's) go up through pinned memory without blocking the host.
  const auto dev = embed_.device();
  return at::embedding(embed_, ids.device().is_cpu() ? UploadToDevice(ids, dev) : ids.to(dev));
}

std::pair<at::Tensor, at::Tensor> LlamaModel::Rope(const at::Tensor& positions) const {
  auto freqs = positions.unsqueeze(-1) * inv_freq_.view({1, 1, -1});  // [B, T, hd/2]
  auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype_).unsqueeze(1), emb.sin().to(dtype_).unsqueeze(1)};  // [B, 1, T, hd]
}

at::Tensor LlamaModel::Allowed(int64_t p, int64_t t) const {
  const auto opt_long = at::TensorOptions().dtype(at::kLong).device(embed_.device());
  auto qpos = at::arange(p, p + t, opt_long).view({t, 1});
  auto kpos = at::arange(0, p + t, opt_long).view({1, p + t});
  auto allowed = (kpos <= qpos);
  if (config_.sliding_window) allowed = allowed & (kpos > qpos - *config_.sliding_window);
  return allowed;  // [t, p + t]
}

bool LlamaModel::WindowBites(int64_t p, int64_t t) const {
  return config_.sliding_window.has_value() && p + t > *config_.sliding_window;
}

at::Tensor LlamaModel::AdditiveMask(const at::Tensor& allowed) const {
  // The most negative finite value of the compute dtype (as transformers uses finfo.min).
  const double lowest =
      dtype_ == at::kHalf       ? static_cast<double>(std::numeric_limits<c10::Half>::lowest())
      : dtype_ == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
      : dtype_ == at::kDouble   ? std::numeric_limits<double>::lowest()
                                : static_cast<double>(std::numeric_limits<float>::lowest());
  return at::zeros(allowed.sizes(), at::TensorOptions().dtype(dtype_).device(embed_.device()))
      .masked_fill(at::logical_not(allowed), lowest);
}

at::Tensor LlamaModel::Layers(at::Tensor h, const at::Tensor& cos, const at::Tensor& sin,
                              const at::Tensor& mask, bool is_causal, KvCache* cache,
                              const RowState& rows, const LayerRunner& runner) const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer* l = &layers_[i];
    const int64_t index = static_cast<int64_t>(i);
    // Captures by value: a layer runner may call it again after Forward returns (only
    // training passes one, and its RowState points at nothing but active_).
    auto body = [this, l, index, cos, sin, mask, is_causal, cache, rows](const at::Tensor& hin) {
      const double eps = config_.rms_norm_eps;
      auto hh = hin + Attention(*l, index, RmsNorm(hin, l->input_norm, eps), cos, sin, mask,
                                is_causal, cache, rows);
      auto x = RmsNorm(hh, l->post_norm, eps);
      const int64_t li = 7 * index;
      const at::Tensor& tpr = rows.tokens_per_row;
      auto g = Project(*l->gate, li + 4, x, rows, tpr);
      return hh + Project(*l->down, li + 6, at::silu(g) * Project(*l->up, li + 5, x, rows, tpr),
                          rows, tpr);
    };
    h = (runner && cache == nullptr) ? runner(index, body, h) : body(h);
  }
  return RmsNorm(h, final_norm_, config_.rms_norm_eps);
}

// ---------------------------------------------------------------------------------------
// Forward (training and evaluation: the active adapters)

at::Tensor LlamaModel::Forward(const at::Tensor& ids, const ForwardOptions& opts) const {
  TORCH_CHECK(ids.dim() == 2, "ids must be [batch, tokens], got ", ids.sizes());
  TORCH_CHECK(opts.cache == nullptr || opts.cache->pool == nullptr,
              "ForwardOptions.cache is in a KvPool; pooled caches are for ServingBatch.caches only");
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t past = opts.cache ? opts.cache->length : 0;
  const int64_t total = past + T;
  const auto dev = embed_.device();
  auto h = Embed(ids);

  const at::Tensor pos =
      opts.position_ids.defined()
          ? opts.position_ids.to(dev).to(at::kFloat)
          : at::arange(past, total, at::TensorOptions().dtype(at::kFloat).device(dev))
                .unsqueeze(0)
                .expand({B, T});
  const auto [cos, sin] = Rope(pos);

  // Without padding, packing or a biting window no dense mask is built (it would rule out
  // the fused attention kernels): one query attends to every key, and t > 1 queries over an
  // empty cache are SDPA's is_causal. Only t > 1 queries after cached tokens need a mask.
  at::Tensor mask;
  bool is_causal = false;
  if (!opts.attention_mask.defined() && !opts.document_ids.defined() && !WindowBites(past, T) &&
      (T == 1 || past == 0)) {
    is_causal = T > 1;
  } else {
    // Additive mask [B, 1, T, total]: causal (by absolute position), padding, sliding window.
    auto allowed = Allowed(past, T).view({1, 1, T, total}).expand({B, 1, T, total});
    if (opts.attention_mask.defined()) {
      TORCH_CHECK(opts.attention_mask.dim() == 2 && opts.attention_mask.size(0) == B &&
                      opts.attention_mask.size(1) == total,
                  "attention_mask must be [", B, ", ", total, "], got ", opts.attention_mask.sizes());
      allowed = allowed & opts.attention_mask.to(dev).to(at::kBool).view({B, 1, 1, total});
    }
    if (opts.document_ids.defined()) {
      TORCH_CHECK(past == 0, "document_ids cannot be combined with a non-empty KV cache");
      TORCH_CHECK(opts.document_ids.dim() == 2 && opts.document_ids.size(0) == B &&
                      opts.document_ids.size(1) == T,
                  "document_ids must be [", B, ", ", T, "], got ", opts.document_ids.sizes());
      auto doc = opts.document_ids.to(dev).to(at::kLong);
      allowed = allowed & (doc.unsqueeze(2) == doc.unsqueeze(1)).unsqueeze(1);  // [B, 1, T, T]
    }
    mask = AdditiveMask(allowed);
  }

  RowState rows;
  rows.active = &active_;
  h = Layers(h, cos, sin, mask, is_causal, opts.cache, rows, opts.layer_runner);
  if (opts.cache) opts.cache->length = total;
  if (opts.logits_for_last_only) h = h.narrow(1, T - 1, 1);
  return Project(*lm_head_, 7 * static_cast<int64_t>(layers_.size()), h, rows);
}

// ---------------------------------------------------------------------------------------
// Adapters

std::vector<AdaptedLinear*> LlamaModel::AllLinears() const {
  std::vector<AdaptedLinear*> out;
  for (const auto& l : layers_) {
    for (auto* p : {l.q.get(), l.k.get(), l.v.get(), l.o.get(), l.gate.get(), l.up.get(), l.down.get()}) {
      out.push_back(p);
    }
  }
  out.push_back(lm_head_.get());
  return out;
}

std::vector<std::string> LlamaModel::LinearNames() const {
  std::vector<std::string> names;
  for (auto* l : AllLinears()) names.push_back(l->name());
  return names;
}

AdaptedLinear* LlamaModel::Linear(const std::string& name) {
  for (auto* l : AllLinears()) {
    if (l->name() == name) return l;
  }
  return nullptr;
}

absl::Status LlamaModel::AddAdapter(const std::string& name, const OftConfig& config,
                                    const TargetSpec& targets, at::Generator generator) {
  if (adapters_.count(name)) {
    return absl::AlreadyExistsError(absl::StrCat("adapter \"", name, "\" is already attached"));
  }
  OFT_RETURN_IF_ERROR(config.Validate());
  OFT_ASSIGN_OR_RETURN(std::vector<std::string> selected,
                       SelectTargets(targets, LinearNames(), "lm_head"));
  const auto pdtype = dtype_ == at::kDouble ? at::kDouble : at::kFloat;
  const auto options = at::TensorOptions().dtype(pdtype).device(device());
  std::vector<std::pair<AdaptedLinear*, std::shared_ptr<OftRotation>>> made;
  for (const auto& n : selected) {
    AdaptedLinear* lin = Linear(n);
    auto rot = OftRotation::Create(config, lin->in_features(), options, generator);
    if (!rot.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("module ", n, " (in_features=",
                                                     lin->in_features(), "): ", rot.status().message()));
    }
    made.emplace_back(lin, std::make_shared<OftRotation>(std::move(rot).value()));
  }
  for (auto& [lin, rot] : made) lin->Attach(name, std::move(rot));
  adapters_[name] = config;
  return absl::OkStatus();
}

absl::Status LlamaModel::RemoveAdapter(const std::string& name) {
  if (!adapters_.count(name)) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not attached"));
  }
  for (auto* l : AllLinears()) l->Detach(name);
  adapters_.erase(name);
  std::erase(active_, name);
  return absl::OkStatus();
}

absl::Status LlamaModel::SetActiveAdapters(const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (!adapters_.count(n)) return absl::NotFoundError(absl::StrCat("adapter \"", n, "\" is not attached"));
  }
  active_ = names;
  return absl::OkStatus();
}

std::vector<std::string> LlamaModel::adapter_names() const {
  std::vector<std::string> out;
  for (const auto& [n, c] : adapters_) out.push_back(n);
  return out;
}

absl::StatusOr<std::map<std::string, at::Tensor>> LlamaModel::AdapterParameters(
    const std::string& name) const {
  if (!adapters_.count(name)) return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not attached"));
  std::map<std::string, at::Tensor> out;
  for (auto* l : AllLinears()) {
    if (auto* r = l->Rotation(name)) out[l->name()] = r->oft_r();
  }
  return out;
}

absl::StatusOr<OftConfig> LlamaModel::AdapterConfig(const std::string& name) const {
  auto it = adapters_.find(name);
  if (it == adapters_.end()) return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not attached"));
  return it->second;
}

void LlamaModel::SetTraining(bool training) {
  for (auto* l : AllLinears()) {
    for (const auto& [n, c] : adapters_) {
      if (auto* r = l->Rotation(n)) r->SetTraining(training);
    }
  }
}

std::map<std::string, at::Tensor> LlamaModel::BaseTensors() const {
  std::map<std::string, at::Tensor> out;
  out["model.embed_tokens.weight"] = embed_;
  out["model.norm.weight"] = final_norm_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    out[p + "input_layernorm.weight"] = layers_[i].input_norm;
    out[p + "post_attention_layernorm.weight"] = layers_[i].post_norm;
  }
  for (auto* l : AllLinears()) {
    if (l == lm_head_.get() && config_.tie_word_embeddings) continue;
    out[l->name() + ".weight"] = l->quantized() ? l->DenseWeight(at::kFloat) : l->weight();
    if (l->bias().defined()) out[l->name() + ".bias"] = l->bias();
  }
  return out;
}

int64_t LlamaModel::BaseWeightBytes() const {
  auto bytes = [](const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); };
  int64_t total = bytes(embed_) + bytes(final_norm_);
  for (const auto& l : layers_) total += bytes(l.input_norm) + bytes(l.post_norm);
  for (auto* l : AllLinears()) {
    if (l == lm_head_.get() && config_.tie_word_embeddings) continue;
    total += l->BaseWeightBytes();
  }
  return total;
}

at::ScalarType DeviceComputeDtype(const ModelConfig& config, const std::string& device) {
  if (device.rfind("cuda", 0) != 0) return at::kFloat;
  if (config.torch_dtype == "bfloat16") return at::kBFloat16;
  if (config.torch_dtype == "float16") return at::kHalf;
  return at::kFloat;
}

}  // namespace oft
