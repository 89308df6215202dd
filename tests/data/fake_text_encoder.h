// A byte-level TextEncoder for tests: every byte is its own token (id = byte
// value), except the chat templates' special-token markers, which map to ids
// from 1000 up, as a real tokenizer maps them to their special ids.
#ifndef OFT_TESTS_DATA_FAKE_TEXT_ENCODER_H_
#define OFT_TESTS_DATA_FAKE_TEXT_ENCODER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "server/data/batching.h"

namespace oft::testing {

class FakeByteEncoder : public TextEncoder {
 public:
  static constexpr int32_t kBos = 2000;
  static constexpr int32_t kEos = 2001;

  FakeByteEncoder(std::optional<int32_t> bos = std::nullopt,
                  std::optional<int32_t> eos = std::nullopt)
      : bos_(bos), eos_(eos) {}

  // Markers and their ids: the marker at index i has id 1000 + i.
  static const std::vector<std::string>& Specials() {
    static const std::vector<std::string>* specials = new std::vector<std::string>{
        "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|eot_id|>",        "<|im_start|>",        "<|im_end|>"};
    return *specials;
  }
  static int32_t SpecialId(absl::string_view marker) {
    for (size_t i = 0; i < Specials().size(); ++i) {
      if (Specials()[i] == marker) return 1000 + static_cast<int32_t>(i);
    }
    return -1;
  }

  std::vector<int32_t> Encode(absl::string_view text) const override {
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < text.size()) {
      bool matched = false;
      for (size_t s = 0; s < Specials().size(); ++s) {
        if (absl::StartsWith(text.substr(i), Specials()[s])) {
          ids.push_back(1000 + static_cast<int32_t>(s));
          i += Specials()[s].size();
          matched = true;
          break;
        }
      }
      if (!matched) ids.push_back(static_cast<unsigned char>(text[i++]));
    }
    ++calls_;
    return ids;
  }
  // A tokenizer whose post-processor prepends BOS (Llama's "<s> $A").
  std::vector<int32_t> special_prefix() const override {
    return bos_ ? std::vector<int32_t>{*bos_} : std::vector<int32_t>{};
  }
  std::optional<int32_t> eos_id() const override { return eos_; }

  int calls() const { return calls_; }

 private:
  std::optional<int32_t> bos_;
  std::optional<int32_t> eos_;
  mutable int calls_ = 0;
};

}  // namespace oft::testing

#endif  // OFT_TESTS_DATA_FAKE_TEXT_ENCODER_H_
