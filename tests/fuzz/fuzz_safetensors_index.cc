// model.safetensors.index.json of a sharded checkpoint, next to one small valid shard
// ("a.safetensors" holding tensor "w"): shard names must never escape the directory and
// every tensor the index lists must resolve.
#include <cstdint>
#include <string>

#include "server/model/checkpoint.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void WriteShard(const std::string& dir) {
  // Header {"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} + 8 data bytes.
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string file(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  file += header + std::string(8, '\x01');
  oft::fuzz::WriteFile(dir + "/a.safetensors", reinterpret_cast<const uint8_t*>(file.data()), file.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool shard_written = (WriteShard(oft::fuzz::ScratchDir()), true);
  (void)shard_written;
  const std::string& dir = oft::fuzz::ScratchDir();
  oft::fuzz::WriteFile(dir + "/" + oft::kSafetensorsIndexName, data, size);
  auto ckpt = oft::Checkpoint::Open(dir);
  if (!ckpt.ok()) return 0;
  for (const std::string& name : (*ckpt)->names()) {
    if (!(*ckpt)->Info(name).ok()) std::abort();
  }
  (void)(*ckpt)->DtypeSummary();
  return 0;
}
