// Self-contained fixtures for trainer tests: a byte-level tokenizer.json (every byte is a
// token, plus <s> and </s>), a tiny random Llama built in memory, and the same model
// written as an HF model directory (config.json, model.safetensors, tokenizer.json).
#ifndef OFT_TESTS_TRAIN_TINY_MODEL_H_
#define OFT_TESTS_TRAIN_TINY_MODEL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/data/dataset.h"
#include "server/model/hf_config.h"
#include "server/model/llama.h"
#include "server/model/safetensors_torch.h"
#include "server/model/tokenizer.h"

namespace oft::testing {

inline constexpr int64_t kTinyVocab = 258;  // 256 bytes + <s> + </s>

// GPT-2's byte -> printable code point map, UTF-8 encoded.
inline std::string ByteToken(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

inline std::string ByteTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToken(b)] = b;
  auto added = [](int id, const char* content) {
    return nlohmann::json{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                          {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", {added(256, "<s>"), added(257, "</s>")}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                         {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                   {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                 {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                 {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                 {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  return j.dump();
}

inline ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = kTinyVocab;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-5;
  c.torch_dtype = "float32";
  c.bos_token_id = 256;
  c.eos_token_ids = {257};
  return c;
}

// Every base tensor of a Llama with `c`, random but fixed by `seed`.
inline std::map<std::string, at::Tensor> RandomLlamaTensors(const ModelConfig& c, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  std::map<std::string, at::Tensor> t;
  auto w = [&](const std::string& n, int64_t out, int64_t in) {
    t[n] = at::randn({out, in}) * (1.0 / std::sqrt(static_cast<double>(in)));
  };
  t["model.embed_tokens.weight"] = at::randn({c.vocab_size, H});
  t["model.norm.weight"] = at::ones({H});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    t[p + "input_layernorm.weight"] = at::ones({H});
    t[p + "post_attention_layernorm.weight"] = at::ones({H});
    w(p + "self_attn.q_proj.weight", q, H);
    w(p + "self_attn.k_proj.weight", kv, H);
    w(p + "self_attn.v_proj.weight", kv, H);
    w(p + "self_attn.o_proj.weight", H, q);
    w(p + "mlp.gate_proj.weight", I, H);
    w(p + "mlp.up_proj.weight", I, H);
    w(p + "mlp.down_proj.weight", H, I);
  }
  if (!c.tie_word_embeddings) w("lm_head.weight", c.vocab_size, H);
  return t;
}

inline std::unique_ptr<LlamaModel> MakeTinyModel(uint64_t seed = 7) {
  const ModelConfig c = TinyConfig();
  auto tensors = RandomLlamaTensors(c, seed);
  auto m = LlamaModel::FromSource(
      c, [&](const std::string& n) -> absl::StatusOr<at::Tensor> { return tensors.at(n); }, {});
  return m.ok() ? std::move(*m) : nullptr;
}

// The tiny model with one random (init_weights = false) all-linear adapter "a" of block size
// `block`, active; null on any error.
inline std::unique_ptr<LlamaModel> MakeTinyModelWithAdapter(int64_t block = 8, uint64_t seed = 7) {
  auto model = MakeTinyModel(seed);
  if (model == nullptr) return nullptr;
  OftConfig c;
  c.oft_block_size = block;
  c.init_weights = false;
  TargetSpec t;
  t.target_modules = {"all-linear"};
  if (!model->AddAdapter("a", c, t).ok() || !model->SetActiveAdapters({"a"}).ok()) return nullptr;
  return model;
}

inline std::unique_ptr<Tokenizer> MakeByteTokenizer() {
  auto t = Tokenizer::FromJson(ByteTokenizerJson());
  return t.ok() ? std::move(*t) : nullptr;
}

// Writes config.json, model.safetensors and tokenizer.json of the tiny model into `dir`.
inline absl::Status WriteTinyModelDir(const std::string& dir, uint64_t seed = 7) {
  const ModelConfig c = TinyConfig();
  auto tensors = RandomLlamaTensors(c, seed);
  std::vector<std::pair<std::string, at::Tensor>> list(tensors.begin(), tensors.end());
  absl::Status st = WriteSafetensors(dir + "/model.safetensors", list, {{"format", "pt"}});
  if (!st.ok()) return st;
  st = WriteFileAtomic(dir + "/config.json", ToJson(c));
  if (!st.ok()) return st;
  return WriteFileAtomic(dir + "/tokenizer.json", ByteTokenizerJson());
}

// `n` short repetitive text rows.
inline std::vector<Example> RepetitiveRows(int n) {
  static const char* kPhrases[] = {"the cat sat on the mat. ", "a dog ran in the park. ",
                                   "the sun is hot today. ", "we like to eat cake. "};
  std::vector<Example> rows;
  for (int i = 0; i < n; ++i) {
    Example e;
    e.format = RowFormat::kText;
    e.text = std::string(kPhrases[i % 4]) + kPhrases[(i + 1) % 4];
    e.line = i + 1;
    rows.push_back(e);
  }
  return rows;
}

inline std::string RowsToJsonl(const std::vector<Example>& rows) {
  std::string out;
  for (const auto& r : rows) out += nlohmann::json{{"text", r.text}}.dump() + "\n";
  return out;
}

}  // namespace oft::testing

#endif  // OFT_TESTS_TRAIN_TINY_MODEL_H_
