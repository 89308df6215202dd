// One rule for special tokens at every entry point, checked against transformers: for each
// family's tokenizer directory made by make_special_token_fixtures.py (transformers' own
// tokenizer classes, released files' special-token setups, the embedded default model), the
// prompt ids of
//   * gRPC Generate and the HTTP completions API (both Serving::Generate -> PromptIds),
//   * oft_generate (Tokenizer::Encode with special tokens),
// equal AutoTokenizer.from_pretrained(dir)(text).input_ids, and a training text row
// (TokenizeExample through TokenizerTextEncoder: gRPC and HTTP fine-tuning jobs, oft_train,
// oft_train_worker) is those ids plus the EOS it trains on. Chat prompts and chat training
// rows equal apply_chat_template(tokenize=True): no special tokens beyond the template's.
// The fixture directory comes from OFT_SPECIAL_TOKEN_FIXTURES (set by ctest); without it the
// tests skip.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "server/data/batching.h"
#include "server/data/chat_template.h"
#include "server/model/tokenizer.h"
#include "server/serving/prompt_ids.h"
#include "server/train/text_encoder.h"

namespace oft {
namespace {

std::string FixtureDir() {
  const char* d = std::getenv("OFT_SPECIAL_TOKEN_FIXTURES");
  return d ? d : "";
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

std::vector<Message> Conversation(bool ends_with_assistant) {
  std::vector<Message> m = {{"user", "What is 7 plus 5?"},
                            {"assistant", "12"},
                            {"user", "And 3 plus 4?"}};
  if (ends_with_assistant) m.push_back({"assistant", "7"});
  return m;
}

TEST(SpecialTokensParity, EveryEntryPointEqualsAutoTokenizer) {
  if (FixtureDir().empty()) GTEST_SKIP() << "OFT_SPECIAL_TOKEN_FIXTURES not set";
  const nlohmann::json manifest = ReadJson(FixtureDir() + "/manifest.json");
  ASSERT_GE(manifest["cases"].size(), 10u);
  int chat_cases = 0;
  for (const auto& case_name : manifest["cases"]) {
    const std::string name = case_name.get<std::string>();
    SCOPED_TRACE(name);
    const std::string dir = FixtureDir() + "/" + name;
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(dir + "/tokenizer.json");
    ASSERT_TRUE(tok.ok()) << tok.status();
    const nlohmann::json cases = ReadJson(dir + "/cases.json");
    const std::optional<int32_t> eos =
        cases["eos_id"].is_null() ? std::nullopt
                                  : std::optional<int32_t>(cases["eos_id"].get<int32_t>());
    EXPECT_EQ((*tok)->eos_id(), eos);
    TokenizerTextEncoder encoder(**tok);
    for (size_t i = 0; i < cases["texts"].size(); ++i) {
      const std::string text = cases["texts"][i].get<std::string>();
      const std::vector<int32_t> expected = cases["ids"][i].get<std::vector<int32_t>>();
      SCOPED_TRACE(text);
      // oft_generate.
      EXPECT_EQ((*tok)->Encode(text, /*add_special_tokens=*/true), expected);
      // gRPC Generate and HTTP /v1/completions.
      GenerateParams params;
      params.text = text;
      absl::StatusOr<std::vector<int32_t>> prompt = PromptIds(**tok, std::nullopt, name, params);
      ASSERT_TRUE(prompt.ok()) << prompt.status();
      EXPECT_EQ(*prompt, expected);
      // Training: a text row is the same ids, then the EOS it learns to end with.
      Example row;
      row.format = RowFormat::kText;
      row.text = text;
      absl::StatusOr<TokenizedExample> trained = TokenizeExample(row, encoder, TokenizeOptions{});
      ASSERT_TRUE(trained.ok()) << trained.status();
      std::vector<int32_t> with_eos = expected;
      if (eos && with_eos.back() != *eos) with_eos.push_back(*eos);
      EXPECT_EQ(trained->ids, with_eos);
    }
    if (cases["chat"].is_null()) continue;
    ++chat_cases;
    absl::StatusOr<ChatTemplateKind> kind =
        ParseTemplateName(cases["chat"]["template"].get<std::string>());
    ASSERT_TRUE(kind.ok()) << kind.status();
    GenerateParams params;
    params.chat = Conversation(/*ends_with_assistant=*/false);
    absl::StatusOr<std::vector<int32_t>> prompt = PromptIds(**tok, *kind, name, params);
    ASSERT_TRUE(prompt.ok()) << prompt.status();
    EXPECT_EQ(*prompt, cases["chat"]["prompt_ids"].get<std::vector<int32_t>>());
    Example row;
    row.format = RowFormat::kChat;
    row.messages = Conversation(/*ends_with_assistant=*/true);
    TokenizeOptions options;
    options.chat_template = *kind;
    absl::StatusOr<TokenizedExample> trained = TokenizeExample(row, encoder, options);
    ASSERT_TRUE(trained.ok()) << trained.status();
    EXPECT_EQ(trained->ids, cases["chat"]["train_ids"].get<std::vector<int32_t>>());
  }
  EXPECT_GE(chat_cases, 2);
}

}  // namespace
}  // namespace oft
