#include "server/data/dataset.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct BadFileCase {
  std::string name;
  std::string contents;
  std::string expected;  // the whole message, or its start when `prefix_only`
  bool prefix_only = false;
  DatasetLimits limits = {};
};

DatasetLimits SmallLimits() {
  DatasetLimits limits;
  limits.max_line_bytes = 64;
  limits.max_rows = 2;
  limits.max_file_bytes = 200;
  limits.max_messages = 2;
  return limits;
}

std::vector<BadFileCase> BadFiles() {
  const std::string ok = "{\"text\": \"fine\"}\n";
  const std::string chat_ok =
      R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})"
      "\n";
  std::vector<BadFileCase> cases = {
      {"BadJson", ok + "\n{\"text\": nope}\n",
       "line 3: invalid JSON: column 11: syntax error while parsing value - invalid literal", true},
      {"TrailingGarbage", "{\"text\": \"a\"} x\n", "line 1: invalid JSON: column 15: syntax error",
       true},
      {"TruncatedObject", "{\"text\": \"a\"", "line 1: invalid JSON: ", true},
      {"RawControlCharInString", std::string("{\"text\": \"a\0b\"}", 15),
       "line 1: invalid JSON: ", true},
      {"LoneSurrogateEscape", R"({"text": "\ud800"})", "line 1: invalid JSON: ", true},
      {"MissingCompletion", R"({"prompt": "p"})",
       "line 1: missing field \"completion\" (row has \"prompt\")"},
      {"MissingPrompt", ok.substr(0, 0) + "\n" + R"({"completion": "c"})",
       "line 2: missing field \"prompt\" (row has \"completion\")"},
      {"EmptyText", ok + ok + "\n" + R"({"text": ""})", "line 4: \"text\" is empty"},
      {"WhitespaceCompletion", R"({"prompt": "p", "completion": " \n\t"})",
       "line 1: \"completion\" is only whitespace"},
      {"UnicodeWhitespaceText", "{\"text\": \"\xC2\xA0\xE3\x80\x80\"}",
       "line 1: \"text\" is only whitespace"},
      {"TextNotString", R"({"text": 5})", "line 1: \"text\" must be a string, got number"},
      {"PromptNotString", R"({"prompt": ["a"], "completion": "c"})",
       "line 1: \"prompt\" must be a string, got array"},
      {"MessagesNotArray", R"({"messages": "hi"})",
       "line 1: \"messages\" must be an array, got string"},
      {"MessagesEmpty", R"({"messages": []})", "line 1: \"messages\" is empty"},
      {"MessageNotObject", R"({"messages": [1]})",
       "line 1: messages[0] must be an object, got number"},
      {"MessageMissingRole", R"({"messages": [{"content": "x"}]})",
       "line 1: messages[0]: missing field \"role\""},
      {"RoleNotString", R"({"messages": [{"role": 1, "content": "x"}]})",
       "line 1: messages[0]: \"role\" must be a string, got number"},
      {"UnknownRole",
       R"({"messages": [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}]})",
       "line 1: messages[1]: \"role\" is \"bot\", expected \"system\", \"user\" or "
       "\"assistant\""},
      {"ContentNull", R"({"messages": [{"role": "user", "content": null}]})",
       "line 1: messages[0]: \"content\" must be a string, got null"},
      {"ContentEmpty",
       R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]})",
       "line 1: messages[1]: \"content\" is empty"},
      {"NoAssistant",
       R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}]})",
       "line 1: \"messages\" has no \"assistant\" message, so nothing would be trained"},
      {"MixedFormatsAcrossRows", ok + "\n" + R"({"prompt": "p", "completion": "c"})",
       "line 3: row is prompt/completion but line 1 is text; all rows must use one format"},
      {"MixedFormatsInRow", R"({"text": "t", "messages": []})",
       "line 1: row mixes formats: it has \"text\" and \"messages\"; use exactly one of "
       "\"text\", \"prompt\"+\"completion\" or \"messages\""},
      {"NoKnownField", R"({"foo": 1, "bar": 2})",
       "line 1: row has none of the fields \"text\", \"prompt\"+\"completion\" or "
       "\"messages\" (row has \"bar\", \"foo\")"},
      {"EmptyObject", "{}",
       "line 1: row has none of the fields \"text\", \"prompt\"+\"completion\" or "
       "\"messages\" (the object is empty)"},
      {"HostileKeyIsQuoted", "{\"a\\nb\\\"c\": 1}",
       "line 1: row has none of the fields \"text\", \"prompt\"+\"completion\" or "
       "\"messages\" (row has \"a\\u000ab\\\"c\")"},
      {"RowIsArray", "[1, 2]", "line 1: row must be a JSON object, got array"},
      {"RowIsString", "\"text\"", "line 1: row must be a JSON object, got string"},
      {"RowIsNull", "null", "line 1: row must be a JSON object, got null"},
      {"InvalidUtf8Byte", "{\"text\": \"a\xFF\"}", "line 1: invalid UTF-8 at column 12"},
      {"OverlongUtf8", "{\"text\": \"\xC0\xAF\"}", "line 1: invalid UTF-8 at column 11"},
      {"SurrogateUtf8", "{\"text\": \"\xED\xA0\x80\"}", "line 1: invalid UTF-8 at column 11"},
      {"AboveMaxCodePoint", "{\"text\": \"\xF4\x90\x80\x80\"}",
       "line 1: invalid UTF-8 at column 11"},
      {"Utf8CutAtLineEnd", ok + "{\"text\": \"\xE2\x82", "line 2: invalid UTF-8 at column 11"},
      {"EmptyFile", "", "dataset is empty: it has no non-blank lines"},
      {"OnlyBlankLines", "\n  \n\t\r\n", "dataset is empty: it has no non-blank lines"},
      {"DeepNesting",
       "{\"text\": \"a\", \"x\": " + std::string(100000, '[') + std::string(100000, ']') + "}",
       "line 1: JSON nested deeper than 32 levels"},
      {"DeepUnbalancedNesting", std::string(1000000, '{'),
       "line 1: JSON nested deeper than 32 levels"},
      {"OverLongRowDefaultLimit",
       ok + ok + ok + ok + ok + ok + ok + ok + "{\"text\": \"" + std::string(2000000 - 12, 'a') +
           "\"}",
       "line 9: row is 2000000 bytes, over the limit of 1048576"},
      // Small limits.
      {"OverLongRow", ok + "{\"text\": \"" + std::string(100 - 12, 'a') + "\"}",
       "line 2: row is 100 bytes, over the limit of 64", false, SmallLimits()},
      {"TooManyRows", ok + ok + ok,
       "line 3: dataset has more than 2 rows, the limit; split the file", false, SmallLimits()},
      {"TooManyMessages",
       R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},)"
       R"( {"role": "user", "content": "z"}]})",
       "line 1: \"messages\" has 3 entries, over the limit of 2", false,
       [] {
         DatasetLimits l;
         l.max_messages = 2;
         return l;
       }()},
      {"FileTooLarge", std::string(201, ' '), "dataset is 201 bytes, over the limit of 200", false,
       SmallLimits()},
  };
  (void)chat_ok;
  return cases;
}

void PrintTo(const BadFileCase& c, std::ostream* os) { *os << c.name; }

class BadFileTest : public ::testing::TestWithParam<BadFileCase> {};

TEST_P(BadFileTest, RejectedWithLineAndReason) {
  const BadFileCase& c = GetParam();
  absl::StatusOr<std::vector<Example>> result = ParseJsonl(c.contents, c.limits);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  if (c.prefix_only) {
    EXPECT_THAT(std::string(result.status().message()), StartsWith(c.expected));
    // The parser's message is kept short whatever the row holds.
    EXPECT_LT(result.status().message().size(), 300u);
  } else {
    EXPECT_EQ(result.status().message(), c.expected);
  }
}

INSTANTIATE_TEST_SUITE_P(Table, BadFileTest, ::testing::ValuesIn(BadFiles()),
                         [](const auto& info) { return info.param.name; });

TEST(ParseJsonlTest, ReportsAllErrorsUpToTheLimit) {
  const std::string contents =
      "{\"text\": \"ok\"}\n"
      "{\"text\": \"\"}\n"
      "{\"text\": 1}\n"
      "\n"
      "{\"prompt\": \"p\", \"completion\": \"c\"}\n"
      "oops\n";
  absl::StatusOr<std::vector<Example>> result = ParseJsonl(contents);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()),
              StartsWith("line 2: \"text\" is empty\n"
                         "line 3: \"text\" must be a string, got number\n"
                         "line 5: row is prompt/completion but line 1 is text; all rows must use "
                         "one format\n"
                         "line 6: invalid JSON: "));

  DatasetLimits limits;
  limits.max_errors = 2;
  result = ParseJsonl(contents, limits);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(),
            "line 2: \"text\" is empty\n"
            "line 3: \"text\" must be a string, got number\n"
            "(and 2 more not shown)");
}

TEST(ParseJsonlTest, FirstValidRowSetsTheFormat) {
  // A bad first row does not decide the format: the chat rows after it are fine.
  const std::string contents =
      "{\"text\": 3}\n"
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})";
  absl::StatusOr<std::vector<Example>> result = ParseJsonl(contents);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(), "line 1: \"text\" must be a string, got number");
}

TEST(ParseJsonlTest, ParsesTextRows) {
  absl::StatusOr<std::vector<Example>> result =
      ParseJsonl("{\"text\": \"hello\", \"id\": 7}\n\n{\"text\": \" world \"}");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->size(), 2u);
  EXPECT_EQ((*result)[0].format, RowFormat::kText);
  EXPECT_EQ((*result)[0].text, "hello");
  EXPECT_EQ((*result)[0].line, 1);
  EXPECT_EQ((*result)[1].text, " world ");  // kept as written
  EXPECT_EQ((*result)[1].line, 3);          // blank line counted
}

TEST(ParseJsonlTest, ParsesPromptCompletionRows) {
  absl::StatusOr<std::vector<Example>> result =
      ParseJsonl(R"({"prompt": "Q: 1+1?", "completion": " 2"})");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->size(), 1u);
  EXPECT_EQ((*result)[0].format, RowFormat::kPromptCompletion);
  EXPECT_EQ((*result)[0].prompt, "Q: 1+1?");
  EXPECT_EQ((*result)[0].completion, " 2");
  EXPECT_TRUE((*result)[0].text.empty());
}

TEST(ParseJsonlTest, ParsesChatRows) {
  absl::StatusOr<std::vector<Example>> result = ParseJsonl(
      R"({"messages": [{"role": "system", "content": "Be brief."},)"
      R"( {"role": "user", "content": "Hi \u00e9"}, {"role": "assistant", "content": "Hello",)"
      R"( "weight": 1}]})");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->size(), 1u);
  const Example& e = (*result)[0];
  EXPECT_EQ(e.format, RowFormat::kChat);
  ASSERT_EQ(e.messages.size(), 3u);
  EXPECT_EQ(e.messages[0].role, "system");
  EXPECT_EQ(e.messages[1].content, "Hi \xC3\xA9");
  EXPECT_EQ(e.messages[2].role, "assistant");
  EXPECT_EQ(e.messages[2].content, "Hello");
}

TEST(ParseJsonlTest, AcceptsCrlfBomAndMissingFinalNewline) {
  absl::StatusOr<std::vector<Example>> result =
      ParseJsonl("\xEF\xBB\xBF{\"text\": \"a\"}\r\n\r\n{\"text\": \"b\"}");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->size(), 2u);
  EXPECT_EQ((*result)[1].text, "b");
  EXPECT_EQ((*result)[1].line, 3);
}

TEST(ParseJsonlTest, AcceptsNestingUpToTheLimit) {
  DatasetLimits limits;
  limits.max_json_depth = 4;
  // Depth 4: the row, "meta", and two nested arrays.
  EXPECT_TRUE(ParseJsonl(R"({"text": "a", "meta": {"x": [[1]]}})", limits).ok());
  EXPECT_FALSE(ParseJsonl(R"({"text": "a", "meta": {"x": [[[1]]]}})", limits).ok());
  // Brackets inside strings do not count.
  EXPECT_TRUE(ParseJsonl(R"({"text": "[[[[[[{{{{{ \" [[[["})", limits).ok());
}

TEST(ParseJsonlTest, RowAtExactlyTheLineLimitIsAccepted) {
  DatasetLimits limits;
  limits.max_line_bytes = 64;
  const std::string row = "{\"text\": \"" + std::string(64 - 12, 'a') + "\"}";
  ASSERT_EQ(row.size(), 64u);
  EXPECT_TRUE(ParseJsonl(row, limits).ok());
}

TEST(ValidateJsonlTest, Summarizes) {
  const std::string contents = "{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n";
  absl::StatusOr<DatasetSummary> summary = ValidateJsonl(contents);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->rows, 2);
  EXPECT_EQ(summary->format, RowFormat::kText);
  EXPECT_EQ(summary->total_bytes, static_cast<int64_t>(contents.size()));
  EXPECT_EQ(summary->blank_lines, 1);
  EXPECT_FALSE(ValidateJsonl("{").ok());
}

TEST(ParseJsonlFileTest, ReadsAFileAndReportsMissingOnes) {
  const std::string dir = ::testing::TempDir();
  const std::string path = absl::StrCat(dir, "/dataset_test.jsonl");
  {
    std::ofstream out(path, std::ios::binary);
    out << "{\"prompt\": \"p\", \"completion\": \"c\"}\n";
  }
  absl::StatusOr<std::vector<Example>> result = ParseJsonlFile(path);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->size(), 1u);

  DatasetLimits limits;
  limits.max_file_bytes = 10;
  result = ParseJsonlFile(path, limits);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("over the limit of 10"));

  std::filesystem::remove(path);
  EXPECT_EQ(ParseJsonlFile(path).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseJsonlFile(dir).status().code(), absl::StatusCode::kInvalidArgument);
}

// Random corruption of a valid file must give OK or INVALID_ARGUMENT, never a crash.
TEST(ParseJsonlTest, SurvivesRandomCorruption) {
  const std::string valid =
      R"({"messages": [{"role": "user", "content": "Hi \u00e9 there"}, )"
      R"({"role": "assistant", "content": "Hello \ud83d\ude00"}]})"
      "\n"
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, )"
      R"({"role": "assistant", "content": "a"}], "extra": {"k": [1, 2.5, null, true]}})"
      "\n";
  std::mt19937 rng(42);
  const std::string alphabet = "{}[]\":,\\ \n\r\tu0aZ\x80\xC3\xFF\xED\xF4";
  int ok = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % s.size();
      switch (rng() % 3) {
        case 0:
          s[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          s.erase(pos, 1 + rng() % 3);
          break;
        default:
          s.insert(pos, 1, alphabet[rng() % alphabet.size()]);
      }
      if (s.empty()) s.push_back('x');  // (not s = "x": a GCC 12 -Wrestrict false positive)
    }
    absl::StatusOr<std::vector<Example>> result = ParseJsonl(s);
    if (result.ok()) {
      ++ok;
    } else {
      ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    }
  }
  EXPECT_LT(ok, 3000);  // the corruption did reach the parser
}

TEST(TextTest, TrimWhitespaceIsUnicodeAware) {
  EXPECT_EQ(TrimWhitespace(" \t\nab c\r\n"), "ab c");
  EXPECT_EQ(TrimWhitespace("\xC2\xA0x\xE3\x80\x80"), "x");  // U+00A0, U+3000
  EXPECT_EQ(TrimWhitespace("\xC3\xA9"), "\xC3\xA9");        // é is not space
  EXPECT_EQ(TrimWhitespace("   "), "");
  EXPECT_TRUE(IsBlank(""));
  EXPECT_TRUE(IsBlank("\xE2\x80\x80 \x0B"));
  EXPECT_FALSE(IsBlank(" . "));
}

}  // namespace
}  // namespace oft
