// tokenizer.json text: load; then encode a fixed sentence and a slice of the input itself,
// and decode the ids back (every id must be in the vocabulary; decoding must not fail).
#include <cstdint>
#include <string>
#include <vector>

#include "server/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto tok = oft::Tokenizer::FromJson(text);
  if (!tok.ok()) return 0;
  const std::string samples[] = {"Hello, world! 123 héllo\n  tabs\tand ünïcode 😀",
                                 text.substr(0, 256)};
  for (const std::string& s : samples) {
    for (bool special : {false, true}) {
      std::vector<int32_t> ids = (*tok)->Encode(s, special);
      for (int32_t id : ids) {
        if (id < 0 || id >= (*tok)->vocab_size()) std::abort();
      }
      (void)(*tok)->Decode(ids, /*skip_special_tokens=*/false);
      (void)(*tok)->Decode(ids, /*skip_special_tokens=*/true);
    }
  }
  return 0;
}
