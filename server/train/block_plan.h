// The OFT block layout a training run gives each targeted module, worked out from the base
// model's config.json alone (no weights): the adapter's parameter count, the input widths
// the rotations touch, and one warning per input width whose requested r / block size PEFT's
// divisor rule changes (the run would otherwise adjust it without a word).
//
// Used by the job runner (CheckTrainingJob: CreateJob warnings, BLOCK_SIZE_ADJUSTED events)
// and by oft_train (a stderr warning and a warning event line). Pure; thread-safe.
#ifndef OFT_SERVER_TRAIN_BLOCK_PLAN_H_
#define OFT_SERVER_TRAIN_BLOCK_PLAN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/hf_config.h"
#include "server/oft/config.h"

namespace oft {

// Every Linear of the decoder described by `c`, with its input width ("lm_head" included).
std::map<std::string, int64_t> LinearInputs(const ModelConfig& c);

struct BlockPlan {
  int64_t adapter_params = 0;   // packed skew parameters over all targeted modules
  int64_t rotated_inputs = 0;   // sum of in_features over the targeted modules
  std::vector<std::string> warnings;  // one per adjusted input width, naming the modules
};

// `modules`: the targeted module names (keys of `linears`). `field_prefix` is put before the
// option a warning or error names ("adapter_config." for a job spec, "" for oft_train).
// Errors: INVALID_ARGUMENT "not usable for <module>: ..." when a layer admits no layout.
absl::StatusOr<BlockPlan> PlanBlocks(const OftConfig& adapter,
                                     const std::vector<std::string>& modules,
                                     const std::map<std::string, int64_t>& linears,
                                     absl::string_view field_prefix);

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_BLOCK_PLAN_H_
