#include "server/data/chat_template.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oft {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Concat(const std::vector<Segment>& segments) {
  std::string out;
  for (const Segment& s : segments) out += s.text;
  return out;
}

std::string Trained(const std::vector<Segment>& segments) {
  std::string out;
  for (const Segment& s : segments) {
    if (s.train) out += s.text;
  }
  return out;
}

const std::vector<Message> kConversation = {
    {"system", "You are terse."}, {"user", " What is 2+2? "}, {"assistant", "4\n"},
    {"user", "And 3+3?"},         {"assistant", "6"},
};

TEST(RenderChatTest, Llama3MatchesTheReferenceTemplate) {
  const std::vector<Segment> segments =
      RenderChat(ChatTemplateKind::kLlama3, kConversation, /*add_generation_prompt=*/false);
  // Contents are trimmed, as `message['content'] | trim` does.
  EXPECT_EQ(Concat(segments),
            "<|begin_of_text|>"
            "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n6<|eot_id|>");
  EXPECT_THAT(segments, ElementsAre(Segment{"<|begin_of_text|>"
                                            "<|start_header_id|>system<|end_header_id|>\n\nYou are "
                                            "terse.<|eot_id|>"
                                            "<|start_header_id|>user<|end_header_id|>\n\nWhat is "
                                            "2+2?<|eot_id|>"
                                            "<|start_header_id|>assistant<|end_header_id|>\n\n",
                                            false},
                                    Segment{"4<|eot_id|>", true},
                                    Segment{"<|start_header_id|>user<|end_header_id|>\n\nAnd "
                                            "3+3?<|eot_id|>"
                                            "<|start_header_id|>assistant<|end_header_id|>\n\n",
                                            false},
                                    Segment{"6<|eot_id|>", true}));
}

TEST(RenderChatTest, Llama3GenerationPrompt) {
  const std::vector<Message> messages = {{"user", "Hi"}};
  const std::vector<Segment> segments =
      RenderChat(ChatTemplateKind::kLlama3, messages, /*add_generation_prompt=*/true);
  EXPECT_EQ(Concat(segments),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(Trained(segments), "");
}

TEST(RenderChatTest, ChatmlMatchesTheReferenceTemplate) {
  const std::vector<Segment> segments =
      RenderChat(ChatTemplateKind::kChatml, kConversation, /*add_generation_prompt=*/false);
  // ChatML does not trim.
  EXPECT_EQ(Concat(segments),
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\n What is 2+2? <|im_end|>\n"
            "<|im_start|>assistant\n4\n<|im_end|>\n"
            "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
            "<|im_start|>assistant\n6<|im_end|>\n");
  EXPECT_THAT(segments, ElementsAre(Segment{"<|im_start|>system\nYou are terse.<|im_end|>\n"
                                            "<|im_start|>user\n What is 2+2? <|im_end|>\n"
                                            "<|im_start|>assistant\n",
                                            false},
                                    Segment{"4\n<|im_end|>", true},
                                    Segment{"\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
                                            "<|im_start|>assistant\n",
                                            false},
                                    Segment{"6<|im_end|>", true}, Segment{"\n", false}));
}

TEST(RenderChatTest, Qwen2AddsTheDefaultSystemMessageOnlyWhenMissing) {
  const std::vector<Message> messages = {{"user", "Hi"}, {"assistant", "Hello!"}};
  EXPECT_EQ(Concat(RenderChat(ChatTemplateKind::kQwen2, messages, false)),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n");
  EXPECT_EQ(Concat(RenderChat(ChatTemplateKind::kQwen2_5, messages, true)),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>assistant\n");
  // With a system message of its own, no default is added.
  EXPECT_EQ(Concat(RenderChat(ChatTemplateKind::kQwen2, kConversation, false)),
            Concat(RenderChat(ChatTemplateKind::kChatml, kConversation, false)));
  // Plain ChatML never adds one.
  EXPECT_EQ(Concat(RenderChat(ChatTemplateKind::kChatml, messages, false)),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n");
}

TEST(RenderChatTest, OnlyAssistantTurnsAreTrained) {
  for (ChatTemplateKind kind : {ChatTemplateKind::kLlama3, ChatTemplateKind::kChatml,
                                ChatTemplateKind::kQwen2, ChatTemplateKind::kQwen2_5}) {
    const std::vector<Segment> segments = RenderChat(kind, kConversation, false);
    const std::string eot = kind == ChatTemplateKind::kLlama3 ? "<|eot_id|>" : "<|im_end|>";
    const std::string first = kind == ChatTemplateKind::kLlama3 ? "4" : "4\n";
    EXPECT_EQ(Trained(segments), first + eot + "6" + eot) << TemplateName(kind);
    // Segments alternate: adjacent ones with the same flag are merged.
    for (size_t i = 1; i < segments.size(); ++i) {
      EXPECT_NE(segments[i].train, segments[i - 1].train);
    }
  }
}

TEST(RenderExampleTest, TextAndPromptCompletion) {
  Example text;
  text.format = RowFormat::kText;
  text.text = "All of it.";
  RenderedExample r = RenderExample(text, ChatTemplateKind::kLlama3);
  EXPECT_THAT(r.segments, ElementsAre(Segment{"All of it.", true}));
  EXPECT_TRUE(r.append_eos);
  EXPECT_TRUE(r.add_special_tokens);

  Example pc;
  pc.format = RowFormat::kPromptCompletion;
  pc.prompt = "Q: 2+2?\nA:";
  pc.completion = " 4";
  r = RenderExample(pc, ChatTemplateKind::kLlama3);
  EXPECT_THAT(r.segments, ElementsAre(Segment{"Q: 2+2?\nA:", false}, Segment{" 4", true}));
  EXPECT_TRUE(r.append_eos);
  EXPECT_TRUE(r.add_special_tokens);

  Example chat;
  chat.format = RowFormat::kChat;
  chat.messages = {{"user", "u"}, {"assistant", "a"}};
  // Chat rows are tokenized as apply_chat_template does: the template's text only (llama3 and
  // gemma write their BOS marker themselves).
  for (ChatTemplateKind kind : AllTemplateKinds()) {
    r = RenderExample(chat, kind);
    EXPECT_FALSE(r.add_special_tokens) << TemplateName(kind);
    EXPECT_FALSE(r.append_eos) << TemplateName(kind);
  }
  r = RenderExample(chat, ChatTemplateKind::kGemma);
  EXPECT_FALSE(r.add_special_tokens);
  EXPECT_EQ(r.segments.front().text.substr(0, 5), "<bos>");
}

TEST(TemplateNameTest, RoundTrips) {
  ASSERT_EQ(AllTemplateKinds().size(), 7u);
  for (ChatTemplateKind kind : AllTemplateKinds()) {
    absl::StatusOr<ChatTemplateKind> parsed = ParseTemplateName(TemplateName(kind));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, kind);
  }
  absl::StatusOr<ChatTemplateKind> bad = ParseTemplateName("vicuna");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "unknown chat template \"vicuna\"; known: llama3, chatml, qwen2, qwen2.5, qwen3, gemma, "
            "phi3");
}

// Templates in the shape the models ship (abridged, written for this test).
constexpr char kLlama3Config[] = R"({
  "bos_token": "<|begin_of_text|>",
  "chat_template": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
  "eos_token": "<|eot_id|>"
})";

constexpr char kQwen2Config[] = R"({
  "chat_template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
})";

TEST(DetectTemplateTest, RecognisesBuiltIns) {
  absl::StatusOr<ChatTemplateKind> kind = DetectTemplate(kLlama3Config);
  ASSERT_TRUE(kind.ok()) << kind.status();
  EXPECT_EQ(*kind, ChatTemplateKind::kLlama3);

  kind = DetectTemplate(kQwen2Config);
  ASSERT_TRUE(kind.ok()) << kind.status();
  EXPECT_EQ(*kind, ChatTemplateKind::kQwen2);

  kind = DetectTemplate(R"({"chat_template": "{% for m in messages %}{{'<|im_start|>' + )"
                        R"(m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"})");
  ASSERT_TRUE(kind.ok()) << kind.status();
  EXPECT_EQ(*kind, ChatTemplateKind::kChatml);

  kind = DetectTemplate(
      R"({"chat_template": "{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. )"
      R"(You are a helpful assistant.<|im_end|>\n' }}{{'<|im_start|>'}}"})");
  ASSERT_TRUE(kind.ok()) << kind.status();
  EXPECT_EQ(*kind, ChatTemplateKind::kQwen2_5);
}

TEST(DetectTemplateTest, ListFormUsesTheDefaultEntry) {
  absl::StatusOr<ChatTemplateKind> kind =
      DetectTemplate(R"({"chat_template": [{"name": "tool_use", "template": "{{ '[TOOL]' }}"},)"
                     R"( {"name": "default", "template": "<|im_start|>{{ x }}<|im_end|>"}]})");
  ASSERT_TRUE(kind.ok()) << kind.status();
  EXPECT_EQ(*kind, ChatTemplateKind::kChatml);

  kind = DetectTemplate(R"({"chat_template": [{"name": "tool_use", "template": "x"}]})");
  EXPECT_EQ(kind.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(kind.status().message()), HasSubstr("no \"default\" template"));
}

TEST(DetectTemplateTest, ErrorsTellTheUserToNameATemplate) {
  absl::StatusOr<ChatTemplateKind> kind = DetectTemplate(R"({"bos_token": "<s>"})");
  EXPECT_EQ(kind.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(kind.status().message(),
            "tokenizer_config.json has no chat_template (known templates: llama3, chatml, qwen2, "
            "qwen2.5, qwen3, gemma, phi3); name one with \"chat_template\" in the training job, "
            "or oft_server --chat_template=MODEL=TEMPLATE");

  const std::string unrecognised =
      "the chat template in tokenizer_config.json matches no built-in template (known: llama3, "
      "chatml, qwen2, qwen2.5, qwen3, gemma, phi3); name one with \"chat_template\" in the "
      "training job, or oft_server --chat_template=MODEL=TEMPLATE";
  kind = DetectTemplate(R"({"chat_template": "{{ bos_token }}[INST] {{ m }} [/INST]"})");
  EXPECT_EQ(kind.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kind.status().message(), unrecognised);

  // A ChatML reasoning template is Qwen3's; markers of two families are refused.
  kind = DetectTemplate(R"({"chat_template": "<|im_start|>{{ m }}<think>\n</think><|im_end|>"})");
  ASSERT_TRUE(kind.ok()) << kind.status();
  EXPECT_EQ(*kind, ChatTemplateKind::kQwen3);
  kind = DetectTemplate(
      R"({"chat_template": "<start_of_turn>{{ m }}<end_of_turn><|im_start|>x<|im_end|>"})");
  EXPECT_EQ(kind.status().message(), unrecognised);

  kind = DetectTemplate("{not json");
  EXPECT_EQ(kind.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kind.status().message(), "tokenizer_config.json is not a JSON object");

  kind = DetectTemplate(R"({"chat_template": 3})");
  EXPECT_EQ(kind.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kind.status().message(),
            "tokenizer_config.json chat_template must be a string or a list, got number");
}

TEST(DetectTemplateTest, RecognisesGemmaAndPhi3) {
  absl::StatusOr<ChatTemplateKind> kind = DetectTemplate(
      R"({"chat_template": "{{ bos_token }}<start_of_turn>{{ r }}\n{{ c }}<end_of_turn>\n"})");
  ASSERT_TRUE(kind.ok()) << kind.status();
  EXPECT_EQ(*kind, ChatTemplateKind::kGemma);
  kind = DetectTemplate(R"({"chat_template": "<|user|>\n{{ c }}<|end|>\n<|assistant|>\n"})");
  ASSERT_TRUE(kind.ok()) << kind.status();
  EXPECT_EQ(*kind, ChatTemplateKind::kPhi3);
  // No model directory files: NOT_FOUND that says how to name a template.
  kind = DetectTemplateInDir("/nonexistent/model/dir");
  EXPECT_EQ(kind.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(kind.status().message()), HasSubstr("name one with \"chat_template\""));
}

TEST(RenderChatTest, GemmaFoldsTheSystemMessageAndNeedsAlternatingTurns) {
  const std::vector<Segment> segments = RenderChat(ChatTemplateKind::kGemma, kConversation, true);
  EXPECT_EQ(Concat(segments),
            "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+2?<end_of_turn>\n"
            "<start_of_turn>model\n4<end_of_turn>\n<start_of_turn>user\nAnd 3+3?<end_of_turn>\n"
            "<start_of_turn>model\n6<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(Trained(segments), "4<end_of_turn>6<end_of_turn>");
  EXPECT_TRUE(ValidateChat(ChatTemplateKind::kGemma, kConversation).ok());
  const std::vector<Message> two_users = {{"user", "a"}, {"user", "b"}};
  const absl::Status st = ValidateChat(ChatTemplateKind::kGemma, two_users);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("messages[1]"));
  EXPECT_TRUE(ValidateChat(ChatTemplateKind::kChatml, two_users).ok());
}

TEST(RenderChatTest, Qwen3KeepsThinkingOnlyAfterTheLastQuery) {
  const std::vector<Message> messages = {{"user", "q1"},
                                         {"assistant", "<think>\nplan\n</think>\n\nanswer one"},
                                         {"user", "q2"},
                                         {"assistant", "<think>r2</think>answer two"}};
  const std::vector<Segment> segments = RenderChat(ChatTemplateKind::kQwen3, messages, false);
  EXPECT_EQ(Concat(segments),
            "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\nanswer one<|im_end|>\n"
            "<|im_start|>user\nq2<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nr2\n</think>\n\nanswer two<|im_end|>\n");
  EXPECT_EQ(Trained(segments),
            "answer one<|im_end|><think>\nr2\n</think>\n\nanswer two<|im_end|>");
  ChatRenderOptions no_thinking;
  no_thinking.add_generation_prompt = true;
  no_thinking.enable_thinking = false;
  EXPECT_EQ(Concat(RenderChat(ChatTemplateKind::kQwen3, {{"user", "hi"}}, no_thinking)),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

}  // namespace
}  // namespace oft
