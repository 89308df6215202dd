#include "server/oft/config.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace oft {

absl::Status OftConfig::Validate() const {
  if (r < 0) return absl::InvalidArgumentError(absl::StrCat("r must be >= 0, got ", r));
  if (oft_block_size < 0 || oft_block_size > kMaxBlockSize) {
    return absl::InvalidArgumentError(absl::StrCat("oft_block_size must be in [0, ", kMaxBlockSize,
                                                   "], got ", oft_block_size));
  }
  if ((r == 0) == (oft_block_size == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "exactly one of r and oft_block_size must be non-zero, got r=", r,
        " oft_block_size=", oft_block_size));
  }
  if (oft_block_size == 1) {
    return absl::InvalidArgumentError(
        "oft_block_size must be >= 2 (a 1x1 block has no rotation parameters), got 1");
  }
  if (num_cayley_neumann_terms < 1 || num_cayley_neumann_terms > kMaxNeumannTerms) {
    return absl::InvalidArgumentError(absl::StrCat("num_cayley_neumann_terms must be in [1, ",
                                                   kMaxNeumannTerms, "], got ",
                                                   num_cayley_neumann_terms));
  }
  if (!std::isfinite(eps) || eps <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("eps must be a finite number > 0, got ", eps));
  }
  if (!(module_dropout >= 0.0 && module_dropout < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("module_dropout must be in [0, 1), got ", module_dropout));
  }
  return absl::OkStatus();
}

int64_t AdjustToDivisor(int64_t in_features, int64_t requested) {
  if (requested >= in_features) return in_features;
  int64_t higher = requested;
  while (higher <= in_features && in_features % higher != 0) ++higher;
  int64_t lower = requested;
  while (lower > 1 && in_features % lower != 0) --lower;
  return (requested - lower) <= (higher - requested) ? lower : higher;
}

absl::StatusOr<OftBlockLayout> ResolveBlocks(const OftConfig& config, int64_t in_features) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (in_features < 1) {
    return absl::InvalidArgumentError(absl::StrCat("in_features must be >= 1, got ", in_features));
  }
  OftBlockLayout l;
  l.in_features = in_features;
  if (config.r == 0) {
    int64_t b = config.oft_block_size;
    if (in_features % b != 0 || b > in_features) {
      b = AdjustToDivisor(in_features, b);
      l.adjusted = true;
    }
    l.block_size = b;
    l.num_blocks = in_features / b;
  } else {
    int64_t r = config.r;
    if (in_features % r != 0 || r > in_features) {
      r = AdjustToDivisor(in_features, r);
      l.adjusted = true;
    }
    l.num_blocks = r;
    l.block_size = in_features / r;
  }
  if (l.block_size < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block size for in_features=", in_features, " resolves to ", l.block_size,
        "; a rotation block needs at least 2 features (lower r or raise oft_block_size)"));
  }
  if (l.block_size > kMaxBlockSize) {
    return absl::InvalidArgumentError(absl::StrCat("block size for in_features=", in_features,
                                                   " resolves to ", l.block_size, ", above the limit ",
                                                   kMaxBlockSize, " (raise r)"));
  }
  l.param_rows = config.block_share ? 1 : l.num_blocks;
  l.packed_size = l.block_size * (l.block_size - 1) / 2;
  return l;
}

absl::StatusOr<OftBias> ParseOftBias(const std::string& s) {
  if (s == "none") return OftBias::kNone;
  if (s == "all") return OftBias::kAll;
  if (s == "oft_only") return OftBias::kOftOnly;
  return absl::InvalidArgumentError(
      absl::StrCat("bias must be one of \"none\", \"all\", \"oft_only\", got \"", s, "\""));
}

const char* OftBiasName(OftBias b) {
  switch (b) {
    case OftBias::kNone: return "none";
    case OftBias::kAll: return "all";
    case OftBias::kOftOnly: return "oft_only";
  }
  return "none";
}

}  // namespace oft
