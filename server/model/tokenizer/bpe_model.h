// The BPE model of tokenizer.json (internal to oft_tokenizer): vocab, merges (as "a b"
// strings or ["a", "b"] pairs), unk_token, fuse_unk, byte_fallback, ignore_merges,
// continuing_subword_prefix and end_of_word_suffix. Produces the same ids as `tokenizers`
// BPE without dropout.
//
// Thread safety: immutable after Parse; const methods may run concurrently.
#ifndef OFT_SERVER_MODEL_TOKENIZER_BPE_MODEL_H_
#define OFT_SERVER_MODEL_TOKENIZER_BPE_MODEL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/tokenizer/json_fields.h"

namespace oft::tokenizer {

class BpeModel {
 public:
  // Builds the model from the `model` object `j` (at JSON `path`).
  // Errors: INVALID_ARGUMENT for a missing or mistyped vocab / merges, a merge whose parts or
  // result are not in the vocab, an unk_token not in the vocab, naming the path
  // (`model.merges[12]`); UNIMPLEMENTED for a non-zero dropout.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Parse(const Json& j, const std::string& path);

  // Appends the ids of one pre-tokenized piece (valid UTF-8).
  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  // The token of `id`, or nullptr; valid as long as the model.
  const std::string* IdToToken(int32_t id) const {
    auto it = vocab_r_.find(id);
    return it == vocab_r_.end() ? nullptr : &it->second;
  }
  // The largest id in the vocab (-1 when it is empty).
  int32_t max_id() const { return max_id_; }

 private:
  struct MergeInfo {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const MergeInfo* FindMerge(int32_t a, int32_t b) const {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<int32_t, std::string> vocab_r_;
  absl::flat_hash_map<uint64_t, MergeInfo> merges_;
  std::optional<int32_t> unk_id_;
  std::optional<std::string> continuing_subword_prefix_;
  std::optional<std::string> end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_;  // Id of "<0xXX>", or -1.
  int32_t max_id_ = -1;
};

}  // namespace oft::tokenizer

#endif  // OFT_SERVER_MODEL_TOKENIZER_BPE_MODEL_H_
