#include "server/data/batching.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace oft {
namespace {

// SplitMix64 (Steele, Lea, Flood 2014): tiny, portable, and good enough to
// drive a shuffle. std::shuffle is not used because its algorithm differs
// between standard libraries, which would break exact resume across builds.
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, n) without modulo bias (Lemire 2019).
uint64_t Bounded(uint64_t& state, uint64_t n) {
  unsigned __int128 m = static_cast<unsigned __int128>(SplitMix64(state)) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(SplitMix64(state)) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

// FNV-1a, 64 bit, over plain values.
class Fingerprint {
 public:
  template <typename T>
  void Add(const T& value) {
    AddBytes(&value, sizeof(T));
  }
  template <typename T>
  void AddVector(const std::vector<T>& values) {
    Add(static_cast<uint64_t>(values.size()));
    AddBytes(values.data(), values.size() * sizeof(T));
  }
  uint64_t value() const { return hash_; }

 private:
  void AddBytes(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      hash_ ^= p[i];
      hash_ *= 0x100000001B3ull;
    }
  }
  uint64_t hash_ = 0xCBF29CE484222325ull;
};

void AppendTokens(const std::vector<int32_t>& ids, bool train, TokenizedExample& out) {
  out.ids.insert(out.ids.end(), ids.begin(), ids.end());
  out.loss_mask.insert(out.loss_mask.end(), ids.size(), train ? 1 : 0);
}

// Adds `example` to `seq` as its next document.
void AppendDocument(const TokenizedExample& example, Sequence& seq) {
  const int32_t doc_id = static_cast<int32_t>(seq.lines.size());
  seq.ids.insert(seq.ids.end(), example.ids.begin(), example.ids.end());
  seq.loss_mask.insert(seq.loss_mask.end(), example.loss_mask.begin(), example.loss_mask.end());
  for (size_t i = 0; i < example.ids.size(); ++i) {
    seq.position_ids.push_back(static_cast<int32_t>(i));
    seq.document_ids.push_back(doc_id);
  }
  // Whatever the example says, its first token has no context in this document.
  if (!example.ids.empty()) seq.loss_mask[seq.ids.size() - example.ids.size()] = 0;
  seq.lines.push_back(example.line);
}

}  // namespace

TextEncoder::~TextEncoder() = default;
std::vector<int32_t> TextEncoder::special_prefix() const { return {}; }
std::vector<int32_t> TextEncoder::special_suffix() const { return {}; }
std::optional<int32_t> TextEncoder::eos_id() const { return std::nullopt; }

absl::StatusOr<TokenizedExample> TokenizeExample(const Example& example, const TextEncoder& encoder,
                                                 const TokenizeOptions& options) {
  if (options.max_seq_len < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_seq_len must be at least 2, got ", options.max_seq_len));
  }
  if (example.format == RowFormat::kChat) {
    if (absl::Status st = ValidateChat(options.chat_template, example.messages); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", example.line, ": ", st.message()));
    }
  }
  const RenderedExample rendered = RenderExample(example, options.chat_template);
  TokenizedExample out;
  out.line = example.line;
  // The same special tokens as the tokenizer adds to a prompt at inference (one rule for
  // every entry point, Tokenizer::special_prefix()).
  if (rendered.add_special_tokens) AppendTokens(encoder.special_prefix(), false, out);
  for (const Segment& segment : rendered.segments) {
    AppendTokens(encoder.Encode(segment.text), segment.train, out);
  }
  if (rendered.add_special_tokens) AppendTokens(encoder.special_suffix(), true, out);
  if (rendered.append_eos) {
    const std::optional<int32_t> eos = encoder.eos_id();
    if (eos.has_value() && (out.ids.empty() || out.ids.back() != *eos)) {
      AppendTokens({*eos}, true, out);
    }
  }
  if (!out.loss_mask.empty()) out.loss_mask[0] = 0;  // nothing predicts the first token

  const auto first_trained = std::find(out.loss_mask.begin(), out.loss_mask.end(), 1);
  if (first_trained == out.loss_mask.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "line ", example.line, ": no trainable tokens: the trained part encodes to nothing"));
  }
  const int64_t untrained_prefix = first_trained - out.loss_mask.begin();
  if (untrained_prefix >= options.max_seq_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", example.line, ": no trainable tokens within max_seq_len ",
                     options.max_seq_len, ": the ", untrained_prefix,
                     " tokens before the first trained token fill it; shorten the prompt or raise "
                     "max_seq_len"));
  }
  if (static_cast<int64_t>(out.ids.size()) > options.max_seq_len) {
    out.ids.resize(options.max_seq_len);
    out.loss_mask.resize(options.max_seq_len);
    out.truncated = true;
  }
  return out;
}

absl::StatusOr<std::vector<TokenizedExample>> TokenizeExamples(absl::Span<const Example> examples,
                                                               const TextEncoder& encoder,
                                                               const TokenizeOptions& options,
                                                               TokenizeStats* stats) {
  std::vector<TokenizedExample> out;
  out.reserve(examples.size());
  std::vector<std::string> errors;
  int64_t error_count = 0;
  TokenizeStats local;
  for (const Example& example : examples) {
    absl::StatusOr<TokenizedExample> tokenized = TokenizeExample(example, encoder, options);
    if (!tokenized.ok()) {
      if (tokenized.status().code() != absl::StatusCode::kInvalidArgument ||
          options.max_seq_len < 2) {
        return tokenized.status();  // not about a row
      }
      if (static_cast<int>(errors.size()) < std::max(1, options.max_errors)) {
        errors.emplace_back(tokenized.status().message());
      }
      ++error_count;
      continue;
    }
    ++local.examples;
    local.truncated += tokenized->truncated ? 1 : 0;
    local.tokens += static_cast<int64_t>(tokenized->ids.size());
    local.trainable_tokens +=
        std::count(tokenized->loss_mask.begin(), tokenized->loss_mask.end(), 1);
    out.push_back(*std::move(tokenized));
  }
  if (error_count > 0) {
    std::string msg = absl::StrJoin(errors, "\n");
    if (error_count > static_cast<int64_t>(errors.size())) {
      absl::StrAppend(&msg, "\n(and ", error_count - static_cast<int64_t>(errors.size()),
                      " more not shown)");
    }
    return absl::InvalidArgumentError(msg);
  }
  if (stats != nullptr) *stats = local;
  return out;
}

Sequence ToSequence(const TokenizedExample& example) {
  Sequence seq;
  AppendDocument(example, seq);
  return seq;
}

std::vector<Sequence> ToSequences(absl::Span<const TokenizedExample> examples) {
  std::vector<Sequence> out;
  out.reserve(examples.size());
  for (const TokenizedExample& example : examples) out.push_back(ToSequence(example));
  return out;
}

absl::StatusOr<std::vector<Sequence>> PackExamples(absl::Span<const TokenizedExample> examples,
                                                   int64_t max_seq_len) {
  if (max_seq_len < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_seq_len must be positive, got ", max_seq_len));
  }
  std::vector<size_t> by_length(examples.size());
  std::iota(by_length.begin(), by_length.end(), size_t{0});
  std::stable_sort(by_length.begin(), by_length.end(), [&](size_t a, size_t b) {
    return examples[a].ids.size() > examples[b].ids.size();
  });

  // Best fit decreasing: each example goes into the fullest bin it fits.
  std::vector<std::vector<size_t>> bins;
  std::multimap<int64_t, size_t> free_space;  // remaining tokens -> bin
  for (size_t i : by_length) {
    const int64_t len = static_cast<int64_t>(examples[i].ids.size());
    if (len > max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("line ", examples[i].line, ": example of ",
                                                     len, " tokens is longer than max_seq_len ",
                                                     max_seq_len));
    }
    size_t bin;
    int64_t remaining;
    if (auto it = free_space.lower_bound(len); it != free_space.end()) {
      bin = it->second;
      remaining = it->first - len;
      free_space.erase(it);
    } else {
      bin = bins.size();
      bins.emplace_back();
      remaining = max_seq_len - len;
    }
    bins[bin].push_back(i);
    if (remaining > 0) free_space.emplace(remaining, bin);
  }
  for (std::vector<size_t>& bin : bins) std::sort(bin.begin(), bin.end());
  std::sort(bins.begin(), bins.end(),
            [](const std::vector<size_t>& a, const std::vector<size_t>& b) {
              return a.front() < b.front();
            });

  std::vector<Sequence> out(bins.size());
  for (size_t b = 0; b < bins.size(); ++b) {
    for (size_t i : bins[b]) AppendDocument(examples[i], out[b]);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<BatchIterator>> BatchIterator::Create(
    std::vector<Sequence> sequences, const BatchIteratorOptions& options) {
  if (sequences.empty()) return absl::InvalidArgumentError("no sequences to batch");
  if (options.batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be positive, got ", options.batch_size));
  }
  if (options.fixed_seq_len < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fixed_seq_len must be >= 0, got ", options.fixed_seq_len));
  }
  if (options.pad_to_multiple_of < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("pad_to_multiple_of must be positive, got ", options.pad_to_multiple_of));
  }
  if (options.drop_last && static_cast<int64_t>(sequences.size()) < options.batch_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size ", options.batch_size, " is larger than the ", sequences.size(),
                     " sequences of the dataset, and drop_last leaves no batch"));
  }
  for (size_t i = 0; i < sequences.size(); ++i) {
    const Sequence& s = sequences[i];
    const size_t n = s.ids.size();
    if (n == 0 || s.loss_mask.size() != n || s.position_ids.size() != n ||
        s.document_ids.size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", i, " is empty or its arrays differ in length"));
    }
    if (options.fixed_seq_len > 0 && static_cast<int64_t>(n) > options.fixed_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", i, " has ", n, " tokens, more than fixed_seq_len ", options.fixed_seq_len));
    }
  }
  const uint64_t fingerprint = ComputeFingerprint(sequences, options);
  return std::unique_ptr<BatchIterator>(new BatchIterator(std::move(sequences), options, fingerprint));
}

uint64_t BatchIterator::ComputeFingerprint(const std::vector<Sequence>& sequences,
                                           const BatchIteratorOptions& options) {
  Fingerprint fp;
  fp.Add(options.batch_size);
  fp.Add(options.seed);
  fp.Add(options.shuffle);
  fp.Add(options.drop_last);
  fp.Add(options.pad_id);
  fp.Add(options.fixed_seq_len);
  fp.Add(options.pad_to_multiple_of);
  fp.Add(static_cast<uint64_t>(sequences.size()));
  for (const Sequence& s : sequences) {
    fp.AddVector(s.ids);
    fp.AddVector(s.loss_mask);
    fp.AddVector(s.document_ids);
  }
  return fp.value();
}

absl::Status BatchIterator::SeekFromBatchSize(const BatchCursor& cursor, int64_t saved_batch_size) {
  BatchIteratorOptions saved = options_;
  saved.batch_size = saved_batch_size;
  if (saved_batch_size < 1 || cursor.fingerprint != ComputeFingerprint(sequences_, saved)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the data cursor was saved for a different dataset or batching options (not only another "
        "batch size, ", saved_batch_size, "); it cannot give the sample position"));
  }
  return Seek(BatchCursor{cursor.epoch, cursor.index, fingerprint_});
}

BatchIterator::BatchIterator(std::vector<Sequence> sequences, const BatchIteratorOptions& options,
                             uint64_t fingerprint)
    : sequences_(std::move(sequences)), options_(options), fingerprint_(fingerprint) {
  SetEpoch(0);
}

void BatchIterator::SetEpoch(int64_t epoch) {
  epoch_ = epoch;
  order_.resize(sequences_.size());
  std::iota(order_.begin(), order_.end(), int64_t{0});
  if (!options_.shuffle) return;
  uint64_t state = options_.seed;
  state = SplitMix64(state) ^ static_cast<uint64_t>(epoch);
  for (size_t i = order_.size() - 1; i > 0; --i) {
    std::swap(order_[i], order_[Bounded(state, i + 1)]);
  }
}

int64_t BatchIterator::batches_per_epoch() const {
  const int64_t n = num_sequences();
  return options_.drop_last ? n / options_.batch_size
                            : (n + options_.batch_size - 1) / options_.batch_size;
}

BatchCursor BatchIterator::cursor() const { return BatchCursor{epoch_, index_, fingerprint_}; }

absl::Status BatchIterator::Seek(const BatchCursor& cursor) {
  if (cursor.fingerprint != fingerprint_) {
    return absl::FailedPreconditionError(
        "the data cursor was saved for a different dataset or different batching options; "
        "resuming from it would not be exact");
  }
  if (cursor.epoch < 0 || cursor.index < 0 || cursor.index > num_sequences()) {
    return absl::InvalidArgumentError(absl::StrCat("data cursor out of range: epoch ", cursor.epoch,
                                                   ", index ", cursor.index, " of ",
                                                   num_sequences(), " sequences"));
  }
  if (cursor.epoch != epoch_) SetEpoch(cursor.epoch);
  index_ = cursor.index;
  return absl::OkStatus();
}

Batch BatchIterator::Next() {
  const int64_t n = num_sequences();
  int64_t remaining = n - index_;
  if (remaining == 0 || (options_.drop_last && remaining < options_.batch_size)) {
    SetEpoch(epoch_ + 1);
    index_ = 0;
    remaining = n;
  }
  Batch batch;
  batch.rows = std::min(options_.batch_size, remaining);
  batch.epoch = epoch_;
  int64_t longest = 0;
  for (int64_t r = 0; r < batch.rows; ++r) {
    const int64_t s = order_[index_ + r];
    batch.sequence_indices.push_back(s);
    longest = std::max(longest, static_cast<int64_t>(sequences_[s].ids.size()));
  }
  if (options_.fixed_seq_len > 0) {
    batch.seq_len = options_.fixed_seq_len;
  } else {
    const int64_t m = options_.pad_to_multiple_of;
    batch.seq_len = (longest + m - 1) / m * m;
  }
  const size_t total = static_cast<size_t>(batch.rows * batch.seq_len);
  batch.ids.assign(total, options_.pad_id);
  batch.loss_mask.assign(total, 0);
  batch.position_ids.assign(total, 0);
  batch.document_ids.assign(total, -1);
  for (int64_t r = 0; r < batch.rows; ++r) {
    const Sequence& s = sequences_[batch.sequence_indices[r]];
    const size_t offset = static_cast<size_t>(r * batch.seq_len);
    std::copy(s.ids.begin(), s.ids.end(), batch.ids.begin() + offset);
    std::copy(s.loss_mask.begin(), s.loss_mask.end(), batch.loss_mask.begin() + offset);
    std::copy(s.position_ids.begin(), s.position_ids.end(), batch.position_ids.begin() + offset);
    std::copy(s.document_ids.begin(), s.document_ids.end(), batch.document_ids.begin() + offset);
  }
  index_ += batch.rows;
  return batch;
}

}  // namespace oft
