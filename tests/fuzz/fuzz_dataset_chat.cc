// A JSONL dataset file: validate, then render every accepted row with every chat template.
#include <cstdint>
#include <string>

#include "server/data/chat_template.h"
#include "server/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  oft::DatasetLimits limits;
  limits.max_rows = 1000;
  auto rows = oft::ParseJsonl(text, limits);
  auto summary = oft::ValidateJsonl(text, limits);
  if (rows.ok() != summary.ok()) std::abort();  // one validation rule for both entry points
  if (!rows.ok()) return 0;
  for (const oft::Example& e : *rows) {
    for (auto kind : oft::AllTemplateKinds()) {
      (void)oft::ValidateChat(kind, e.messages);
      (void)oft::RenderExample(e, kind);
    }
  }
  return 0;
}
