#include "server/model/tokenizer.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A byte-level BPE (GPT-2 style) over "hello world" with one special token.
constexpr char kByteLevelJson[] = R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 20, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
     "rstrip": false, "normalized": false, "special": true},
    {"id": 21, "content": "<|bos|>", "single_word": false, "lstrip": false,
     "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                    "use_regex": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 0}},
               {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
    "pair": [],
    "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [21], "tokens": ["<|bos|>"]},
                       "<|endoftext|>": {"id": "<|endoftext|>", "ids": [20],
                                         "tokens": ["<|endoftext|>"]}}},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
              "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null,
    "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
    "byte_fallback": false, "ignore_merges": false,
    "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "w": 5, "r": 6, "d": 7, "he": 8,
              "ll": 9, "hell": 10, "hello": 11, "Ġw": 12, "or": 13, "Ġwor": 14, "ld": 15,
              "!": 16, "Ċ": 17},
    "merges": ["h e", "l l", "he ll", "hell o", ["Ġ", "w"], "o r", "Ġw or", "l d"]}
})";

// A SentencePiece-style BPE (Llama 2 style) with byte fallback.
constexpr char kSentencePieceJson[] = R"({
  "added_tokens": [
    {"id": 0, "content": "<unk>", "special": true, "normalized": false},
    {"id": 1, "content": "<s>", "special": true, "normalized": false},
    {"id": 2, "content": "</s>", "special": true, "normalized": false}
  ],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 0}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xC3>": 3, "<0xA9>": 4, "▁": 5, "h": 6,
              "i": 7, "▁h": 8, "▁hi": 9},
    "merges": [["▁", "h"], ["▁h", "i"]]}
})";

absl::Status LoadError(const std::string& json) {
  auto t = Tokenizer::FromJson(json);
  return t.ok() ? absl::OkStatus() : t.status();
}

std::string WithModel(const std::string& model) {
  return R"({"added_tokens": [], "normalizer": null, "pre_tokenizer": null, "model": )" + model +
         "}";
}

TEST(TokenizerLoadTest, MalformedJsonNamesThePosition) {
  absl::Status s = LoadError(R"({"model": {"type": "BPE", )");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(s.message(), HasSubstr("at byte"));
}

TEST(TokenizerLoadTest, RootMustBeAnObject) {
  EXPECT_EQ(LoadError("[1, 2]").code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerLoadTest, UnsupportedModelTypesAreNamed) {
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    absl::Status s =
        LoadError(WithModel(std::string(R"({"type": ")") + type + R"(", "vocab": {}})"));
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << type;
    EXPECT_THAT(s.message(), HasSubstr("model.type"));
    EXPECT_THAT(s.message(), HasSubstr(type));
  }
}

TEST(TokenizerLoadTest, MissingModelOrVocab) {
  absl::Status s = LoadError(R"({"added_tokens": []})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("model"));
  s = LoadError(WithModel(R"({"type": "BPE", "merges": []})"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("model.vocab: missing required field"));
  s = LoadError(WithModel(R"({"type": "BPE", "vocab": {"a": 0}})"));
  EXPECT_THAT(s.message(), HasSubstr("model.merges: missing required field"));
}

TEST(TokenizerLoadTest, BadVocabAndMerges) {
  absl::Status s = LoadError(WithModel(R"({"type": "BPE", "vocab": {"a": "x"}, "merges": []})"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("model.vocab.\"a\""));
  s = LoadError(WithModel(R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})"));
  EXPECT_THAT(s.message(), HasSubstr("model.merges[0]: token \"ab\" is not in model.vocab"));
  s = LoadError(WithModel(R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]})"));
  EXPECT_THAT(s.message(), HasSubstr("model.merges[0]"));
  s = LoadError(WithModel(R"({"type": "BPE", "vocab": {"a": 0}, "merges": [],
                              "unk_token": "<unk>"})"));
  EXPECT_THAT(s.message(), HasSubstr("model.unk_token: \"<unk>\" is not in model.vocab"));
  s = LoadError(WithModel(R"({"type": "BPE", "vocab": {"a": 0}, "merges": [],
                              "dropout": 0.1})"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("model.dropout"));
}

TEST(TokenizerLoadTest, UnsupportedComponentsNameTypeAndPath) {
  const std::string model = R"({"type": "BPE", "vocab": {"a": 0}, "merges": []})";
  absl::Status s = LoadError(R"({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "ByteLevel"}, {"type": "Whitespace"}]}, "model": )" +
                             model + "}");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("pre_tokenizer.pretokenizers[1].type is \"Whitespace\""));
  s = LoadError(R"({"decoder": {"type": "WordPiece"}, "model": )" + model + "}");
  EXPECT_THAT(s.message(), HasSubstr("decoder.type is \"WordPiece\""));
  s = LoadError(R"({"normalizer": {"type": "Lowercase"}, "model": )" + model + "}");
  EXPECT_THAT(s.message(), HasSubstr("normalizer.type is \"Lowercase\""));
  s = LoadError(R"({"post_processor": {"type": "Mystery"}, "model": )" + model + "}");
  EXPECT_THAT(s.message(), HasSubstr("post_processor.type is \"Mystery\""));
}

TEST(TokenizerLoadTest, BadRegexAndBehavior) {
  const std::string model = R"({"type": "BPE", "vocab": {"a": 0}, "merges": []})";
  absl::Status s = LoadError(R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"},
      "behavior": "Isolated", "invert": false}, "model": )" +
                             model + "}");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("pre_tokenizer.pattern.Regex: cannot compile regex"));
  s = LoadError(R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"},
      "behavior": "Sideways"}, "model": )" +
                model + "}");
  EXPECT_THAT(s.message(), HasSubstr("pre_tokenizer.behavior: unknown behavior \"Sideways\""));
}

TEST(TokenizerLoadTest, MissingFileIsNotFound) {
  auto t = Tokenizer::FromFile("/nonexistent/dir/tokenizer.json");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
}

TEST(ByteLevelTokenizerTest, EncodesWithMergePriorityAndSpecials) {
  auto t = Tokenizer::FromJson(kByteLevelJson);
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  // "hello" -> hello; " world" -> Ġwor + ld.
  EXPECT_THAT(tok.Encode("hello world", false), ElementsAre(11, 14, 15));
  EXPECT_THAT(tok.Encode("hello world", true), ElementsAre(21, 11, 14, 15, 20));
  // The special token is matched inside text before pre-tokenization.
  EXPECT_THAT(tok.Encode("hello<|endoftext|>\n", false), ElementsAre(11, 20, 17));
  EXPECT_EQ(tok.Decode({21, 11, 14, 15, 20}, false), "<|bos|>hello world<|endoftext|>");
  EXPECT_EQ(tok.Decode({21, 11, 14, 15, 20}, true), "hello world");
  // Out-of-vocabulary ids are skipped, like `tokenizers` does.
  EXPECT_EQ(tok.Decode({11, 999}, false), "hello");
}

TEST(ByteLevelTokenizerTest, VocabularyAccessors) {
  auto t = Tokenizer::FromJson(kByteLevelJson);
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  EXPECT_EQ(tok.vocab_size(), 22);
  EXPECT_EQ(tok.TokenToId("Ġwor"), 14);
  EXPECT_EQ(tok.TokenToId("<|endoftext|>"), 20);
  EXPECT_EQ(tok.TokenToId("nope"), std::nullopt);
  EXPECT_EQ(tok.IdToToken(12), "Ġw");
  EXPECT_EQ(tok.IdToToken(500), std::nullopt);
  EXPECT_EQ(tok.bos_id(), 21);
  EXPECT_EQ(tok.eos_id(), 20);
  EXPECT_TRUE(tok.IsSpecial(20));
  EXPECT_FALSE(tok.IsSpecial(11));
}

TEST(ByteLevelTokenizerTest, InvalidUtf8IsReplacedNotFatal) {
  auto t = Tokenizer::FromJson(kByteLevelJson);
  ASSERT_TRUE(t.ok()) << t.status();
  // No token covers U+FFFD, so it encodes to nothing, but the valid parts survive.
  EXPECT_THAT((*t)->Encode("hello\xff", false), ElementsAre(11));
}

TEST(ByteLevelTokenizerTest, ConcurrentEncodeIsConsistent) {
  auto t = Tokenizer::FromJson(kByteLevelJson);
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  const std::vector<int32_t> want = tok.Encode("hello world hello world", true);
  std::vector<std::thread> threads;
  std::vector<bool> ok(4, false);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      bool all = true;
      for (int k = 0; k < 200; ++k)
        all = all && tok.Encode("hello world hello world", true) == want;
      ok[i] = all;
    });
  }
  for (auto& th : threads) th.join();
  for (bool b : ok) EXPECT_TRUE(b);
}

TEST(SentencePieceTokenizerTest, ByteFallbackAndDecoders) {
  auto t = Tokenizer::FromJson(kSentencePieceJson);
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  // "hi é" -> "▁hi▁é": ▁hi, ▁, then é as bytes C3 A9.
  EXPECT_THAT(tok.Encode("hi é", true), ElementsAre(1, 9, 5, 3, 4));
  // "x" has no token and no byte token: it becomes <unk>; two of them fuse into one.
  EXPECT_THAT(tok.Encode("hxx", false), ElementsAre(8, 0));
  EXPECT_EQ(tok.Decode({1, 9, 5, 3, 4}, true), "hi é");
  EXPECT_EQ(tok.Decode({1, 9, 5, 3, 4}, false), "<s> hi é");
  // A lone continuation byte decodes to U+FFFD.
  EXPECT_EQ(tok.Decode({9, 4}, true), "hi\xEF\xBF\xBD");
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);  // No template: the well-known name </s>.
}

TEST(SentencePieceTokenizerTest, TokenizerConfigDecidesBosAndEos) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("oft_tok_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << kSentencePieceJson;
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": {"content": "</s>", "__type": "AddedToken"}, "eos_token": "<unk>"})";
  auto t = Tokenizer::FromFile((dir / "tokenizer.json").string());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->bos_id(), 2);
  EXPECT_EQ((*t)->eos_id(), 0);

  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<nope>"})";
  t = Tokenizer::FromFile((dir / "tokenizer.json").string());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("eos_token \"<nope>\" is not in the vocabulary"));
  std::filesystem::remove_all(dir);
}

TEST(MetaspaceTokenizerTest, PrependSchemeFirstAndDecoder) {
  constexpr char kJson[] = R"({
    "added_tokens": [{"id": 0, "content": "<s>", "special": true, "normalized": false}],
    "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                      "split": true},
    "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                "split": true},
    "model": {"type": "BPE", "unk_token": "<unk>",
      "vocab": {"<s>": 0, "<unk>": 1, "▁": 2, "a": 3, "b": 4, "▁a": 5, "▁b": 6},
      "merges": ["▁ a", "▁ b"]}
  })";
  auto t = Tokenizer::FromJson(kJson);
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  EXPECT_THAT(tok.Encode("a b", false), ElementsAre(5, 6));
  // After an added token the text no longer starts the input: no ▁ is prepended.
  EXPECT_THAT(tok.Encode("<s>a b", false), ElementsAre(0, 3, 6));
  EXPECT_THAT(tok.Encode("a c", false), ElementsAre(5, 2, 1));
  EXPECT_EQ(tok.Decode({5, 6}, false), "a b");
}

}  // namespace
}  // namespace oft
