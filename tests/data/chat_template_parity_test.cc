// Chat templates against transformers: every rendering recorded by
// make_chat_template_fixtures.py (apply_chat_template over multi-turn conversations, with and
// without the generation prompt, Qwen3's enable_thinking) must equal RenderChat's text, and
// each fixture model directory must be detected as its template (tokenizer_config.json, or
// chat_template.jinja for phi3).
// Usage: chat_template_parity_test FIXTURE_DIR.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/data/chat_template.h"

namespace oft {
namespace {

std::string g_fixture_dir;  // set by main

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

std::string Concat(const std::vector<Segment>& segments) {
  std::string out;
  for (const Segment& s : segments) out += s.text;
  return out;
}

TEST(ChatTemplateParity, RenderingsEqualApplyChatTemplate) {
  const nlohmann::json manifest = ReadJson(g_fixture_dir + "/manifest.json");
  ASSERT_EQ(manifest.size(), 3u);
  for (const auto& entry : manifest) {
    const std::string name = entry.get<std::string>();
    SCOPED_TRACE(name);
    absl::StatusOr<ChatTemplateKind> named = ParseTemplateName(name);
    ASSERT_TRUE(named.ok()) << named.status();
    absl::StatusOr<ChatTemplateKind> detected = DetectTemplateInDir(g_fixture_dir + "/" + name);
    ASSERT_TRUE(detected.ok()) << detected.status();
    EXPECT_EQ(*detected, *named);
    const nlohmann::json cases = ReadJson(g_fixture_dir + "/" + name + ".cases.json");
    ASSERT_GE(cases.size(), 8u);
    int index = 0;
    for (const auto& c : cases) {
      std::vector<Message> messages;
      for (const auto& m : c.at("messages")) {
        messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
      }
      ChatRenderOptions options;
      options.add_generation_prompt = c.at("add_generation_prompt").get<bool>();
      if (!c.at("enable_thinking").is_null()) {
        options.enable_thinking = c.at("enable_thinking").get<bool>();
      }
      ASSERT_TRUE(ValidateChat(*named, messages).ok()) << "case " << index;
      const std::vector<Segment> segments = RenderChat(*named, messages, options);
      EXPECT_EQ(Concat(segments), c.at("rendered").get<std::string>())
          << "case " << index << ": " << c.dump();
      ++index;
    }
  }
}

}  // namespace
}  // namespace oft

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    fprintf(stderr, "usage: chat_template_parity_test FIXTURE_DIR\n");
    return 2;
  }
  oft::g_fixture_dir = argv[1];
  return RUN_ALL_TESTS();
}
