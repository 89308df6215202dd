// Pre-tokenizers of tokenizer.json (internal to oft_tokenizer): Sequence, ByteLevel, Split,
// Metaspace. Also the two conventions the ByteLevel and Metaspace decoders share with them:
// the GPT-2 byte table and Metaspace's prepend scheme.
//
// Thread safety: immutable after parsing; PreTokenize may run concurrently.
#ifndef OFT_SERVER_MODEL_TOKENIZER_PRE_TOKENIZERS_H_
#define OFT_SERVER_MODEL_TOKENIZER_PRE_TOKENIZERS_H_

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/tokenizer/json_fields.h"
#include "server/model/tokenizer/regex.h"

namespace oft::tokenizer {

// One piece of text on its way to the model.
struct Piece {
  std::string text;
  bool at_origin;  // Starts at offset 0 of the original input (Metaspace prepend_scheme first).
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Turns `pieces` into a finer list; empty pieces are dropped.
  virtual void PreTokenize(std::vector<Piece>* pieces) const = 0;
};

// Builds the pre-tokenizer described by `j` (at JSON `path`).
// Errors: INVALID_ARGUMENT for missing or mistyped fields and bad regexes, naming the path;
// UNIMPLEMENTED for an unsupported type.
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& j,
                                                                const std::string& path);

// How a delimiter match is kept when a piece is split (NormalizedString::split).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits `piece` at `matches` (sorted, non-overlapping) with `behavior`; `invert` swaps
// matches and gaps first. Appends the non-empty results to `out`.
void SplitPiece(const Piece& piece, const std::vector<Match>& matches, SplitBehavior behavior,
                bool invert, std::vector<Piece>* out);

// The GPT-2 byte-to-unicode table: printable bytes map to themselves, the others to U+0100
// onwards, so that every byte has a visible, non-space character (UTF-8 encoded).
const std::array<std::string, 256>& ByteTable();

// Metaspace's `prepend_scheme` (with the legacy `add_prefix_space` folded in).
enum class PrependScheme { kFirst, kNever, kAlways };
absl::StatusOr<PrependScheme> ParsePrependScheme(const Json& j, const std::string& path);

}  // namespace oft::tokenizer

#endif  // OFT_SERVER_MODEL_TOKENIZER_PRE_TOKENIZERS_H_
