// adapter_config.json of a PEFT OFT adapter: the fields PEFT writes, parsed and written.
// LibTorch-free (the parsing half of peft_format.h), so untrusted configs can be validated
// and fuzzed without a model. Pure functions; thread-safe.
#ifndef OFT_SERVER_ARTIFACTS_ADAPTER_CONFIG_H_
#define OFT_SERVER_ARTIFACTS_ADAPTER_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/targeting.h"
#include "server/oft/config.h"

namespace oft {

inline constexpr char kAdapterConfigFile[] = "adapter_config.json";
// Written as peft_version: the first release with today's Cayley-Neumann polynomial.
inline constexpr char kPeftFormatVersion[] = "0.18.0";

struct PeftAdapterConfig {
  OftConfig oft;
  TargetSpec targets;
  std::string base_model_name_or_path;  // may be empty (written as null)
  std::string task_type = "CAUSAL_LM";
  std::string peft_version = kPeftFormatVersion;
  std::vector<std::string> warnings;    // filled by ParseAdapterConfig
};

// adapter_config.json text (indent 2, sorted keys).
std::string AdapterConfigToJson(const PeftAdapterConfig& config);

// Parses adapter_config.json. Errors (INVALID_ARGUMENT, naming the field): not JSON, peft_type
// not "OFT", missing oft_block_size (PEFT requires the key), an invalid OFT config,
// unsupported fields in use (modules_to_save, fan_in_fan_out=true, non-default task types
// are accepted). A PEFT < 0.18 Cayley-Neumann adapter adds a warning (PEFT does the same).
absl::StatusOr<PeftAdapterConfig> ParseAdapterConfig(absl::string_view json,
                                                     absl::string_view source = kAdapterConfigFile);

}  // namespace oft

#endif  // OFT_SERVER_ARTIFACTS_ADAPTER_CONFIG_H_
