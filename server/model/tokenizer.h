// Tokenizer: loads a Hugging Face `tokenizer.json` and encodes text to token ids and back,
// producing the same ids and strings as the Hugging Face `tokenizers` library for the
// supported subset of its components.
//
// Supported components (anything else is rejected at load time, see FromJson):
//   model:          BPE (vocab; merges as "a b" strings or ["a", "b"] pairs; unk_token,
//                   fuse_unk, byte_fallback, ignore_merges, continuing_subword_prefix,
//                   end_of_word_suffix; dropout must be null or 0).
//   normalizer:     null, Sequence, Prepend, Replace; NFC, NFD, NFKC, NFKD only when the
//                   build found ICU (otherwise they are rejected with UNIMPLEMENTED).
//   pre_tokenizer:  null, Sequence, ByteLevel (add_prefix_space, use_regex), Split (String or
//                   Regex pattern, every behavior, invert), Metaspace (replacement,
//                   prepend_scheme or legacy add_prefix_space, split).
//   post_processor: null, TemplateProcessing (single sequence), ByteLevel, Sequence,
//                   RobertaProcessing, BertProcessing.
//   decoder:        null, Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace.
//   added_tokens:   special and normal, with lstrip, rstrip, single_word and normalized.
// Fields that only affect offsets, batching or training (trim_offsets, truncation, padding,
// cache_capacity) are ignored.
//
// The components live in server/model/tokenizer/, one file per HF component family, each
// with an internal header (namespace oft::tokenizer) and its own unit tests.
//
// Thread safety: a Tokenizer is immutable after construction; Encode, Decode and all other
// const methods may be called concurrently from any number of threads.
#ifndef OFT_SERVER_MODEL_TOKENIZER_H_
#define OFT_SERVER_MODEL_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace oft {

namespace tokenizer {
class Pipeline;  // Normalizer, pre-tokenizer, model, post-processor and decoder.
}  // namespace tokenizer

class Tokenizer {
 public:
  // Reads `path` (a tokenizer.json). When a `tokenizer_config.json` sits in the same
  // directory, its `bos_token` / `eos_token` entries decide bos_id() / eos_id().
  // Errors: NOT_FOUND when `path` cannot be read; otherwise as FromJson.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);

  // Builds a tokenizer from the text of a tokenizer.json. `tokenizer_config_json` is the
  // optional text of a transformers tokenizer_config.json (empty: none).
  // Errors: INVALID_ARGUMENT for malformed JSON (with the parse position), missing or
  // mistyped fields and inconsistent vocab/merges, naming the JSON path (for example
  // `model.merges[12]`); UNIMPLEMENTED for a component type this class does not support,
  // naming the type and its JSON path.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      const std::string& json_text, const std::string& tokenizer_config_json = "");

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  ~Tokenizer();

  // Encodes one sequence. Added tokens (special or not) are matched first; the rest goes
  // through normalizer, pre-tokenizer and model. With `add_special_tokens`, the
  // post-processor's special tokens (for example BOS) are added. Invalid UTF-8 in `text` is
  // replaced by U+FFFD before encoding.
  std::vector<int32_t> Encode(absl::string_view text, bool add_special_tokens) const;

  // Decodes ids back to text through the decoder (tokens joined by spaces when the
  // tokenizer.json has none). Ids outside the vocabulary are skipped, as in `tokenizers`.
  // With `skip_special_tokens`, added tokens marked special are dropped.
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  // Id of `token` (added tokens first, then the model vocabulary), if any.
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // Token string of `id` (added tokens first, then the model vocabulary), if any.
  std::optional<std::string> IdToToken(int32_t id) const;

  // One past the largest id in the model vocabulary and the added tokens: the number of
  // embedding rows a model needs for this tokenizer.
  int32_t vocab_size() const { return vocab_size_; }

  // Beginning / end of sequence ids: from tokenizer_config.json when given, else from the
  // TemplateProcessing post-processor (the special token before / after $A), else from
  // well-known token names (<s>, <|begin_of_text|>, </s>, <|end_of_text|>, <|endoftext|>).
  // These name the tokens; they say nothing about whether a sequence gets them: that is
  // special_prefix() / special_suffix().
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }

  // The one rule for special tokens, equal to transformers 5's
  // AutoTokenizer.from_pretrained(dir)(text).input_ids: the ids that
  // Encode(text, /*add_special_tokens=*/true) puts before / after the text's own ids, i.e.
  // what tokenizer.json's post_processor adds to a single sequence (empty for none, ByteLevel,
  // or a template of $A alone). tokenizer_config.json's add_bos_token / add_eos_token do not
  // change it: transformers 5 drops them whenever a tokenizer.json exists
  // (PreTrainedTokenizerBase._from_pretrained), so the file's post-processor decides.
  const std::vector<int32_t>& special_prefix() const { return special_prefix_; }
  const std::vector<int32_t>& special_suffix() const { return special_suffix_; }

  // True when `id` is an added token marked special.
  bool IsSpecial(int32_t id) const { return special_ids_.contains(id); }

 private:
  explicit Tokenizer(std::unique_ptr<tokenizer::Pipeline> pipeline);

  std::unique_ptr<tokenizer::Pipeline> pipeline_;
  absl::flat_hash_set<int32_t> special_ids_;
  int32_t vocab_size_ = 0;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  std::vector<int32_t> special_prefix_;
  std::vector<int32_t> special_suffix_;
};

}  // namespace oft

#endif  // OFT_SERVER_MODEL_TOKENIZER_H_
