#include "server/model/tokenizer/decoders.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Apply(const char* json, std::vector<std::string> tokens) {
  auto d = ParseDecoder(Json::parse(json), "decoder");
  EXPECT_TRUE(d.ok()) << d.status();
  if (!d.ok()) return {};
  (*d)->DecodeChain(&tokens);
  return tokens;
}

TEST(DecodersTest, ByteLevelInvertsTheByteTable) {
  EXPECT_THAT(Apply(R"({"type": "ByteLevel"})", {"hi", "Ġthere", "Ċ"}), ElementsAre("hi there\n"));
  // Bytes of a split character join up again; a lone byte becomes U+FFFD.
  EXPECT_THAT(Apply(R"({"type": "ByteLevel"})", {"Ã", "©"}), ElementsAre("é"));
  EXPECT_THAT(Apply(R"({"type": "ByteLevel"})", {"Ã"}), ElementsAre("\xEF\xBF\xBD"));
  // A token outside the table (an added token) is kept as it is.
  EXPECT_THAT(Apply(R"({"type": "ByteLevel"})", {"▁x", "Ġa"}), ElementsAre("▁x a"));
}

TEST(DecodersTest, ByteFallbackJoinsByteTokens) {
  EXPECT_THAT(Apply(R"({"type": "ByteFallback"})", {"a", "<0xC3>", "<0xA9>", "b"}),
              ElementsAre("a", "é", "b"));
  EXPECT_THAT(Apply(R"({"type": "ByteFallback"})", {"<0xC3>", "x"}),
              ElementsAre("\xEF\xBF\xBD", "x"));
  EXPECT_THAT(Apply(R"({"type": "ByteFallback"})", {"<0xZZ>"}), ElementsAre("<0xZZ>"));
}

TEST(DecodersTest, SentencePieceChain) {
  // The Llama 2 decoder: ▁ -> space, byte fallback, fuse, strip one leading space.
  EXPECT_THAT(Apply(R"({"type": "Sequence", "decoders": [
                        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                        {"type": "ByteFallback"}, {"type": "Fuse"},
                        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})",
                    {"▁hi", "▁the", "re", "<0xC3>", "<0xA9>"}),
              ElementsAre("hi thereé"));
}

TEST(DecodersTest, StripAndMetaspace) {
  EXPECT_THAT(Apply(R"({"type": "Strip", "content": "x", "start": 2, "stop": 1})", {"xxxaxx"}),
              ElementsAre("xax"));
  EXPECT_THAT(Apply(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})",
                    {"▁hi", "▁there"}),
              ElementsAre("hi", " there"));
  EXPECT_THAT(
      Apply(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never"})", {"▁hi"}),
      ElementsAre(" hi"));
}

TEST(DecodersTest, ErrorsNameTypeAndPath) {
  auto d = ParseDecoder(Json::parse(R"({"type": "Sequence", "decoders": [{"type": "CTC"}]})"),
                        "decoder");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(d.status().message(), HasSubstr("decoder.decoders[0].type is \"CTC\""));
  d = ParseDecoder(Json::parse(R"({"type": "Strip", "content": "ab"})"), "decoder");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("decoder.content: expected a single character"));
}

}  // namespace
}  // namespace oft::tokenizer
