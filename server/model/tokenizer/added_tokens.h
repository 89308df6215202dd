// Added tokens of tokenizer.json (internal to oft_tokenizer): their fields, and
// leftmost-longest matching of their contents over a byte trie (AddedVocabulary::find_matches
// in `tokenizers`), with single_word, lstrip and rstrip.
//
// Thread safety: a matcher is built once, then Split may run concurrently.
#ifndef OFT_SERVER_MODEL_TOKENIZER_ADDED_TOKENS_H_
#define OFT_SERVER_MODEL_TOKENIZER_ADDED_TOKENS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/tokenizer/json_fields.h"

namespace oft::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
  std::string decode_text;  // What Decode feeds the decoder: the normalized content if normalized.
};

// One entry of `added_tokens` (at JSON `path`); `normalized` defaults to !special and
// decode_text is left empty (the pipeline fills it).
// Errors: INVALID_ARGUMENT for a missing id or content, mistyped flags or content that is
// not valid UTF-8, naming the path.
absl::StatusOr<std::unique_ptr<AddedToken>> ParseAddedToken(const Json& j, const std::string& path);

// A run of the input: [start, end) is text for the model (id -1) or one added token.
struct Segment {
  size_t start;
  size_t end;
  int32_t id;  // The added token's id, or -1 for text.
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher();

  // Registers `token` under `pattern` (its content, or its normalized content). An empty
  // pattern is ignored; for a repeated pattern the first token wins. `token` must outlive
  // the matcher.
  void Add(const std::string& pattern, const AddedToken* token);

  // Splits `s` into text and added-token segments that cover it in order. Matching is
  // leftmost-longest; a single_word token only matches between non-word characters; lstrip /
  // rstrip extend the token's segment over neighbouring whitespace.
  std::vector<Segment> Split(absl::string_view s) const;

 private:
  struct Node {
    std::map<unsigned char, int32_t> next;
    const AddedToken* token = nullptr;
  };

  const AddedToken* FindFrom(absl::string_view s, size_t from, size_t* start, size_t* stop) const;

  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_;
  bool empty_ = true;
};

}  // namespace oft::tokenizer

#endif  // OFT_SERVER_MODEL_TOKENIZER_ADDED_TOKENS_H_
