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
#include "server/model/decoder_ops.h"
#include "server/model/linear_cross_entropy.h"
#include "server/model/host_upload.h"
#include "server/model/kv_pool.h"
#include "server/model/safetensors_torch.h"
#include "server/oft/ops.h"

namespace oft {

// ---------------------------------------------------------------------------------------
// RoPE

at::Tensor RopeInverseFrequencies(const ModelConfig& c, bool local) {
  const int64_t dim = static_cast<int64_t>(c.head_dim * c.family.partial_rotary_factor);
  const double theta = local ? c.family.local_rope_theta.value_or(c.rope_theta) : c.rope_theta;
  auto exponents = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) /
                   static_cast<double>(dim);
  auto inv = 1.0 / at::pow(theta, exponents);
  if (local || !c.rope_scaling) return inv;
  const auto& s = *c.rope_scaling;
  if (s.rope_type == "linear") return inv / s.factor;  // positions divided by factor
  // dynamic: the base frequencies up to max_position_embeddings; longer forwards get theirs
  // from DynamicNtkInverseFrequencies (Rope).
  if (s.rope_type == "dynamic") return inv;
  if (s.rope_type == "yarn") {
    // Dims that turn fewer than beta_slow times over the original context are interpolated
    // (inv / factor), more than beta_fast times extrapolated (inv), a linear ramp between.
    const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
    auto correction_dim = [&](double rotations) {
      return dim * std::log(old_ctx / (rotations * 2 * M_PI)) / (2 * std::log(theta));
    };
    double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
    if (s.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;  // as transformers: no zero-width ramp
    auto ramp = ((at::arange(dim / 2, at::TensorOptions().dtype(at::kFloat)) - low) / (high - low))
                    .clamp(0, 1);
    auto extrapolation = 1 - ramp;
    return (inv / s.factor) * (1 - extrapolation) + inv * extrapolation;
  }
  // llama3: long wavelengths are divided by `factor`, short ones kept, the band between
  // interpolated smoothly.
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

  const ModelFamily& fam = c.family;
  LinearSlots& slots = m->slots_;
  // (slot, module name under model.layers.N., out, in, bias) in Layer::linears order.
  struct Spec {
    int* slot;
    const char* name;
    int64_t out, in;
    bool bias;
  };
  std::vector<Spec> specs;
  if (fam.fused_qkv) {
    specs.push_back({&slots.qkv, "self_attn.qkv_proj", q_out + 2 * kv_out, H, c.attention_bias});
  } else {
    specs.push_back({&slots.q, "self_attn.q_proj", q_out, H, c.attention_bias});
    specs.push_back({&slots.k, "self_attn.k_proj", kv_out, H, c.attention_bias});
    specs.push_back({&slots.v, "self_attn.v_proj", kv_out, H, c.attention_bias});
  }
  specs.push_back({&slots.o, "self_attn.o_proj", H, q_out, c.o_proj_bias});
  if (fam.fused_gate_up) {
    specs.push_back({&slots.gate_up, "mlp.gate_up_proj", 2 * I, H, c.mlp_bias});
  } else {
    specs.push_back({&slots.gate, "mlp.gate_proj", I, H, c.mlp_bias});
    specs.push_back({&slots.up, "mlp.up_proj", I, H, c.mlp_bias});
  }
  specs.push_back({&slots.down, "mlp.down_proj", H, I, c.mlp_bias});
  for (size_t i = 0; i < specs.size(); ++i) *specs[i].slot = static_cast<int>(i);
  slots.per_layer = static_cast<int>(specs.size());

  OFT_ASSIGN_OR_RETURN(m->embed_, get("model.embed_tokens.weight", {c.vocab_size, H}));
  OFT_ASSIGN_OR_RETURN(m->final_norm_, get("model.norm.weight", {H}));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer l;
    for (auto [norm, name] : {std::pair<at::Tensor*, const std::string*>{&l.pre_attn_norm, &fam.pre_attn_norm},
                              {&l.post_attn_norm, &fam.post_attn_norm},
                              {&l.pre_ffn_norm, &fam.pre_ffn_norm},
                              {&l.post_ffn_norm, &fam.post_ffn_norm}}) {
      if (name->empty()) continue;
      OFT_ASSIGN_OR_RETURN(*norm, get(p + *name + ".weight", {H}));
    }
    if (fam.qk_norm != QkNorm::kNone) {
      const bool per_head = fam.qk_norm == QkNorm::kPerHead;
      OFT_ASSIGN_OR_RETURN(l.q_norm, get(p + "self_attn.q_norm.weight", {per_head ? hd : q_out}));
      OFT_ASSIGN_OR_RETURN(l.k_norm, get(p + "self_attn.k_norm.weight", {per_head ? hd : kv_out}));
    }
    for (const Spec& spec : specs) {
      OFT_ASSIGN_OR_RETURN(auto lin, linear(p + spec.name, spec.out, spec.in, spec.bias));
      l.linears.push_back(std::move(lin));
    }
    m->layers_.push_back(std::move(l));
  }
  if (c.tie_word_embeddings) {
    m->lm_head_ = std::make_unique<AdaptedLinear>("lm_head", m->embed_, at::Tensor());
  } else {
    OFT_ASSIGN_OR_RETURN(m->lm_head_, linear("lm_head", c.vocab_size, H, false));
  }
  OFT_RETURN_IF_ERROR(TorchCall("rope", [&] {
    m->inv_freq_ = RopeInverseFrequencies(c).to(device);
    if (fam.local_rope_theta) m->local_inv_freq_ = RopeInverseFrequencies(c, /*local=*/true).to(device);
  }));
  return m;
}

c10::Device LlamaModel::device() const { return embed_.device(); }

// ---------------------------------------------------------------------------------------
// Forward: the parts shared by Forward (training) and ForwardBatch (serving)

at::Tensor LlamaModel::Project(const AdaptedLinear& lin, int64_t linear_index,
                               const at::Tensor& x, const RowState& rows,
                               const at::Tensor& tokens_per_row) const {
  static const std::vector<std::string> kNone;
  if (rows.adapters == nullptr) {
    return lin.Forward(x, rows.active ? *rows.active : kNone, oft_compute_, rows.loss_pass);
  }
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
    x2 = GatheredBlockRotate(x2, g.rotations, idx, g.delta);
  }
  return lin.Forward(x2.view(x.sizes()), kNone, oft_compute_);
}

std::vector<at::Tensor> LlamaModel::ProjectSiblings(const Layer& layer, int64_t index,
                                                    const std::vector<int>& slots,
                                                    const at::Tensor& x,
                                                    const RowState& rows) const {
  std::vector<at::Tensor> out;
  if (rows.adapters != nullptr) {  // serving: per-row adapters, one Project each
    for (int slot : slots) {
      out.push_back(Project(*layer.linears[slot], slots_.per_layer * index + slot, x, rows,
                            rows.tokens_per_row));
    }
    return out;
  }
  static const std::vector<std::string> kNone;
  std::vector<const AdaptedLinear*> linears;
  for (int slot : slots) linears.push_back(layer.linears[slot].get());
  return AdaptedLinear::ForwardSiblings(linears, x, rows.active ? *rows.active : kNone,
                                        oft_compute_, rows.loss_pass);
}

at::Tensor LlamaModel::Norm(const at::Tensor& x, const at::Tensor& w) const {
  return RmsNorm(x, w, config_.rms_norm_eps, config_.family.norm);
}

at::Tensor LlamaModel::Attention(const Layer& layer, int64_t index, const at::Tensor& h,
                                 const RopeTables& rope, const LayerMask& mask, KvCache* cache,
                                 const RowState& rows) const {
  const auto& c = config_;
  const ModelFamily& fam = c.family;
  const int64_t B = h.size(0), T = h.size(1), hd = c.head_dim;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads;
  const int64_t li = slots_.per_layer * index;  // Linear index of this layer's first
  const at::Tensor& tpr = rows.tokens_per_row;
  auto proj = [&](int slot, const at::Tensor& x) {
    return Project(*layer.linears[slot], li + slot, x, rows, tpr);
  };
  at::Tensor q, k, v;
  if (slots_.qkv >= 0) {
    auto qkv = proj(slots_.qkv, h);  // [B, T, (nh + 2 nkv) hd]
    q = qkv.narrow(-1, 0, nh * hd);
    k = qkv.narrow(-1, nh * hd, nkv * hd);
    v = qkv.narrow(-1, (nh + nkv) * hd, nkv * hd);
  } else {
    auto qkv = ProjectSiblings(layer, index, {slots_.q, slots_.k, slots_.v}, h, rows);
    q = qkv[0];
    k = qkv[1];
    v = qkv[2];
  }
  if (fam.qk_norm == QkNorm::kFullProjection) {
    q = Norm(q, layer.q_norm);
    k = Norm(k, layer.k_norm);
  }
  q = q.reshape({B, T, nh, hd});
  k = k.reshape({B, T, nkv, hd});
  v = v.reshape({B, T, nkv, hd}).transpose(1, 2);
  if (fam.qk_norm == QkNorm::kPerHead) {
    q = Norm(q, layer.q_norm);
    k = Norm(k, layer.k_norm);
  }
  const bool local = rope.local_cos.defined() && Slides(index);
  const at::Tensor& cos = local ? rope.local_cos : rope.cos;
  const at::Tensor& sin = local ? rope.local_sin : rope.sin;
  q = ApplyRope(q.transpose(1, 2), cos, sin);
  k = ApplyRope(k.transpose(1, 2), cos, sin);
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
  const std::optional<double> scale = fam.attention_scale;
  const std::optional<double> softcap = fam.attn_logit_softcap;
  at::Tensor out;
  if (const PooledDecode* plan = rows.pooled[Slides(index) ? 1 : 0]; plan != nullptr) {
    out = PooledDecodeAttention(*plan, index, q, k, v, scale, softcap);  // one call, every row
  } else if (rows.caches != nullptr) {
    // Prefill (or rows outside a pool): each row attends to its own cache (lengths differ),
    // exactly as it would alone. A row is a batch entry, or a slice of the one packed
    // sequence.
    const bool packed = !rows.lengths.empty();
    const int64_t n_rows = static_cast<int64_t>(rows.caches->size());
    const int kind = Slides(index) ? 1 : 0;
    auto slice = [&](const at::Tensor& t, int64_t r) {
      return packed ? t.narrow(2, rows.offsets[r], rows.lengths[r]) : t.narrow(0, r, 1);
    };
    std::vector<at::Tensor> outs;
    outs.reserve(n_rows);
    for (int64_t r = 0; r < n_rows; ++r) {
      at::Tensor kb = slice(k, r), vb = slice(v, r);
      append((*rows.caches)[r], kb, vb);
      outs.push_back(Attend(slice(q, r), kb, vb, (*rows.masks[kind])[r],
                            (*rows.causal[kind])[r] != 0, scale, softcap));
    }
    out = n_rows == 1 ? outs[0] : at::cat(outs, packed ? 2 : 0);
  } else {
    if (cache != nullptr) append(cache, k, v);
    out = Attend(q, k, v, mask.additive, mask.causal, scale, softcap);
  }
  return proj(slots_.o, out.transpose(1, 2).reshape({B, T, nh * hd}));
}

at::Tensor LlamaModel::Mlp(const Layer& layer, int64_t index, const at::Tensor& x,
                           const RowState& rows) const {
  const int64_t li = slots_.per_layer * index;
  const at::Tensor& tpr = rows.tokens_per_row;
  auto proj = [&](int slot, const at::Tensor& in) {
    return Project(*layer.linears[slot], li + slot, in, rows, tpr);
  };
  at::Tensor gate, up;
  if (slots_.gate_up >= 0) {
    auto gu = proj(slots_.gate_up, x);  // [B, T, 2 I]: gate | up
    const int64_t I = config_.intermediate_size;
    gate = gu.narrow(-1, 0, I);
    up = gu.narrow(-1, I, I);
  } else {
    auto gu = ProjectSiblings(layer, index, {slots_.gate, slots_.up}, x, rows);
    gate = gu[0];
    up = gu[1];
  }
  return proj(slots_.down, GatedActivation(gate, up, config_.family.activation));
}

at::Tensor LlamaModel::Head(const at::Tensor& h, const RowState& rows,
                            const at::Tensor& tokens_per_row) const {
  const ModelFamily& fam = config_.family;
  auto logits = Project(*lm_head_, slots_.per_layer * static_cast<int64_t>(layers_.size()), h,
                        rows, tokens_per_row);
  // Granite's divisor and Gemma 2's soft-cap c (c * tanh(logits / c)) share one division, in
  // place: the head's GEMM keeps its inputs for backward, not its output.
  const double c = fam.final_logit_softcap.value_or(1.0);
  if (fam.logits_divisor * c != 1.0) logits.div_(fam.logits_divisor * c);
  if (fam.final_logit_softcap) {
    if (logits.requires_grad()) {
      logits = at::tanh(logits) * c;  // tanh's backward keeps its own output
    } else {
      logits.tanh_().mul_(c);
    }
  }
  return logits;
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
  auto h = at::embedding(embed_, ids.device().is_cpu() ? UploadToDevice(ids, dev) : ids.to(dev));
  const double scale = config_.family.embedding_scale;
  if (scale == 1.0) return h;
  // The multiplier rounded to the compute dtype first, as transformers' embed_scale buffer.
  return h * at::scalar_tensor(scale, at::TensorOptions().dtype(dtype_).device(dev));
}

// Dynamic NTK RoPE (transformers' _compute_dynamic_ntk_parameters, in fp32 as there): a
// forward reaching length L > M = max_position_embeddings rotates with the base
// theta * (factor * L / M - (factor - 1))^(d / (d - 2)). `seq_lens` [B or 1, T] -> [.., T, d/2].
at::Tensor LlamaModel::DynamicNtkInverseFrequencies(const at::Tensor& seq_lens) const {
  const RopeScaling& s = *config_.rope_scaling;
  const int64_t dim = inv_freq_.size(0) * 2;
  const double m = static_cast<double>(config_.max_position_embeddings);
  auto len = seq_lens.to(at::kFloat).clamp_min(m);
  auto base = config_.rope_theta *
              at::pow(s.factor * len / m - (s.factor - 1), static_cast<double>(dim) / (dim - 2));
  auto exponents = at::arange(0, dim, 2, inv_freq_.options().dtype(at::kLong)).to(at::kFloat) /
                   static_cast<double>(dim);
  return 1.0 / at::pow(base.unsqueeze(-1), exponents);
}

bool LlamaModel::DynamicRope() const {
  return config_.rope_scaling.has_value() && config_.rope_scaling->rope_type == "dynamic";
}

LlamaModel::RopeTables LlamaModel::Rope(const at::Tensor& positions,
                                        const at::Tensor& seq_lens) const {
  auto tables = [&](const at::Tensor& inv_freq, double scale) {
    // [B, T, r/2]: one frequency vector for all, or (dynamic NTK) one per token.
    auto freqs = inv_freq.dim() == 1 ? positions.unsqueeze(-1) * inv_freq.view({1, 1, -1})
                                     : positions.unsqueeze(-1) * inv_freq;
    auto emb = at::cat({freqs, freqs}, -1);
    auto cos = emb.cos(), sin = emb.sin();
    if (scale != 1.0) {  // yarn's attention factor, applied in fp32 as transformers does
      cos = cos * scale;
      sin = sin * scale;
    }
    return std::make_pair(cos.to(dtype_).unsqueeze(1), sin.to(dtype_).unsqueeze(1));
  };
  RopeTables r;
  const double scale = config_.rope_scaling ? config_.rope_scaling->attention_factor : 1.0;
  if (DynamicRope()) {
    TORCH_CHECK(seq_lens.defined(), "dynamic RoPE needs the length each forward reaches");
    std::tie(r.cos, r.sin) = tables(DynamicNtkInverseFrequencies(seq_lens.expand_as(positions)), 1.0);
  } else {
    std::tie(r.cos, r.sin) = tables(inv_freq_, scale);
  }
  if (local_inv_freq_.defined()) {
    std::tie(r.local_cos, r.local_sin) = tables(local_inv_freq_, 1.0);
  }
  return r;
}

bool LlamaModel::Slides(int64_t index) const {
  return config_.sliding_window.has_value() && config_.family.LayerSlides(index);
}

at::Tensor LlamaModel::Allowed(int64_t p, int64_t t, bool sliding) const {
  const auto opt_long = at::TensorOptions().dtype(at::kLong).device(embed_.device());
  auto qpos = at::arange(p, p + t, opt_long).view({t, 1});
  auto kpos = at::arange(0, p + t, opt_long).view({1, p + t});
  auto allowed = (kpos <= qpos);
  if (sliding && config_.sliding_window) {
    allowed = allowed & (kpos > qpos - *config_.sliding_window);
  }
  return allowed;  // [t, p + t]
}

bool LlamaModel::WindowBites(int64_t p, int64_t t, bool sliding) const {
  return sliding && config_.sliding_window.has_value() && p + t > *config_.sliding_window;
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

at::Tensor LlamaModel::Layers(at::Tensor h, const RopeTables& rope, const LayerMask masks[2],
                              KvCache* cache, const RowState& rows,
                              const LayerRunner& runner) const {
  const double rm = config_.family.residual_multiplier;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer* l = &layers_[i];
    const int64_t index = static_cast<int64_t>(i);
    const LayerMask mask = masks[Slides(index) ? 1 : 0];
    // Captures by value: a layer runner may call it again after Forward returns (only
    // training passes one, and its RowState points at nothing but active_).
    auto body = [this, l, index, rope, mask, cache, rows, rm](const at::Tensor& hin) {
      auto branch = [&](const at::Tensor& pre, const at::Tensor& post, const at::Tensor& x,
                        auto&& fn) {
        auto y = fn(pre.defined() ? Norm(x, pre) : x);
        if (post.defined()) y = Norm(y, post);
        return rm == 1.0 ? x + y : x + y * rm;
      };
      auto hh = branch(l->pre_attn_norm, l->post_attn_norm, hin, [&](const at::Tensor& x) {
        return Attention(*l, index, x, rope, mask, cache, rows);
      });
      return branch(l->pre_ffn_norm, l->post_ffn_norm, hh,
                    [&](const at::Tensor& x) { return Mlp(*l, index, x, rows); });
    };
    h = (runner && cache == nullptr) ? runner(index, body, h) : body(h);
  }
  return Norm(h, final_norm_);
}

// ---------------------------------------------------------------------------------------
// Forward (training and evaluation: the active adapters)

at::Tensor LlamaModel::Forward(const at::Tensor& ids, const ForwardOptions& opts) const {
  RowState rows;
  rows.active = &active_;
  return Head(FinalHidden(ids, opts), rows);
}

at::Tensor LlamaModel::CausalLmLoss(const at::Tensor& ids, const at::Tensor& targets,
                                    const ForwardOptions& opts, int64_t ignore_index) const {
  TORCH_CHECK(!opts.logits_for_last_only && opts.cache == nullptr,
              "CausalLmLoss: a training pass (no cache, every position)");
  TORCH_CHECK(targets.sizes() == ids.sizes(), "CausalLmLoss: targets must be ", ids.sizes(),
              ", got ", targets.sizes());
  const at::Tensor h = FinalHidden(ids, opts, /*loss_pass=*/true);
  const at::Tensor flat_targets = targets.reshape({-1}).to(h.device()).to(at::kLong);
  const ModelFamily& fam = config_.family;
  if (!lm_head_->quantized() && oft_compute_ != OftCompute::kWeightCentric) {
    // The head's own active rotations (PEFT may target lm_head) are applied first; the GEMM,
    // the divisor, the soft-cap and the loss run fused (linear_cross_entropy.h).
    const at::Tensor x = lm_head_->RotateInput(h, active_);
    LinearCrossEntropyOptions o;
    o.ignore_index = ignore_index;
    o.divisor = fam.logits_divisor;
    o.softcap = fam.final_logit_softcap;
    return LinearCrossEntropy(x.reshape({-1, x.size(-1)}), lm_head_->weight(), lm_head_->bias(),
                              flat_targets, o);
  }
  RowState rows;
  rows.active = &active_;
  rows.loss_pass = true;
  const at::Tensor logits = Head(h, rows);
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), flat_targets,
                                {}, at::Reduction::Sum, ignore_index);
}

at::Tensor LlamaModel::FinalHidden(const at::Tensor& ids, const ForwardOptions& opts,
                                   bool loss_pass) const {
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
  // Dynamic NTK: every row rotates with the frequencies of the longest position the batch
  // reaches (transformers: max(position_ids) + 1 of the forward).
  at::Tensor seq_lens;
  if (DynamicRope()) {
    seq_lens = opts.position_ids.defined()
                   ? (pos.max() + 1).view({1, 1})
                   : at::full({1, 1}, static_cast<double>(total), pos.options());
  }
  const RopeTables rope = Rope(pos, seq_lens);

  // Without padding, packing or a biting window no dense mask is built (it would rule out
  // the fused attention kernels): one query attends to every key, and t > 1 queries over an
  // empty cache are SDPA's is_causal. Only t > 1 queries after cached tokens need a mask.
  auto build = [&](bool sliding) {
    LayerMask m;
    if (!opts.attention_mask.defined() && !opts.document_ids.defined() &&
        !WindowBites(past, T, sliding) && (T == 1 || past == 0)) {
      m.causal = T > 1;
      return m;
    }
    // Additive mask [B, 1, T, total]: causal (by absolute position), padding, sliding window.
    auto allowed = Allowed(past, T, sliding).view({1, 1, T, total}).expand({B, 1, T, total});
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
    m.additive = AdditiveMask(allowed);
    return m;
  };
  bool any_full = false, any_sliding = false;
  for (int64_t i = 0; i < static_cast<int64_t>(layers_.size()); ++i) {
    (Slides(i) ? any_sliding : any_full) = true;
  }
  LayerMask masks[2];
  if (any_full) masks[0] = build(false);
  if (any_sliding) masks[1] = build(true);

  RowState rows;
  rows.active = &active_;
  rows.loss_pass = loss_pass;
  h = Layers(h, rope, masks, opts.cache, rows, opts.layer_runner);
  if (opts.cache) opts.cache->length = total;
  if (opts.logits_for_last_only) h = h.narrow(1, T - 1, 1);
  return h;
}

// ---------------------------------------------------------------------------------------
// Adapters

std::vector<AdaptedLinear*> LlamaModel::AllLinears() const {
  std::vector<AdaptedLinear*> out;
  for (const auto& l : layers_) {
    for (const auto& p : l.linears) out.push_back(p.get());
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
  const ModelFamily& fam = config_.family;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const Layer& l = layers_[i];
    for (auto [norm, name] : {std::pair<const at::Tensor*, const std::string*>{&l.pre_attn_norm, &fam.pre_attn_norm},
                              {&l.post_attn_norm, &fam.post_attn_norm},
                              {&l.pre_ffn_norm, &fam.pre_ffn_norm},
                              {&l.post_ffn_norm, &fam.post_ffn_norm}}) {
      if (norm->defined()) out[p + *name + ".weight"] = *norm;
    }
    if (l.q_norm.defined()) out[p + "self_attn.q_norm.weight"] = l.q_norm;
    if (l.k_norm.defined()) out[p + "self_attn.k_norm.weight"] = l.k_norm;
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
  for (const auto& l : layers_) {
    for (const at::Tensor* t : {&l.pre_attn_norm, &l.post_attn_norm, &l.pre_ffn_norm,
                                &l.post_ffn_norm, &l.q_norm, &l.k_norm}) {
      if (t->defined()) total += bytes(*t);
    }
  }
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
