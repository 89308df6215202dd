// A whole safetensors file: every validated header entry must describe bytes inside the
// mapping (checked by reading each tensor's first and last byte under ASan).
#include <cstdint>
#include <string>

#include "server/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = oft::fuzz::ScratchDir() + "/model.safetensors";
  oft::fuzz::WriteFile(path, data, size);
  auto file = oft::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const std::string& name : (*file)->names()) {
    auto info = (*file)->Info(name);
    auto bytes = (*file)->Bytes(name);
    if (!info.ok() || !bytes.ok()) std::abort();  // a listed name must resolve
    if ((*info)->byte_size() > 0) {
      sink = sink + (*bytes)[0] + (*bytes)[(*info)->byte_size() - 1];
    }
  }
  return 0;
}
