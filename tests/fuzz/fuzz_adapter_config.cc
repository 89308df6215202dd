// adapter_config.json text (what a downloaded or uploaded adapter carries): parse; a parsed
// config must write and parse again to the same OFT settings.
#include <cstdint>
#include <string>

#include "server/artifacts/adapter_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = oft::ParseAdapterConfig(text);
  if (!config.ok()) return 0;
  auto again = oft::ParseAdapterConfig(oft::AdapterConfigToJson(*config));
  if (!again.ok()) std::abort();  // what we write must read back
  if (again->oft.oft_block_size != config->oft.oft_block_size || again->oft.r != config->oft.r ||
      again->oft.use_cayley_neumann != config->oft.use_cayley_neumann ||
      again->targets.target_modules != config->targets.target_modules ||
      again->targets.target_regex != config->targets.target_regex) {
    std::abort();
  }
  return 0;
}
