// Parity with the Hugging Face `tokenizers` library: every case recorded by
// make_tokenizer_fixtures.py must encode id-for-id and decode string-for-string.
// Usage: tokenizer_parity_test FIXTURE_DIR (or env OFT_TOKENIZER_FIXTURES).
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "server/model/tokenizer.h"

namespace oft {
namespace {

std::string g_fixture_dir;  // Set by main before the tests run.

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Shows a string with its control characters visible, for failure messages.
std::string Visible(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20) {
      out += absl::StrCat("\\x", c / 16, c % 16);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return "\"" + out + "\"";
}

// Empty when equal; otherwise where `got` and `want` first differ, with some context.
std::string Diff(const std::string& got, const std::string& want) {
  if (got == want) return "";
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  const size_t from = i < 20 ? 0 : i - 20;
  return absl::StrCat("first difference at byte ", i, " (got ", got.size(), " bytes, want ",
                      want.size(), " bytes)\n  got  ...", Visible(got.substr(from, 60)),
                      "\n  want ...", Visible(want.substr(from, 60)));
}

// At most the first 200 bytes of `s`, made visible.
std::string Short(const std::string& s) {
  return s.size() <= 200 ? Visible(s) : Visible(s.substr(0, 200)) + "...";
}

// At most the first 40 ids.
std::string ShortIds(const std::vector<int32_t>& ids) {
  if (ids.size() <= 40) return absl::StrCat("[", absl::StrJoin(ids, ","), "]");
  return absl::StrCat("[", absl::StrJoin(ids.begin(), ids.begin() + 40, ","), ",... (", ids.size(),
                      " ids)]");
}

// Empty when equal; otherwise the first differing position and its neighbourhood.
std::string IdDiff(const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  if (got == want) return "";
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  const size_t from = i < 5 ? 0 : i - 5;
  const auto window = [&](const std::vector<int32_t>& v) {
    return std::vector<int32_t>(v.begin() + std::min(from, v.size()),
                                v.begin() + std::min(from + 15, v.size()));
  };
  return absl::StrCat("first difference at id ", i, " (got ", got.size(), " ids, want ",
                      want.size(), ")\n  got  ...", ShortIds(window(got)), "\n  want ...",
                      ShortIds(window(want)));
}

std::vector<int32_t> Ids(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, MatchesHuggingFace) {
  const std::string name = GetParam();
  const std::string tok_path = g_fixture_dir + "/" + name + ".tokenizer.json";
  auto tokenizer = Tokenizer::FromFile(tok_path);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Tokenizer& tok = **tokenizer;
  const nlohmann::json cases =
      nlohmann::json::parse(ReadFile(g_fixture_dir + "/" + name + ".cases.json"));

  int checked = 0;
  for (const auto& c : cases["encode"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> want = Ids(c["ids"]);
    const std::vector<int32_t> got = tok.Encode(text, /*add_special_tokens=*/true);
    ASSERT_EQ(IdDiff(got, want), "") << name << ": encode(" << Short(text) << ", special=true)";
    const std::vector<int32_t> want_plain = Ids(c["ids_plain"]);
    ASSERT_EQ(IdDiff(tok.Encode(text, /*add_special_tokens=*/false), want_plain), "")
        << name << ": encode(" << Short(text) << ", special=false)";
    ASSERT_EQ(Diff(tok.Decode(want, false), c["decoded"].get<std::string>()), "")
        << name << ": decode(" << ShortIds(want) << ") of " << Short(text);
    ASSERT_EQ(Diff(tok.Decode(want, true), c["decoded_skip"].get<std::string>()), "")
        << name << ": decode(" << ShortIds(want) << ", skip_special) of " << Short(text);
    ++checked;
  }
  for (const auto& c : cases["decode"]) {
    const std::vector<int32_t> ids = Ids(c["ids"]);
    ASSERT_EQ(Diff(tok.Decode(ids, false), c["decoded"].get<std::string>()), "")
        << name << ": decode(" << ShortIds(ids) << ")";
    ASSERT_EQ(Diff(tok.Decode(ids, true), c["decoded_skip"].get<std::string>()), "")
        << name << ": decode(" << ShortIds(ids) << ", skip_special)";
    ++checked;
  }
  EXPECT_GT(checked, 100) << "the fixture for " << name << " has too few cases";

  if (!cases["big"].is_null()) {
    const std::string text = cases["big"]["text"].get<std::string>();
    const std::vector<int32_t> want = Ids(cases["big"]["ids"]);
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int32_t> got = tok.Encode(text, /*add_special_tokens=*/false);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_EQ(IdDiff(got, want), "") << name << ": encoding the 1 MB corpus";
    std::cout << name << ": encoded " << text.size() << " bytes into " << got.size()
              << " tokens in " << seconds << " s\n";
    // Speed is reported, not asserted: a correctness test must not fail on a busy or
    // sanitized machine (bench/ measures speed).
  }
  std::cout << name << ": " << checked << " cases match\n";
}

std::vector<std::string> FixtureNames() {
  const char* env = std::getenv("OFT_TOKENIZER_FIXTURES");
  if (g_fixture_dir.empty() && env != nullptr) g_fixture_dir = env;
  if (g_fixture_dir.empty()) return {};
  const std::string manifest = ReadFile(g_fixture_dir + "/manifest.json");
  if (manifest.empty()) return {};
  return nlohmann::json::parse(manifest)["tokenizers"].get<std::vector<std::string>>();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest, ::testing::ValuesIn(FixtureNames()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ParityTest);

TEST(ParityFixtures, Present) {
  ASSERT_FALSE(FixtureNames().empty())
      << "no fixtures: pass the directory written by make_tokenizer_fixtures.py as the first "
         "argument or in OFT_TOKENIZER_FIXTURES (got \""
      << g_fixture_dir << "\")";
}

}  // namespace
}  // namespace oft

int main(int argc, char** argv) {
  // The fixture list is read while InitGoogleTest registers the parameterized tests.
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]).rfind("--gtest", 0) != 0) oft::g_fixture_dir = argv[i];
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
