// Results of a generation request, shared by the engine and the LibTorch-free facade.
#ifndef OFT_SERVER_SERVING_GENERATION_TYPES_H_
#define OFT_SERVER_SERVING_GENERATION_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace oft {

enum class FinishReason { kEos, kLength, kStop, kContext };

// Tokens produced since the previous chunk.
struct GenerationChunk {
  std::vector<int32_t> token_ids;
  std::string text_delta;  // UTF-8; complete characters only; never part of a stop string
};

struct GenerationOutcome {
  absl::Status status;              // OK, CANCELLED, UNAVAILABLE (engine stopped), INTERNAL
  FinishReason finish_reason = FinishReason::kLength;
  std::vector<int32_t> tokens;      // every generated id (EOS included)
  std::string text;                 // decoded, cut before a stop string
  int64_t prompt_tokens = 0;
  double time_to_first_token_seconds = 0;
};

}  // namespace oft

#endif  // OFT_SERVER_SERVING_GENERATION_TYPES_H_
