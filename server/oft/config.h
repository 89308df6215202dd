// OFTv2 adapter configuration: every field of PEFT's OFTConfig that changes the math.
//
// Field names and defaults follow PEFT (>= 0.18). Exactly one of `r` (number of
// blocks) and `oft_block_size` must be non-zero. When the chosen value does not
// divide a layer's input width, ResolveBlocks() adjusts it to a nearby divisor with
// PEFT's rule, so adapters we write load in PEFT with identical shapes.
#ifndef OFT_SERVER_OFT_CONFIG_H_
#define OFT_SERVER_OFT_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace oft {

enum class OftBias { kNone, kAll, kOftOnly };

struct OftConfig {
  int64_t r = 0;                        // number of blocks per layer (0: derive from block size)
  int64_t oft_block_size = 32;          // block size b (0: derive from r)
  bool use_cayley_neumann = true;       // Cayley-Neumann series (true) or exact Cayley (false)
  int64_t num_cayley_neumann_terms = 5; // PEFT's k; polynomial per PEFT >= 0.18
  bool block_share = false;             // one block shared by all r positions
  bool coft = false;                    // constrained OFT: project each block's Q into a ball
  double eps = 6e-5;                    // COFT radius (before the 1/sqrt(rows) scaling)
  double module_dropout = 0.0;          // fraction of blocks replaced by identity in training
  OftBias bias = OftBias::kNone;        // which base biases are trainable and saved
  bool init_weights = true;             // true: zeros (R = I); false: N(0, 0.1), for tests

  // Checks every field; the error names the field and its allowed range.
  absl::Status Validate() const;
};

// Upper bounds enforced by Validate().
inline constexpr int64_t kMaxBlockSize = 1024;
inline constexpr int64_t kMaxNeumannTerms = 32;

// Block layout of one adapted layer, after PEFT's divisor adjustment.
struct OftBlockLayout {
  int64_t in_features = 0;
  int64_t num_blocks = 0;    // r: blocks along the input dimension
  int64_t block_size = 0;    // b, with num_blocks * block_size == in_features
  int64_t param_rows = 0;    // rows of the packed parameter: 1 with block_share, else r
  int64_t packed_size = 0;   // b(b-1)/2 entries per row
  bool adjusted = false;     // the requested r / block size was changed to a divisor
};

// PEFT's `adjust_oft_parameters`: the divisor of `in_features` nearest to `requested`
// (the lower one on ties); `in_features` itself when requested >= in_features.
int64_t AdjustToDivisor(int64_t in_features, int64_t requested);

// The layout of a layer with `in_features` inputs under `config` (which must be valid).
absl::StatusOr<OftBlockLayout> ResolveBlocks(const OftConfig& config, int64_t in_features);

// "none" / "all" / "oft_only" <-> OftBias.
absl::StatusOr<OftBias> ParseOftBias(const std::string& s);
const char* OftBiasName(OftBias b);

}  // namespace oft

#endif  // OFT_SERVER_OFT_CONFIG_H_
