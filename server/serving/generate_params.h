// What a generation request asks for, independent of the API it came through (gRPC
// GenerateRequest, the OpenAI HTTP API), and the one validation of its limits. LibTorch-free.
#ifndef OFT_SERVER_SERVING_GENERATE_PARAMS_H_
#define OFT_SERVER_SERVING_GENERATE_PARAMS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/data/dataset.h"
#include "server/serving/adapter_registry.h"

namespace oft {

// A GenerateRequest, proto-free.
struct GenerateParams {
  std::string base_model;              // "" = the adapter's base, else the default base
  std::optional<AdapterId> adapter;    // tenant ignored (the caller's); version 0 = latest
  std::optional<std::string> alias;    // instead of adapter
  std::optional<std::string> text;     // exactly one of text / chat
  std::optional<std::vector<Message>> chat;
  bool enable_thinking = true;         // chat with the qwen3 template: false = no thinking block
  int32_t max_tokens = 0;              // 0 = 256; else [1, 4096]
  std::optional<double> temperature;   // [0, 2]; unset = 1.0
  std::optional<double> top_p;         // (0, 1]; unset = 1.0
  std::optional<int32_t> top_k;        // >= 0; unset = 0
  std::vector<std::string> stop;       // <= 8 strings of 1-64 bytes
  std::optional<uint64_t> seed;        // unset = random
};

// Validation of a GenerateParams against the limits above (no model needed); the error
// names the field, e.g. "max_tokens must be in [1, 4096], got 5000".
absl::Status ValidateGenerateParams(const GenerateParams& params);

}  // namespace oft

#endif  // OFT_SERVER_SERVING_GENERATE_PARAMS_H_
