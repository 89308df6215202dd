// PEFT's rules for which modules receive an adapter (tuners_utils.check_target_module_exists).
//
//  - target_modules as a list: a module matches when its full name equals an entry or ends
//    with "." + entry. As a single string: a regex (RE2 syntax, linear time; see
//    server/common/client_regex.h) that must match the full name.
//  - "all-linear": every Linear except the output layer (lm_head).
//  - exclude_modules: the same matching rules; an excluded module never matches.
//  - layers_to_transform: only modules whose layer index (the number after a layers pattern
//    such as "layers", "h", "block", "blocks", "layer") is listed.
// Pure functions; thread-safe.
#ifndef OFT_SERVER_MODEL_TARGETING_H_
#define OFT_SERVER_MODEL_TARGETING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace oft {

struct TargetSpec {
  std::vector<std::string> target_modules;   // names (suffix match); {"all-linear"} allowed
  std::optional<std::string> target_regex;   // used instead of the list when set
  std::vector<std::string> exclude_modules;  // names (suffix match)
  std::optional<std::string> exclude_regex;
  std::vector<int64_t> layers_to_transform;  // empty: all layers
  std::optional<std::string> layers_pattern; // e.g. "layers"; default: PEFT's common patterns

  bool all_linear() const {
    return target_modules.size() == 1 && target_modules[0] == "all-linear";
  }
};

// Validates the spec (regexes compile, lists non-empty when required). The error names
// the field.
absl::Status ValidateTargetSpec(const TargetSpec& spec);

// Whether the Linear module `name` (e.g. "model.layers.3.self_attn.q_proj") is targeted.
// `is_output_layer` marks lm_head, which "all-linear" skips.
bool IsTargeted(const TargetSpec& spec, const std::string& name, bool is_output_layer);

// The layer index in `name` per `layers_pattern`, if any.
std::optional<int64_t> LayerIndex(const std::string& name,
                                  const std::optional<std::string>& layers_pattern);

// Selects the targeted names from `linear_names` (with output layer `output_name`); an
// empty result is NOT_FOUND naming the targets, as PEFT raises when nothing matches.
absl::StatusOr<std::vector<std::string>> SelectTargets(const TargetSpec& spec,
                                                       const std::vector<std::string>& linear_names,
                                                       const std::string& output_name);

}  // namespace oft

#endif  // OFT_SERVER_MODEL_TARGETING_H_
