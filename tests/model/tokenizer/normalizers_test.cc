#include "server/model/tokenizer/normalizers.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft::tokenizer {
namespace {

using ::testing::HasSubstr;

std::string Apply(const char* json, std::string s) {
  auto n = ParseNormalizer(Json::parse(json), "normalizer");
  EXPECT_TRUE(n.ok()) << n.status();
  if (!n.ok()) return "";
  (*n)->Normalize(&s);
  return s;
}

TEST(NormalizersTest, PrependSkipsEmptyInput) {
  EXPECT_EQ(Apply(R"({"type": "Prepend", "prepend": "▁"})", "hi"), "▁hi");
  EXPECT_EQ(Apply(R"({"type": "Prepend", "prepend": "▁"})", ""), "");
}

TEST(NormalizersTest, ReplaceWithStringAndRegex) {
  EXPECT_EQ(Apply(R"({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})", "a b c"),
            "a▁b▁c");
  EXPECT_EQ(
      Apply(R"({"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "})", "a \t\n b"),
      "a b");
}

TEST(NormalizersTest, SequenceRunsInOrder) {
  // The Llama 2 normalizer: prepend then replace (so the prepended ▁ is not doubled).
  EXPECT_EQ(Apply(R"({"type": "Sequence", "normalizers": [
                    {"type": "Prepend", "prepend": "▁"},
                    {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})",
                  "hi there"),
            "▁hi▁there");
}

TEST(NormalizersTest, UnicodeNormalFormsOrAClearError) {
  auto n = ParseNormalizer(Json::parse(R"({"type": "NFC"})"), "normalizer");
#ifdef OFT_TOKENIZER_HAVE_ICU
  ASSERT_TRUE(n.ok()) << n.status();
  std::string s = "e\xCC\x81";  // e + combining acute.
  (*n)->Normalize(&s);
  EXPECT_EQ(s, "\xC3\xA9");
  EXPECT_EQ(Apply(R"({"type": "NFKD"})", "\xEF\xAC\x81"), "fi");  // U+FB01 ligature.
#else
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(n.status().message(), HasSubstr("ICU"));
#endif
}

TEST(NormalizersTest, ErrorsNameTypeAndPath) {
  auto n = ParseNormalizer(Json::parse(R"({"type": "Sequence", "normalizers": [
                                           {"type": "Lowercase"}]})"),
                           "normalizer");
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(n.status().message(), HasSubstr("normalizer.normalizers[0].type is \"Lowercase\""));
  n = ParseNormalizer(Json::parse(R"({"type": "Prepend"})"), "normalizer");
  ASSERT_FALSE(n.ok());
  EXPECT_THAT(n.status().message(), HasSubstr("normalizer.prepend: missing required field"));
}

}  // namespace
}  // namespace oft::tokenizer
