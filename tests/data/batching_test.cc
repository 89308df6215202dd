#include "server/data/batching.h"

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/fake_text_encoder.h"

namespace oft {
namespace {

using ::oft::testing::FakeByteEncoder;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

constexpr int32_t kBos = FakeByteEncoder::kBos;
constexpr int32_t kEos = FakeByteEncoder::kEos;

std::vector<int32_t> Bytes(const std::string& s) { return FakeByteEncoder().Encode(s); }

// The tokens with loss_mask 1, decoded back to text by the fake encoder's rules.
std::string TrainedText(const TokenizedExample& t) {
  std::string out;
  for (size_t i = 0; i < t.ids.size(); ++i) {
    if (!t.loss_mask[i]) continue;
    const int32_t id = t.ids[i];
    if (id < 256) {
      out += static_cast<char>(id);
    } else if (id == kEos) {
      out += "<EOS>";
    } else if (id >= 1000 && id < 1000 + static_cast<int32_t>(FakeByteEncoder::Specials().size())) {
      out += FakeByteEncoder::Specials()[id - 1000];
    } else {
      out += "<?>";
    }
  }
  return out;
}

Example PromptCompletion(std::string prompt, std::string completion, int64_t line = 1) {
  Example e;
  e.format = RowFormat::kPromptCompletion;
  e.prompt = std::move(prompt);
  e.completion = std::move(completion);
  e.line = line;
  return e;
}

Example Text(std::string text, int64_t line = 1) {
  Example e;
  e.format = RowFormat::kText;
  e.text = std::move(text);
  e.line = line;
  return e;
}

Example Chat(std::vector<Message> messages, int64_t line = 1) {
  Example e;
  e.format = RowFormat::kChat;
  e.messages = std::move(messages);
  e.line = line;
  return e;
}

TEST(TokenizeExampleTest, PromptCompletionTrainsCompletionAndEos) {
  FakeByteEncoder encoder(kBos, kEos);
  absl::StatusOr<TokenizedExample> t =
      TokenizeExample(PromptCompletion("ab", "cd", 4), encoder, TokenizeOptions{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->ids, ElementsAre(kBos, 'a', 'b', 'c', 'd', kEos));
  EXPECT_THAT(t->loss_mask, ElementsAre(0, 0, 0, 1, 1, 1));
  EXPECT_EQ(t->line, 4);
  EXPECT_FALSE(t->truncated);
}

TEST(TokenizeExampleTest, TextTrainsEverythingButTheFirstToken) {
  FakeByteEncoder no_specials;
  absl::StatusOr<TokenizedExample> t = TokenizeExample(Text("xyz"), no_specials, {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->ids, ElementsAre('x', 'y', 'z'));
  EXPECT_THAT(t->loss_mask, ElementsAre(0, 1, 1));  // nothing predicts 'x'

  FakeByteEncoder with_specials(kBos, kEos);
  t = TokenizeExample(Text("xyz"), with_specials, {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->ids, ElementsAre(kBos, 'x', 'y', 'z', kEos));
  EXPECT_THAT(t->loss_mask, ElementsAre(0, 1, 1, 1, 1));
}

TEST(TokenizeExampleTest, Llama3ChatMasksExactlyTheAssistantTurns) {
  FakeByteEncoder encoder(kBos, kEos);
  TokenizeOptions options;
  options.chat_template = ChatTemplateKind::kLlama3;
  absl::StatusOr<TokenizedExample> t = TokenizeExample(Chat({{"system", "S"},
                                                             {"user", "Q1"},
                                                             {"assistant", " A1 "},
                                                             {"user", "Q2"},
                                                             {"assistant", "A2"}}),
                                                       encoder, options);
  ASSERT_TRUE(t.ok()) << t.status();
  // The template supplies <|begin_of_text|>: no second BOS, and no EOS.
  EXPECT_EQ(t->ids.front(), FakeByteEncoder::SpecialId("<|begin_of_text|>"));
  EXPECT_EQ(std::count(t->ids.begin(), t->ids.end(), kBos), 0);
  EXPECT_EQ(std::count(t->ids.begin(), t->ids.end(), kEos), 0);
  EXPECT_EQ(TrainedText(*t), "A1<|eot_id|>A2<|eot_id|>");
  // The whole sequence is the template's text, token for token.
  EXPECT_THAT(t->ids,
              ElementsAreArray(
                  Bytes("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nQ1<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nQ2<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>")));
}

TEST(TokenizeExampleTest, ChatRowsGetNoSpecialTokensBeyondTheTemplates) {
  // apply_chat_template tokenizes with add_special_tokens=False: a ChatML chat starts with
  // <|im_start|> even when the tokenizer's post-processor would prepend BOS to text.
  FakeByteEncoder encoder(kBos, kEos);
  TokenizeOptions options;
  options.chat_template = ChatTemplateKind::kChatml;
  absl::StatusOr<TokenizedExample> t =
      TokenizeExample(Chat({{"user", "hi"}, {"assistant", "yo"}}), encoder, options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->ids.front(), FakeByteEncoder::SpecialId("<|im_start|>"));
  EXPECT_EQ(std::count(t->ids.begin(), t->ids.end(), kBos), 0);
  EXPECT_EQ(TrainedText(*t), "yo<|im_end|>");
}

TEST(TokenizeExampleTest, SuffixEndingInEosGetsNoSecondEos) {
  // A post-processor that appends EOS ("<s> $A </s>"): the row ends with one EOS, trained.
  class BosEosEncoder : public FakeByteEncoder {
   public:
    BosEosEncoder() : FakeByteEncoder(kBos, kEos) {}
    std::vector<int32_t> special_suffix() const override { return {kEos}; }
  };
  BosEosEncoder encoder;
  absl::StatusOr<TokenizedExample> t =
      TokenizeExample(PromptCompletion("ab", "cd"), encoder, TokenizeOptions{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->ids, ElementsAre(kBos, 'a', 'b', 'c', 'd', kEos));
  EXPECT_THAT(t->loss_mask, ElementsAre(0, 0, 0, 1, 1, 1));
}

TEST(TokenizeExampleTest, GemmaChatWithTwoUserTurnsInARowIsRefused) {
  FakeByteEncoder encoder;
  TokenizeOptions options;
  options.chat_template = ChatTemplateKind::kGemma;
  absl::StatusOr<TokenizedExample> t = TokenizeExample(
      Chat({{"user", "a"}, {"user", "b"}, {"assistant", "c"}}, 7), encoder, options);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr("line 7: messages[1]"));
}

TEST(TokenizeExampleTest, TruncationKeepsTheStart) {
  FakeByteEncoder encoder(kBos, kEos);
  TokenizeOptions options;
  options.max_seq_len = 5;
  absl::StatusOr<TokenizedExample> t =
      TokenizeExample(PromptCompletion("ab", "cdefgh"), encoder, options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->ids, ElementsAre(kBos, 'a', 'b', 'c', 'd'));
  EXPECT_THAT(t->loss_mask, ElementsAre(0, 0, 0, 1, 1));
  EXPECT_TRUE(t->truncated);
}

TEST(TokenizeExampleTest, NothingTrainableAfterTruncationIsAnError) {
  FakeByteEncoder encoder(kBos, kEos);
  TokenizeOptions options;
  options.max_seq_len = 8;
  // BOS + 7 prompt bytes fill all 8 positions.
  absl::StatusOr<TokenizedExample> t =
      TokenizeExample(PromptCompletion("1234567", "c", 7), encoder, options);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(),
            "line 7: no trainable tokens within max_seq_len 8: the 8 tokens before the first "
            "trained token fill it; shorten the prompt or raise max_seq_len");
  // One token shorter and the first completion token fits.
  t = TokenizeExample(PromptCompletion("123456", "cde", 7), encoder, options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(TrainedText(*t), "c");
}

TEST(TokenizeExampleTest, RejectsTinyMaxSeqLen) {
  FakeByteEncoder encoder;
  TokenizeOptions options;
  options.max_seq_len = 1;
  EXPECT_EQ(TokenizeExample(Text("ab"), encoder, options).status().message(),
            "max_seq_len must be at least 2, got 1");
}

TEST(TokenizeExamplesTest, CollectsErrorsAndStats) {
  FakeByteEncoder encoder(kBos, kEos);
  TokenizeOptions options;
  options.max_seq_len = 6;
  const std::vector<Example> examples = {
      PromptCompletion("a", "bcdefgh", 1), PromptCompletion("123456789", "x", 2),
      PromptCompletion("b", "c", 3), PromptCompletion("123456", "x", 5)};
  absl::StatusOr<std::vector<TokenizedExample>> result =
      TokenizeExamples(examples, encoder, options);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(),
            "line 2: no trainable tokens within max_seq_len 6: the 10 tokens before the first "
            "trained token fill it; shorten the prompt or raise max_seq_len\n"
            "line 5: no trainable tokens within max_seq_len 6: the 7 tokens before the first "
            "trained token fill it; shorten the prompt or raise max_seq_len");

  TokenizeStats stats;
  result = TokenizeExamples({examples[0], examples[2]}, encoder, options, &stats);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(stats.examples, 2);
  EXPECT_EQ(stats.truncated, 1);
  EXPECT_EQ(stats.tokens, 6 + 4);
  EXPECT_EQ(stats.trainable_tokens, 4 + 2);  // "bcde" and "c" + EOS
}

TokenizedExample Tokens(int len, int64_t line) {
  TokenizedExample t;
  t.line = line;
  for (int i = 0; i < len; ++i) {
    t.ids.push_back(static_cast<int32_t>(line * 100 + i));
    t.loss_mask.push_back(1);
  }
  return t;
}

TEST(PackExamplesTest, BestFitDecreasingWithDocumentBoundaries) {
  const std::vector<TokenizedExample> examples = {Tokens(5, 1), Tokens(3, 2), Tokens(4, 3),
                                                  Tokens(2, 4), Tokens(6, 5)};
  absl::StatusOr<std::vector<Sequence>> packed = PackExamples(examples, 8);
  ASSERT_TRUE(packed.ok()) << packed.status();
  ASSERT_EQ(packed->size(), 3u);
  const Sequence& s0 = (*packed)[0];
  EXPECT_THAT(s0.lines, ElementsAre(1, 2));
  EXPECT_THAT(s0.ids, ElementsAre(100, 101, 102, 103, 104, 200, 201, 202));
  EXPECT_THAT(s0.position_ids, ElementsAre(0, 1, 2, 3, 4, 0, 1, 2));
  EXPECT_THAT(s0.document_ids, ElementsAre(0, 0, 0, 0, 0, 1, 1, 1));
  // The first token of each document is never a target.
  EXPECT_THAT(s0.loss_mask, ElementsAre(0, 1, 1, 1, 1, 0, 1, 1));
  EXPECT_THAT((*packed)[1].lines, ElementsAre(3));
  EXPECT_THAT((*packed)[2].lines, ElementsAre(4, 5));
  EXPECT_THAT((*packed)[2].position_ids, ElementsAre(0, 1, 0, 1, 2, 3, 4, 5));
  EXPECT_THAT((*packed)[2].document_ids, ElementsAre(0, 0, 1, 1, 1, 1, 1, 1));
}

TEST(PackExamplesTest, EveryExampleOnceAndWithinTheLimit) {
  std::vector<TokenizedExample> examples;
  for (int i = 0; i < 200; ++i) examples.push_back(Tokens(1 + (i * 37) % 31, i + 1));
  absl::StatusOr<std::vector<Sequence>> packed = PackExamples(examples, 32);
  ASSERT_TRUE(packed.ok()) << packed.status();
  std::multiset<int64_t> seen;
  int64_t tokens = 0;
  for (const Sequence& s : *packed) {
    EXPECT_LE(s.ids.size(), 32u);
    EXPECT_EQ(s.ids.size(), s.loss_mask.size());
    EXPECT_EQ(s.ids.size(), s.position_ids.size());
    EXPECT_EQ(s.ids.size(), s.document_ids.size());
    EXPECT_TRUE(std::is_sorted(s.lines.begin(), s.lines.end()));
    seen.insert(s.lines.begin(), s.lines.end());
    tokens += static_cast<int64_t>(s.ids.size());
  }
  EXPECT_EQ(seen.size(), 200u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 200u);
  // Well filled: fewer than 10% more sequences than the tokens need.
  EXPECT_LE(static_cast<int64_t>(packed->size()), (tokens + 31) / 32 * 11 / 10);
  // Deterministic.
  absl::StatusOr<std::vector<Sequence>> again = PackExamples(examples, 32);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), packed->size());
  for (size_t i = 0; i < packed->size(); ++i) EXPECT_EQ((*again)[i].ids, (*packed)[i].ids);
}

TEST(PackExamplesTest, RejectsExamplesLongerThanTheSequence) {
  absl::StatusOr<std::vector<Sequence>> packed = PackExamples({Tokens(9, 12)}, 8);
  EXPECT_EQ(packed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(packed.status().message(), "line 12: example of 9 tokens is longer than max_seq_len 8");
}

std::vector<Sequence> MakeSequences(int n) {
  std::vector<TokenizedExample> examples;
  for (int i = 0; i < n; ++i) examples.push_back(Tokens(2 + i % 5, i + 1));
  return ToSequences(examples);
}

std::unique_ptr<BatchIterator> MakeIterator(int n, const BatchIteratorOptions& options) {
  absl::StatusOr<std::unique_ptr<BatchIterator>> it =
      BatchIterator::Create(MakeSequences(n), options);
  EXPECT_TRUE(it.ok()) << it.status();
  return it.ok() ? *std::move(it) : nullptr;
}

void ExpectSameBatch(const Batch& a, const Batch& b) {
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.seq_len, b.seq_len);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.sequence_indices, b.sequence_indices);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.loss_mask, b.loss_mask);
  EXPECT_EQ(a.position_ids, b.position_ids);
  EXPECT_EQ(a.document_ids, b.document_ids);
}

TEST(BatchIteratorTest, PadsToTheLongestRow) {
  BatchIteratorOptions options;
  options.batch_size = 2;
  options.shuffle = false;
  options.pad_id = -7;
  std::unique_ptr<BatchIterator> it = MakeIterator(4, options);
  ASSERT_NE(it, nullptr);
  const Batch b = it->Next();  // sequences 0 (2 tokens) and 1 (3 tokens)
  EXPECT_EQ(b.rows, 2);
  EXPECT_EQ(b.seq_len, 3);
  EXPECT_THAT(b.sequence_indices, ElementsAre(0, 1));
  EXPECT_THAT(b.ids, ElementsAre(100, 101, -7, 200, 201, 202));
  EXPECT_THAT(b.loss_mask, ElementsAre(0, 1, 0, 0, 1, 1));
  EXPECT_THAT(b.position_ids, ElementsAre(0, 1, 0, 0, 1, 2));
  EXPECT_THAT(b.document_ids, ElementsAre(0, 0, -1, 0, 0, 0));

  options.pad_to_multiple_of = 4;
  it = MakeIterator(4, options);
  EXPECT_EQ(it->Next().seq_len, 4);
  options.fixed_seq_len = 16;
  it = MakeIterator(4, options);
  const Batch fixed = it->Next();
  EXPECT_EQ(fixed.seq_len, 16);
  EXPECT_EQ(fixed.ids.size(), 32u);
}

TEST(BatchIteratorTest, EveryEpochIsAPermutation) {
  BatchIteratorOptions options;
  options.batch_size = 3;
  options.seed = 5;
  options.drop_last = false;
  std::unique_ptr<BatchIterator> it = MakeIterator(10, options);
  ASSERT_NE(it, nullptr);
  EXPECT_EQ(it->batches_per_epoch(), 4);
  std::vector<std::vector<int64_t>> orders;
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> order;
    for (int b = 0; b < 4; ++b) {
      const Batch batch = it->Next();
      EXPECT_EQ(batch.epoch, epoch);
      EXPECT_EQ(batch.rows, b < 3 ? 3 : 1);  // short last batch kept
      order.insert(order.end(), batch.sequence_indices.begin(), batch.sequence_indices.end());
    }
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_THAT(sorted, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
    orders.push_back(order);
  }
  EXPECT_NE(orders[0], orders[1]);
  EXPECT_NE(orders[1], orders[2]);
}

TEST(BatchIteratorTest, OrderIsPinned) {
  // The order is part of the checkpoint contract: a resumed job must see the
  // same order as the binary that saved it. Changing this is a format change.
  BatchIteratorOptions options;
  options.batch_size = 10;
  options.seed = 1;
  std::unique_ptr<BatchIterator> it = MakeIterator(10, options);
  ASSERT_NE(it, nullptr);
  EXPECT_THAT(it->Next().sequence_indices, ElementsAre(6, 4, 7, 2, 9, 1, 5, 0, 8, 3));
  EXPECT_THAT(it->Next().sequence_indices, ElementsAre(4, 3, 0, 8, 2, 5, 1, 7, 6, 9));
}

TEST(BatchIteratorTest, DropLastSkipsTheShortTail) {
  BatchIteratorOptions options;
  options.batch_size = 3;
  options.seed = 9;
  std::unique_ptr<BatchIterator> it = MakeIterator(10, options);
  ASSERT_NE(it, nullptr);
  EXPECT_EQ(it->batches_per_epoch(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(it->Next().epoch, 0);
  const Batch b = it->Next();
  EXPECT_EQ(b.epoch, 1);
  EXPECT_EQ(b.rows, 3);
}

TEST(BatchIteratorTest, SameSeedSameBatchesOtherSeedOtherOrder) {
  BatchIteratorOptions options;
  options.batch_size = 4;
  options.seed = 123;
  std::unique_ptr<BatchIterator> a = MakeIterator(50, options);
  std::unique_ptr<BatchIterator> b = MakeIterator(50, options);
  options.seed = 124;
  std::unique_ptr<BatchIterator> c = MakeIterator(50, options);
  bool differs = false;
  for (int i = 0; i < 30; ++i) {
    const Batch ba = a->Next();
    ExpectSameBatch(ba, b->Next());
    differs = differs || ba.sequence_indices != c->Next().sequence_indices;
  }
  EXPECT_TRUE(differs);
}

TEST(BatchIteratorTest, ResumeFromASavedCursorIsExact) {
  BatchIteratorOptions options;
  options.batch_size = 3;
  options.seed = 77;
  for (bool drop_last : {true, false}) {
    options.drop_last = drop_last;
    std::unique_ptr<BatchIterator> uninterrupted = MakeIterator(10, options);
    std::vector<Batch> expected;
    for (int i = 0; i < 25; ++i) expected.push_back(uninterrupted->Next());

    for (int k : {0, 1, 3, 7, 12, 24}) {
      std::unique_ptr<BatchIterator> first = MakeIterator(10, options);
      for (int i = 0; i < k; ++i) first->Next();
      const BatchCursor saved = first->cursor();
      first.reset();  // the process dies

      std::unique_ptr<BatchIterator> resumed = MakeIterator(10, options);
      ASSERT_TRUE(resumed->Seek(saved).ok());
      EXPECT_EQ(resumed->cursor(), saved);
      for (int i = k; i < 25; ++i) {
        SCOPED_TRACE(::testing::Message() << "drop_last " << drop_last << " k " << k << " i " << i);
        ExpectSameBatch(resumed->Next(), expected[i]);
      }
    }
  }
}

TEST(BatchIteratorTest, SeekRejectsACursorFromOtherDataOrOptions) {
  BatchIteratorOptions options;
  options.batch_size = 2;
  std::unique_ptr<BatchIterator> it = MakeIterator(10, options);
  it->Next();
  const BatchCursor saved = it->cursor();

  std::unique_ptr<BatchIterator> other_data = MakeIterator(11, options);
  EXPECT_EQ(other_data->Seek(saved).code(), absl::StatusCode::kFailedPrecondition);
  options.seed = 1;
  std::unique_ptr<BatchIterator> other_seed = MakeIterator(10, options);
  EXPECT_EQ(other_seed->Seek(saved).code(), absl::StatusCode::kFailedPrecondition);

  BatchCursor bad = saved;
  bad.index = 11;
  EXPECT_EQ(it->Seek(bad).code(), absl::StatusCode::kInvalidArgument);
  bad.index = 0;
  bad.epoch = -1;
  EXPECT_EQ(it->Seek(bad).code(), absl::StatusCode::kInvalidArgument);
}

TEST(BatchIteratorTest, SeekFromBatchSizeKeepsTheSamplePosition) {
  // Saved by an iterator of 4 per batch after 2 batches (8 sequences of epoch 0); resumed with
  // 2 per batch, the next sequences are those an uninterrupted 4-per-batch run would see next.
  BatchIteratorOptions four;
  four.batch_size = 4;
  four.seed = 9;
  four.drop_last = false;
  std::unique_ptr<BatchIterator> uninterrupted = MakeIterator(10, four);
  std::vector<int64_t> order;
  for (int i = 0; i < 3; ++i) {
    const Batch b = uninterrupted->Next();
    order.insert(order.end(), b.sequence_indices.begin(), b.sequence_indices.end());
  }
  std::unique_ptr<BatchIterator> first = MakeIterator(10, four);
  first->Next();
  first->Next();
  const BatchCursor saved = first->cursor();

  BatchIteratorOptions two = four;
  two.batch_size = 2;
  std::unique_ptr<BatchIterator> resumed = MakeIterator(10, two);
  EXPECT_EQ(resumed->Seek(saved).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(resumed->SeekFromBatchSize(saved, 4).ok());
  EXPECT_EQ(resumed->cursor().index, 8);
  EXPECT_EQ(resumed->Next().sequence_indices, std::vector<int64_t>(order.begin() + 8, order.begin() + 10));
  // Only the batch size may differ: the wrong saved size, or other data, is refused.
  std::unique_ptr<BatchIterator> again = MakeIterator(10, two);
  EXPECT_EQ(again->SeekFromBatchSize(saved, 3).code(), absl::StatusCode::kFailedPrecondition);
  std::unique_ptr<BatchIterator> other_data = MakeIterator(11, two);
  EXPECT_EQ(other_data->SeekFromBatchSize(saved, 4).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(BatchIteratorTest, CreateValidatesOptions) {
  BatchIteratorOptions options;
  EXPECT_EQ(BatchIterator::Create({}, options).status().code(), absl::StatusCode::kInvalidArgument);
  options.batch_size = 0;
  EXPECT_EQ(BatchIterator::Create(MakeSequences(3), options).status().message(),
            "batch_size must be positive, got 0");
  options.batch_size = 4;
  EXPECT_EQ(BatchIterator::Create(MakeSequences(3), options).status().message(),
            "batch_size 4 is larger than the 3 sequences of the dataset, and drop_last leaves "
            "no batch");
  options.drop_last = false;
  EXPECT_TRUE(BatchIterator::Create(MakeSequences(3), options).ok());
  options.fixed_seq_len = 3;
  EXPECT_EQ(BatchIterator::Create(MakeSequences(3), options).status().message(),
            "sequence 2 has 4 tokens, more than fixed_seq_len 3");
}

}  // namespace
}  // namespace oft
