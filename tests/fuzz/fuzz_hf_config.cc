// config.json text: parse, and a parsed config must serialise and parse again.
#include <cstdint>
#include <string>

#include "server/model/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = oft::ParseModelConfig(text);
  if (!config.ok()) return 0;
  auto again = oft::ParseModelConfig(oft::ToJson(*config));
  if (!again.ok()) std::abort();  // what we write must read back
  return 0;
}
