// Adapts the model's Tokenizer (server/model/tokenizer.h) to the data pipeline's
// TextEncoder (server/data/batching.h): no special tokens added by Encode; the special
// tokens around a sequence are the tokenizer's post-processor's (Tokenizer::special_prefix(),
// the rule every entry point shares); EOS from the tokenizer (Tokenizer::eos_id()).
// Thread-safe (Tokenizer is immutable). Does not own the tokenizer.
#ifndef OFT_SERVER_TRAIN_TEXT_ENCODER_H_
#define OFT_SERVER_TRAIN_TEXT_ENCODER_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/data/batching.h"
#include "server/model/tokenizer.h"

namespace oft {

class TokenizerTextEncoder : public TextEncoder {
 public:
  // `tokenizer` must outlive this object.
  explicit TokenizerTextEncoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  std::vector<int32_t> Encode(absl::string_view text) const override {
    return tokenizer_.Encode(text, /*add_special_tokens=*/false);
  }
  std::vector<int32_t> special_prefix() const override { return tokenizer_.special_prefix(); }
  std::vector<int32_t> special_suffix() const override { return tokenizer_.special_suffix(); }
  std::optional<int32_t> eos_id() const override { return tokenizer_.eos_id(); }

 private:
  const Tokenizer& tokenizer_;
};

}  // namespace oft

#endif  // OFT_SERVER_TRAIN_TEXT_ENCODER_H_
