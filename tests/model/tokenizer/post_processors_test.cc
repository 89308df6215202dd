#include "server/model/tokenizer/post_processors.h"

#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kTemplate[] = R"({"type": "TemplateProcessing",
  "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A"}},
             {"SpecialToken": {"id": "</s>", "type_id": 0}}],
  "special_tokens": {"<s>": {"id": "<s>", "ids": [1]}, "</s>": {"id": "</s>", "ids": [2]}}})";

TEST(PostProcessorsTest, TemplateWrapsTheSequence) {
  auto p = ParsePostProcessor(Json::parse(kTemplate), "post_processor");
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<int32_t> ids = {7, 8};
  (*p)->Process(&ids);
  EXPECT_THAT(ids, ElementsAre(1, 7, 8, 2));
  std::optional<int32_t> before, after;
  (*p)->SpecialIds(&before, &after);
  EXPECT_EQ(before, 1);
  EXPECT_EQ(after, 2);
}

TEST(PostProcessorsTest, RobertaSequenceAndByteLevel) {
  auto p = ParsePostProcessor(Json::parse(R"({"type": "Sequence", "processors": [
      {"type": "ByteLevel"},
      {"type": "RobertaProcessing", "cls": ["<s>", 0], "sep": ["</s>", 2]}]})"),
                              "post_processor");
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<int32_t> ids = {5};
  (*p)->Process(&ids);
  EXPECT_THAT(ids, ElementsAre(0, 5, 2));
  auto noop = ParsePostProcessor(Json::parse(R"({"type": "ByteLevel"})"), "post_processor");
  ASSERT_TRUE(noop.ok());
  std::optional<int32_t> before, after;
  (*noop)->SpecialIds(&before, &after);
  EXPECT_FALSE(before.has_value());
}

TEST(PostProcessorsTest, TemplateErrorsNameThePath) {
  auto p = ParsePostProcessor(Json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>"}}], "special_tokens": {"<s>": {"ids": [1]}}})"),
                              "post_processor");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("post_processor.single: the single template has no"));
  p = ParsePostProcessor(Json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<x>"}}, {"Sequence": {"id": "A"}}],
      "special_tokens": {}})"),
                         "post_processor");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(),
              HasSubstr("no entry for \"<x>\" used by post_processor.single[0]"));
  p = ParsePostProcessor(Json::parse(R"({"type": "BertProcessing", "cls": ["[CLS]"],
                                         "sep": ["[SEP]", 3]})"),
                         "post_processor");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("post_processor.cls: expected [token, id]"));
  p = ParsePostProcessor(Json::parse(R"({"type": "TemplateProcessing2"})"), "post_processor");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace oft::tokenizer
