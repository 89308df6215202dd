#include "server/train/block_plan.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace oft {
namespace {

// The last component of a module name ("model.layers.3.self_attn.q_proj" -> "q_proj").
std::string ShortName(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

}  // namespace

std::map<std::string, int64_t> LinearInputs(const ModelConfig& c) {
  std::map<std::string, int64_t> out;
  const int64_t q_out = c.num_attention_heads * c.head_dim;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    for (const char* m : {"q_proj", "k_proj", "v_proj"}) out[p + "self_attn." + m] = c.hidden_size;
    out[p + "self_attn.o_proj"] = q_out;
    out[p + "mlp.gate_proj"] = c.hidden_size;
    out[p + "mlp.up_proj"] = c.hidden_size;
    out[p + "mlp.down_proj"] = c.intermediate_size;
  }
  out["lm_head"] = c.hidden_size;
  return out;
}

absl::StatusOr<BlockPlan> PlanBlocks(const OftConfig& adapter,
                                     const std::vector<std::string>& modules,
                                     const std::map<std::string, int64_t>& linears,
                                     absl::string_view field_prefix) {
  BlockPlan plan;
  // Adjusted layouts by input width: the layout and the short names of the modules.
  std::map<int64_t, std::pair<OftBlockLayout, std::vector<std::string>>> adjusted;
  for (const std::string& name : modules) {
    auto it = linears.find(name);
    if (it == linears.end()) {
      return absl::InvalidArgumentError(absl::StrCat("no Linear named ", name, " in the model"));
    }
    const int64_t in = it->second;
    absl::StatusOr<OftBlockLayout> layout = ResolveBlocks(adapter, in);
    if (!layout.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("not usable for ", name, ": ", layout.status().message()));
    }
    plan.adapter_params += layout->param_rows * layout->packed_size;
    plan.rotated_inputs += in;
    if (layout->adjusted) {
      auto& [l, names] = adjusted[in];
      l = *layout;
      const std::string short_name = ShortName(name);
      if (std::find(names.begin(), names.end(), short_name) == names.end()) {
        names.push_back(short_name);
      }
    }
  }
  for (const auto& [in, entry] : adjusted) {
    const auto& [l, names] = entry;
    plan.warnings.push_back(
        adapter.r != 0
            ? absl::StrCat(field_prefix, "r ", adapter.r, " does not divide in_features ", in, " (",
                           absl::StrJoin(names, ", "), "); using r = ", l.num_blocks,
                           " (block size ", l.block_size, ") as PEFT does")
            : absl::StrCat(field_prefix, "oft_block_size ", adapter.oft_block_size,
                           " does not divide in_features ", in, " (", absl::StrJoin(names, ", "),
                           "); using block size ", l.block_size, " as PEFT does"));
  }
  return plan;
}

}  // namespace oft
