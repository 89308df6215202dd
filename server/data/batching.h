// From validated rows to training batches: tokenisation with loss masks,
// truncation, optional packing, padding, and a deterministic shuffling batch
// iterator whose position can be saved and restored exactly.
//
// Conventions used by every type below:
//   * `ids`, `loss_mask`, `position_ids` and `document_ids` of one sequence have
//     the same length and are aligned: `loss_mask[i] == 1` means token i is a
//     target, i.e. the loss is taken on predicting ids[i] from the tokens
//     before it in the same document. The trainer shifts (logits at i-1 score
//     ids[i]); no label shifting happens here.
//   * The first token of every document has `loss_mask == 0` (nothing in its
//     document precedes it), so a packed sequence never trains one document on
//     another's context.
//   * `document_ids` number the documents of one sequence 0, 1, 2, ...; padding
//     is -1. Attention must be restricted to equal document ids (block-diagonal
//     causal mask). `position_ids` restart at 0 with every document; padding
//     has position 0.
#ifndef OFT_SERVER_DATA_BATCHING_H_
#define OFT_SERVER_DATA_BATCHING_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/data/chat_template.h"
#include "server/data/dataset.h"

namespace oft {

// The tokenizer as the data pipeline sees it. The model's tokenizer is adapted
// to this interface by its owner. Implementations must be safe to call from
// several threads at once if callers do so (the functions here call it from
// the calling thread only).
class TextEncoder {
 public:
  virtual ~TextEncoder();

  // Token ids of `text`, with no BOS/EOS added. Special-token text that a chat
  // template emits ("<|begin_of_text|>", "<|eot_id|>", "<|im_start|>", ...) must
  // map to the special token's id, as Hugging Face tokenizers do by default.
  virtual std::vector<int32_t> Encode(absl::string_view text) const = 0;

  // Ids the tokenizer puts before / after one encoded sequence when asked for
  // special tokens (transformers' `tokenizer(text).input_ids`; e.g. {BOS} / {} for
  // Llama and Gemma, {} / {} for Qwen). Text and prompt/completion rows get them;
  // chat rows do not (apply_chat_template tokenizes with add_special_tokens=False:
  // a template that wants BOS writes it in its text). Default: none.
  virtual std::vector<int32_t> special_prefix() const;
  virtual std::vector<int32_t> special_suffix() const;

  // Id appended (trained) to text and prompt/completion examples; nullopt for none.
  virtual std::optional<int32_t> eos_id() const;
};

// One example as token ids with its loss mask (see the conventions above).
struct TokenizedExample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> loss_mask;  // 0 or 1 per id
  int64_t line = 0;                // the row's line in the dataset file
  bool truncated = false;          // tokens past max_seq_len were dropped
};

struct TokenizeOptions {
  int64_t max_seq_len = 2048;  // longest example in tokens; longer ones keep their start
  ChatTemplateKind chat_template = ChatTemplateKind::kChatml;  // renders chat rows
  int max_errors = 20;                                         // errors spelled out in one status
};

// Counts over a tokenised dataset, for the job's validation report.
struct TokenizeStats {
  int64_t examples = 0;          // examples tokenised
  int64_t truncated = 0;         // examples cut to max_seq_len
  int64_t tokens = 0;            // tokens after truncation
  int64_t trainable_tokens = 0;  // tokens with loss_mask 1
};

// Renders `example` (RenderExample), encodes every segment separately and
// concatenates. Text and prompt/completion rows: the encoder's special_prefix()
// first, its special_suffix() (trained) after the text, then EOS (trained) unless
// the ids already end with it. Chat rows: the template's text only. Tokens of
// trained segments get loss_mask 1 (except a document's first token). The
// result is cut to `options.max_seq_len` tokens, keeping the start.
// Errors: INVALID_ARGUMENT "line N: ..." for a chat row the template refuses
// (ValidateChat, e.g. gemma's alternating turns), and when no trainable token is left
// (typically a prompt that fills max_seq_len): such a row would silently
// train nothing, so it fails validation rather than being dropped.
// INVALID_ARGUMENT also when options.max_seq_len < 2.
absl::StatusOr<TokenizedExample> TokenizeExample(const Example& example, const TextEncoder& encoder,
                                                 const TokenizeOptions& options);

// TokenizeExample over a whole dataset. On failure the status lists the first
// `options.max_errors` errors, one per line of the message. `stats` may be null.
absl::StatusOr<std::vector<TokenizedExample>> TokenizeExamples(absl::Span<const Example> examples,
                                                               const TextEncoder& encoder,
                                                               const TokenizeOptions& options,
                                                               TokenizeStats* stats = nullptr);

// A training row before padding: one example, or several packed together.
struct Sequence {
  std::vector<int32_t> ids;
  std::vector<uint8_t> loss_mask;
  std::vector<int32_t> position_ids;  // restart at 0 with every document
  std::vector<int32_t> document_ids;  // 0, 1, ... in order of appearance
  std::vector<int64_t> lines;         // dataset line of each document, in order
};

// One example as a one-document sequence.
Sequence ToSequence(const TokenizedExample& example);

// One sequence per example, in order.
std::vector<Sequence> ToSequences(absl::Span<const TokenizedExample> examples);

// Packs examples into sequences of at most `max_seq_len` tokens (best-fit
// decreasing by length: few, well-filled sequences). Deterministic: the same
// input gives the same output. Within a sequence, documents keep dataset
// order; sequences are ordered by their first example. Every example appears
// exactly once and is never split.
// INVALID_ARGUMENT when an example is longer than `max_seq_len` or when
// max_seq_len < 1.
absl::StatusOr<std::vector<Sequence>> PackExamples(absl::Span<const TokenizedExample> examples,
                                                   int64_t max_seq_len);

// Where a BatchIterator stands. Save all three fields with a checkpoint and
// pass them to Seek() to continue exactly where training stopped.
struct BatchCursor {
  int64_t epoch = 0;         // epochs completed
  int64_t index = 0;         // sequences of this epoch already handed out
  uint64_t fingerprint = 0;  // identifies the sequences and ordering options

  bool operator==(const BatchCursor& other) const = default;
};

struct BatchIteratorOptions {
  int64_t batch_size = 8;          // sequences per batch
  uint64_t seed = 0;               // shuffle seed; the order of epoch e depends on (seed, e) only
  bool shuffle = true;             // false: dataset order every epoch
  bool drop_last = true;           // skip an epoch's final batch when it is short
  int32_t pad_id = 0;              // id written into padding positions
  int64_t fixed_seq_len = 0;       // > 0: pad every batch to this length; 0: to its longest row
  int64_t pad_to_multiple_of = 1;  // round the padded length up to a multiple of this
};

// A padded batch. Arrays are [rows, seq_len], row-major.
struct Batch {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> ids;               // pad_id in padding
  std::vector<uint8_t> loss_mask;         // 0 in padding
  std::vector<int32_t> position_ids;      // 0 in padding
  std::vector<int32_t> document_ids;      // -1 in padding
  std::vector<int64_t> sequence_indices;  // which input sequences, per row
  int64_t epoch = 0;                      // the epoch these rows belong to
};

// Hands out batches of sequences forever, epoch after epoch. Each epoch visits
// every sequence once (minus a short tail when drop_last), in a permutation
// that is a pure function of (seed, epoch) computed with a portable generator,
// so the order is the same on every platform and after every restart.
//
// Not thread-safe: one owner (the trainer's data loop) calls it.
class BatchIterator {
 public:
  // Takes ownership of `sequences`. INVALID_ARGUMENT when `sequences` is empty,
  // options are out of range, a sequence is longer than fixed_seq_len, or
  // drop_last leaves no full batch.
  static absl::StatusOr<std::unique_ptr<BatchIterator>> Create(std::vector<Sequence> sequences,
                                                               const BatchIteratorOptions& options);

  // The next batch; advances the cursor. Never fails.
  Batch Next();

  // The position before the next call of Next().
  BatchCursor cursor() const;

  // Moves to `cursor`, as saved from an iterator over the same sequences with
  // the same batch_size, seed, shuffle and drop_last. FAILED_PRECONDITION when
  // the fingerprint differs (a different dataset or options: resuming would
  // not be exact); INVALID_ARGUMENT for a cursor out of range.
  absl::Status Seek(const BatchCursor& cursor);

  // Like Seek(), for a cursor saved by an iterator that differed from this one only in
  // batch_size (`saved_batch_size`): the next batch starts at the same sequence of the same
  // epoch's order (the order depends on seed and epoch only), so the sample position carries
  // over while batches hold another number of sequences. FAILED_PRECONDITION when the cursor
  // is not from such an iterator; INVALID_ARGUMENT for a cursor out of range.
  absl::Status SeekFromBatchSize(const BatchCursor& cursor, int64_t saved_batch_size);

  // Batches handed out per epoch.
  int64_t batches_per_epoch() const;
  int64_t num_sequences() const { return static_cast<int64_t>(sequences_.size()); }

 private:
  BatchIterator(std::vector<Sequence> sequences, const BatchIteratorOptions& options,
                uint64_t fingerprint);
  // Makes order_ the permutation of `epoch`.
  void SetEpoch(int64_t epoch);
  // What identifies `sequences` batched with `options` (a cursor's fingerprint).
  static uint64_t ComputeFingerprint(const std::vector<Sequence>& sequences,
                                     const BatchIteratorOptions& options);

  const std::vector<Sequence> sequences_;
  const BatchIteratorOptions options_;
  const uint64_t fingerprint_;
  int64_t epoch_ = 0;
  int64_t index_ = 0;
  std::vector<int64_t> order_;  // permutation of the current epoch
};

}  // namespace oft

#endif  // OFT_SERVER_DATA_BATCHING_H_
