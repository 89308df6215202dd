#include "server/model/tokenizer/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace oft::tokenizer {
namespace {

TEST(Utf8Test, SequenceLengthFromLeadByte) {
  EXPECT_EQ(Utf8SeqLen('a'), 1u);
  EXPECT_EQ(Utf8SeqLen(0xC3), 2u);  // é
  EXPECT_EQ(Utf8SeqLen(0xE2), 3u);  // ▁
  EXPECT_EQ(Utf8SeqLen(0xF0), 4u);  // emoji
}

TEST(Utf8Test, EncodeDecodeRoundTripsEveryLength) {
  for (uint32_t cp : {0x41u, 0xE9u, 0x2581u, 0x1F600u, 0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xFFFFu,
                      0x10000u, 0x10FFFFu}) {
    std::string s;
    AppendUtf8(cp, &s);
    EXPECT_EQ(s.size(), Utf8SeqLen(s[0])) << cp;
    EXPECT_EQ(DecodeUtf8(s, 0), cp) << cp;
    EXPECT_TRUE(IsValidUtf8(s)) << cp;
  }
  std::string s;
  AppendUtf8(0x2581, &s);
  EXPECT_EQ(s, "\xE2\x96\x81");
}

TEST(Utf8Test, RejectsIllFormedSequences) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9llo"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // Truncated.
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // Overlong '/'.
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // Surrogate U+D800.
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // Above U+10FFFF.
  EXPECT_FALSE(IsValidUtf8("\x80"));              // Lone continuation byte.
}

TEST(Utf8Test, LossyReplacesMaximalSubparts) {
  // As Rust's String::from_utf8_lossy: one U+FFFD per maximal ill-formed subpart.
  EXPECT_EQ(Utf8Lossy("a\xF0\x9F\x98"
                      "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(Utf8Lossy("\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(Utf8Lossy("ok \xC3\xA9"), "ok \xC3\xA9");
  size_t bad = 0;
  EXPECT_EQ(WellFormedLen("\xE2\x96", 0, &bad), 0u);
  EXPECT_EQ(bad, 2u);
}

TEST(Utf8Test, WhitespaceIsTheUnicodeProperty) {
  for (uint32_t c : {0x20u, 0x09u, 0x0Au, 0x0Du, 0x85u, 0xA0u, 0x3000u, 0x2028u}) {
    EXPECT_TRUE(IsWhitespace(c)) << c;
  }
  for (uint32_t c : {0x41u, 0x200Bu, 0x2581u, 0x5Fu}) EXPECT_FALSE(IsWhitespace(c)) << c;
}

}  // namespace
}  // namespace oft::tokenizer
