// LlamaModel's serving side: adapters prepared for serving, per-row adapter batches and
// ForwardBatch, the batched pass over rows that each have their own cache, positions and
// adapter (server/model/serving_batch.h). The training side (attached and active adapters,
// Forward) and the layers both passes share live in llama.cc.
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/core/grad_mode.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_boundary.h"
#include "server/model/host_upload.h"
#include "server/model/kv_pool.h"
#include "server/model/llama.h"
#include "server/oft/cpu_isa.h"

namespace oft {

at::Tensor LlamaModel::ForwardBatch(const at::Tensor& ids, const ServingBatch& batch) const {
  TORCH_CHECK(ids.dim() == 2, "ids must be [rows, tokens], got ", ids.sizes());
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t n_rows = static_cast<int64_t>(batch.caches.size());
  TORCH_CHECK(n_rows > 0, "ServingBatch.caches must hold one cache per row, got none");
  for (const KvCache* kc : batch.caches) TORCH_CHECK(kc != nullptr, "ServingBatch.caches has a null entry");
  const bool packed = !batch.lengths.empty();
  if (packed) {
    TORCH_CHECK(B == 1 && static_cast<int64_t>(batch.lengths.size()) == n_rows,
                "ServingBatch.lengths needs ids [1, total] and one cache per length");
    int64_t sum = 0;
    for (int64_t len : batch.lengths) {
      TORCH_CHECK(len > 0, "ServingBatch.lengths entries must be positive");
      sum += len;
    }
    TORCH_CHECK(sum == T, "ServingBatch.lengths sum to ", sum, " but ids has ", T, " tokens");
  } else {
    TORCH_CHECK(n_rows == B, "ServingBatch.caches has ", n_rows, " entries for a batch of ", B);
  }
  TORCH_CHECK(batch.adapters == nullptr || batch.adapters->rows() == n_rows, "adapters has ",
              batch.adapters ? batch.adapters->rows() : 0, " rows for ", n_rows, " rows");
  const auto dev = embed_.device();
  auto h = Embed(ids);

  // RoPE tables: each row continues at its own cache length. Positions and row lengths built
  // on the host are uploaded without blocking the host (host_upload.h).
  RowState rows;
  rows.adapters = batch.adapters;
  // Dynamic NTK RoPE: each row rotates with the frequencies of the length it reaches in this
  // forward (its cache plus its new tokens), as transformers does for a batch of one.
  at::Tensor pos, seq_lens;
  const bool dynamic = DynamicRope();
  if (packed) {
    std::vector<float> positions, reach;
    positions.reserve(T);
    for (int64_t r = 0; r < n_rows; ++r) {
      rows.offsets.push_back(static_cast<int64_t>(positions.size()));
      rows.lengths.push_back(batch.lengths[r]);
      for (int64_t t = 0; t < batch.lengths[r]; ++t) {
        positions.push_back(static_cast<float>(batch.caches[r]->length + t));
        if (dynamic) reach.push_back(static_cast<float>(batch.caches[r]->length + batch.lengths[r]));
      }
    }
    pos = UploadToDevice(positions, dev).view({1, T});
    if (dynamic) seq_lens = UploadToDevice(reach, dev).view({1, T});
    rows.tokens_per_row = UploadToDevice(batch.lengths, at::kLong, dev);
  } else {
    std::vector<float> starts;
    for (const KvCache* kc : batch.caches) starts.push_back(static_cast<float>(kc->length));
    const at::Tensor start = UploadToDevice(starts, dev).view({B, 1});
    pos = start + at::arange(0, T, at::TensorOptions().dtype(at::kFloat).device(dev)).view({1, T});
    if (dynamic) seq_lens = start + static_cast<double>(T);
  }
  const RopeTables rope = Rope(pos, seq_lens);

  // A decode step (one new token per row) whose rows are all in one KvPool attends once per
  // layer over the pool's slots, each row masked to its own keys (and, on sliding layers,
  // the window; kv_pool.h). Otherwise (prefill, rows outside a pool) each row attends on its
  // own: per-row additive masks [1, 1, t, length + t] (t: the row's new tokens) for full [0]
  // and sliding-window [1] layers, only where needed (as in Forward: one query, or t
  // queries over an empty cache, need none).
  bool kinds[2] = {false, false};  // which kinds of layer the model has
  for (int64_t i = 0; i < static_cast<int64_t>(layers_.size()); ++i) kinds[Slides(i) ? 1 : 0] = true;
  KvPool* pool = batch.caches[0]->pool;
  bool pooled = pool != nullptr && !packed && T == 1;
  for (int64_t r = 1; r < n_rows && pooled; ++r) pooled = batch.caches[r]->pool == pool;
  PooledDecode plans[2];
  if (pooled) {
    std::vector<int64_t> slots, past;
    for (const KvCache* kc : batch.caches) {
      slots.push_back(kc->slot);
      past.push_back(kc->length);
    }
    for (int kind = 0; kind < 2; ++kind) {
      if (!kinds[kind]) continue;
      plans[kind] = PlanPooledDecode(pool, slots, past,
                                     kind == 1 ? config_.sliding_window : std::nullopt, dev);
      rows.pooled[kind] = &plans[kind];
    }
  }
  std::vector<at::Tensor> row_masks[2];
  std::vector<uint8_t> row_causal[2];
  for (int kind = 0; kind < 2 && !pooled; ++kind) {
    const bool sliding = kind == 1;
    for (int64_t r = 0; r < n_rows; ++r) {
      const KvCache* kc = batch.caches[r];
      const int64_t t = packed ? batch.lengths[r] : T;
      if (!WindowBites(kc->length, t, sliding) && (t == 1 || kc->length == 0)) {
        row_masks[kind].emplace_back();
        row_causal[kind].push_back(t > 1);
        continue;
      }
      row_causal[kind].push_back(0);
      row_masks[kind].push_back(
          AdditiveMask(Allowed(kc->length, t, sliding).view({1, 1, t, kc->length + t})));
    }
    rows.masks[kind] = &row_masks[kind];
    rows.causal[kind] = &row_causal[kind];
  }
  rows.caches = &batch.caches;

  const LayerMask unused[2];
  h = Layers(h, rope, unused, /*cache=*/nullptr, rows, /*runner=*/{});
  for (int64_t r = 0; r < n_rows; ++r) batch.caches[r]->length += packed ? batch.lengths[r] : T;
  if (packed && batch.logits_for_last_only) {
    std::vector<int64_t> last;
    for (int64_t r = 0; r < n_rows; ++r) last.push_back(rows.offsets[r] + rows.lengths[r] - 1);
    h = h.index_select(1, UploadToDevice(last, at::kLong, dev));  // [1, rows, H]
    auto logits = Head(h, rows);
    return logits.view({n_rows, 1, logits.size(-1)});
  }
  if (batch.logits_for_last_only) h = h.narrow(1, T - 1, 1);
  return Head(h, rows, packed ? rows.tokens_per_row : at::Tensor());
}

absl::StatusOr<std::shared_ptr<const ServingAdapter>> LlamaModel::PrepareServingAdapter(
    const OftConfig& config, const TargetSpec& targets,
    const std::map<std::string, at::Tensor>& packed, ServedRotations form) const {
  OFT_RETURN_IF_ERROR(config.Validate());
  const std::vector<AdaptedLinear*> linears = AllLinears();
  std::vector<std::string> names;
  for (auto* l : linears) names.push_back(l->name());
  OFT_ASSIGN_OR_RETURN(std::vector<std::string> selected, SelectTargets(targets, names, "lm_head"));
  for (const auto& [module, t] : packed) {
    if (std::find(selected.begin(), selected.end(), module) == selected.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor for module ", module, " which the adapter config does not target or the model "
          "does not have"));
    }
  }
  auto adapter = std::make_shared<ServingAdapter>();
  adapter->config_ = config;
  adapter->blocks_.resize(linears.size());
  OftConfig eval_config = config;
  eval_config.module_dropout = 0.0;
  const auto pdtype = dtype_ == at::kDouble ? at::kDouble : at::kFloat;
  const auto options = at::TensorOptions().dtype(pdtype).device(device());
  // The served form (serving_batch.h).
  adapter->delta_ = form == ServedRotations::kCompact && device().is_cpu() &&
                    dtype_ == at::kFloat && cpu::ConvertsHalfInHardware(cpu::ActiveIsa());
  for (size_t i = 0; i < linears.size(); ++i) {
    const std::string& n = linears[i]->name();
    if (std::find(selected.begin(), selected.end(), n) == selected.end()) continue;
    auto it = packed.find(n);
    if (it == packed.end()) {
      return absl::InvalidArgumentError(absl::StrCat("no tensor for targeted module ", n));
    }
    auto rot = OftRotation::Create(eval_config, linears[i]->in_features(), options);
    if (!rot.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("module ", n, " (in_features=",
                                                     linears[i]->in_features(), "): ",
                                                     rot.status().message()));
    }
    if (it->second.sizes() != rot->oft_r().sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor for ", n, " has shape ", c10::str(it->second.sizes()), " but the config gives ",
          c10::str(rot->oft_r().sizes()), " (r / oft_block_size / block_share mismatch?)"));
    }
    OFT_RETURN_IF_ERROR(TorchCall("PrepareServingAdapter", [&] {
      at::NoGradGuard no_grad;
      rot->oft_r().copy_(it->second);
      rot->SetTraining(false);
      adapter->blocks_[i] = rot->EvalBlocks().detach().contiguous();  // [rows, b, b]
    }));
    if (adapter->delta_) {
      constexpr double kHalfMax = 65504.0;
      double largest = 0.0;
      OFT_RETURN_IF_ERROR(TorchCall("PrepareServingAdapter", [&] {
        const int64_t b = adapter->blocks_[i].size(1);
        at::Tensor d = adapter->blocks_[i] - at::eye(b, adapter->blocks_[i].options());
        largest = d.abs().max().item<double>();
        adapter->blocks_[i] = d.to(at::kHalf).contiguous();
      }));
      if (!(largest <= kHalfMax)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "module ", n, ": its rotation R has an entry of R - I of magnitude ", largest,
            ", beyond the fp16 range (", kHalfMax, ") in which CPU serving stores R - I; an "
            "orthogonal R has entries in [-1, 1], so this adapter's parameters have diverged"));
      }
    }
    adapter->bytes_ += adapter->blocks_[i].numel() *
                       static_cast<int64_t>(adapter->blocks_[i].element_size());
  }
  return std::shared_ptr<const ServingAdapter>(std::move(adapter));
}

AdapterBatch LlamaModel::MakeAdapterBatch(const std::vector<const ServingAdapter*>& rows) const {
  const std::vector<AdaptedLinear*> linears = AllLinears();
  const size_t num_linears = linears.size();
  AdapterBatch batch;
  batch.rows_ = static_cast<int64_t>(rows.size());
  batch.per_linear_.resize(num_linears);
  // Every group's row index goes up in one upload after the loop (host_upload.h).
  std::vector<AdapterBatch::Group*> groups;
  std::vector<int64_t> all_index;
  for (size_t li = 0; li < num_linears; ++li) {
    // Distinct adapters at this Linear, grouped by block size (one stacked tensor each).
    std::map<int64_t, std::vector<const ServingAdapter*>> by_size;
    for (const ServingAdapter* a : rows) {
      if (a == nullptr) continue;
      TORCH_CHECK(a->num_linears() == num_linears, "adapter was prepared for another model");
      const at::Tensor& blk = a->blocks(li);
      if (!blk.defined()) continue;
      auto& list = by_size[blk.size(1)];
      if (std::find(list.begin(), list.end(), a) == list.end()) list.push_back(a);
    }
    const int64_t d = linears[li]->in_features();
    for (const auto& [b, list] : by_size) {
      std::vector<at::Tensor> stack;
      for (const ServingAdapter* a : list) {
        TORCH_CHECK(a->delta() == list.front()->delta(),
                    "MakeAdapterBatch: adapters prepared in different served forms "
                    "(ServedRotations) cannot share a batch");
        stack.push_back(a->blocks(li).expand({d / b, b, b}));
      }
      std::vector<int64_t> index(rows.size(), -1);
      for (size_t r = 0; r < rows.size(); ++r) {
        auto it = std::find(list.begin(), list.end(), rows[r]);
        if (it != list.end()) index[r] = it - list.begin();
      }
      AdapterBatch::Group g;
      g.rotations = at::stack(stack, 0).contiguous();  // [A, r, b, b]
      g.delta = list.front()->delta();
      all_index.insert(all_index.end(), index.begin(), index.end());
      batch.per_linear_[li].push_back(std::move(g));
    }
  }
  // Pointers into per_linear_ are taken once it has stopped growing.
  for (auto& per : batch.per_linear_) {
    for (AdapterBatch::Group& g : per) groups.push_back(&g);
  }
  if (!groups.empty()) {
    const int64_t G = static_cast<int64_t>(groups.size());
    const at::Tensor index = UploadToDevice(all_index, at::kLong, device())
                                 .view({G, static_cast<int64_t>(rows.size())});
    for (int64_t g = 0; g < G; ++g) groups[g]->row_index = index[g];
  }
  return batch;
}

AdapterBatch AdapterBatch::FromGroups(int64_t rows, std::vector<std::vector<Group>> per_linear) {
  AdapterBatch batch;
  batch.rows_ = rows;
  batch.per_linear_ = std::move(per_linear);
  return batch;
}

int64_t AdapterBatch::bytes() const {
  int64_t n = 0;
  for (const auto& groups : per_linear_) {
    for (const auto& g : groups) n += g.rotations.numel() * static_cast<int64_t>(g.rotations.element_size());
  }
  return n;
}

}  // namespace oft
