// OFT adapters in Hugging Face PEFT's on-disk format (PEFT >= 0.18; docs/method.md §7).
//
//   <dir>/adapter_config.json        every field PEFT writes for OFT, sorted keys
//   <dir>/adapter_model.safetensors  "base_model.model.<module>.oft_R.weight" -> fp32
//                                    [rows, b(b-1)/2], metadata {"format": "pt"}
//
// SavePeftAdapter writes what PeftModel.from_pretrained loads onto the transformers model;
// LoadPeftAdapter reads adapters trained by PEFT (or by us) onto a LlamaModel. Files are
// written atomically. Functions are thread-compatible with respect to the model.
#ifndef OFT_SERVER_ARTIFACTS_PEFT_FORMAT_H_
#define OFT_SERVER_ARTIFACTS_PEFT_FORMAT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/llama.h"
#include "server/artifacts/adapter_config.h"
#include "server/model/targeting.h"
#include "server/oft/config.h"

namespace oft {

inline constexpr char kAdapterWeightsFile[] = "adapter_model.safetensors";

// The target_modules list to write for the modules `adapter` is attached to: short module
// names (e.g. ["q_proj", "v_proj"]) when they select exactly the same modules under the
// spec's layers_to_transform / exclude rules, otherwise the full module names.
std::vector<std::string> ExplicitTargetModules(const LlamaModel& model, const std::string& adapter,
                                               const TargetSpec& spec);

// Writes `adapter` of `model` into `dir` (created if missing). The config written is the
// adapter's config with explicit target_modules.
absl::Status SavePeftAdapter(const LlamaModel& model, const std::string& adapter,
                             const TargetSpec& spec, const std::string& base_model_name,
                             const std::string& dir);

// The files of a PEFT OFT adapter directory, validated but not yet attached to a model.
struct PeftAdapterFiles {
  PeftAdapterConfig config;
  std::map<std::string, at::Tensor> packed;  // module name -> oft_R.weight as stored (CPU)
};

// Reads and validates `dir`'s adapter_config.json and adapter_model.safetensors. Every tensor
// must be named base_model.model.<module>.oft_R.weight, be floating point (F32, F16, BF16 or
// F64) and hold only finite values. Errors: NOT_FOUND (files), INVALID_ARGUMENT naming the
// file and the tensor (old `oft_r` format, unexpected name, integer/bool dtype, NaN or Inf).
absl::StatusOr<PeftAdapterFiles> ReadPeftAdapterFiles(const std::string& dir);

// Reads a PEFT OFT adapter directory (ReadPeftAdapterFiles) and attaches it to `model` as `adapter`, with the saved
// values. Errors: NOT_FOUND (files), INVALID_ARGUMENT (old `oft_r` format, shape mismatch,
// a tensor for a module the config does not target or vice versa — each named),
// ALREADY_EXISTS. On error the model is left without the adapter.
absl::StatusOr<PeftAdapterConfig> LoadPeftAdapter(LlamaModel& model, const std::string& dir,
                                                  const std::string& adapter);

// A full HF model directory with `adapter` merged into the base weights (W R^T computed in
// fp32, stored in `dtype`): config.json + model.safetensors, plus tokenizer files copied
// from `tokenizer_dir` when given. transformers loads it without PEFT.
absl::Status ExportMergedModel(const LlamaModel& model, const std::string& adapter,
                               const std::string& out_dir, at::ScalarType dtype,
                               const std::string& tokenizer_dir = "");

}  // namespace oft

#endif  // OFT_SERVER_ARTIFACTS_PEFT_FORMAT_H_
