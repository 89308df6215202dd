#include "server/model/checkpoint.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ATen/ops/randn.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/model/safetensors_torch.h"

namespace oft {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

std::string MakeTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = absl::StrCat(base != nullptr ? base : "/tmp", "/oft_ckpt_XXXXXX");
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string RawBytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

// Two shards: a = {embed (bf16), norm (f32)}, b = {lm_head (bf16)}.
struct ShardedFixture {
  std::string dir;
  at::Tensor embed = at::randn({8, 4}).to(at::kBFloat16);
  at::Tensor norm = at::randn({4});
  at::Tensor head = at::randn({8, 4}).to(at::kBFloat16);

  ShardedFixture() : dir(MakeTempDir()) {
    EXPECT_TRUE(WriteSafetensors(dir + "/model-00001-of-00002.safetensors",
                                 {{"model.embed.weight", embed}, {"model.norm.weight", norm}},
                                 {{"format", "pt"}})
                    .ok());
    EXPECT_TRUE(WriteSafetensors(dir + "/model-00002-of-00002.safetensors",
                                 {{"lm_head.weight", head}}, {{"format", "pt"}})
                    .ok());
    WriteIndex({{"model.embed.weight", "model-00001-of-00002.safetensors"},
                {"model.norm.weight", "model-00001-of-00002.safetensors"},
                {"lm_head.weight", "model-00002-of-00002.safetensors"}});
  }
  void WriteIndex(const json& weight_map) const {
    WriteText(dir + "/" + kSafetensorsIndexName,
              json{{"metadata", {{"total_size", 144}}}, {"weight_map", weight_map}}.dump(2));
  }
};

TEST(Checkpoint, SingleFile) {
  const std::string dir = MakeTempDir();
  at::Tensor a = at::randn({3, 2});
  at::Tensor b = at::randn({5}).to(at::kBFloat16);
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", {{"b", b}, {"a", a}}).ok());
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_FALSE((*ckpt)->sharded());
  EXPECT_THAT((*ckpt)->names(), ElementsAre("a", "b"));
  EXPECT_THAT((*ckpt)->shard_files(), ElementsAre("model.safetensors"));
  EXPECT_TRUE((*ckpt)->Has("a"));
  EXPECT_FALSE((*ckpt)->Has("c"));
  auto t = (*ckpt)->Tensor("b");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(RawBytes(*t), RawBytes(b));
  auto summary = (*ckpt)->DtypeSummary();
  ASSERT_EQ(summary.size(), 2u);
  EXPECT_EQ(summary["F32"].tensors, 1);
  EXPECT_EQ(summary["F32"].bytes, 24);
  EXPECT_EQ(summary["BF16"].elements, 5);
  auto missing = (*ckpt)->Tensor("c");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("no tensor 'c'"));
}

TEST(Checkpoint, Sharded) {
  ShardedFixture f;
  auto ckpt = Checkpoint::Open(f.dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE((*ckpt)->sharded());
  EXPECT_THAT((*ckpt)->names(), ElementsAre("lm_head.weight", "model.embed.weight", "model.norm.weight"));
  EXPECT_THAT((*ckpt)->shard_files(),
              ElementsAre("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"));
  for (const auto& [name, expected] : std::vector<std::pair<std::string, at::Tensor>>{
           {"lm_head.weight", f.head}, {"model.embed.weight", f.embed}, {"model.norm.weight", f.norm}}) {
    auto t = (*ckpt)->Tensor(name, /*copy=*/false);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(RawBytes(*t), RawBytes(expected)) << name;
  }
  auto info = (*ckpt)->Info("model.norm.weight");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ((*info)->shape, std::vector<int64_t>{4});
  EXPECT_EQ((*ckpt)->DtypeSummary()["BF16"].tensors, 2);
}

TEST(Checkpoint, HostileIndexCannotEscapeTheDirectory) {
  ShardedFixture f;
  // A valid file right outside the directory, which a naive join would open.
  ASSERT_TRUE(WriteSafetensors(f.dir + "/../x.safetensors", {{"evil", at::randn({1})}}).ok());
  for (const char* shard : {"../x.safetensors", "/etc/passwd", "sub/x.safetensors", "..", ".",
                            "", "..\\x.safetensors"}) {
    SCOPED_TRACE(shard);
    f.WriteIndex({{"evil", shard}});
    auto ckpt = Checkpoint::Open(f.dir);
    ASSERT_FALSE(ckpt.ok());
    EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument) << ckpt.status();
    EXPECT_THAT(std::string(ckpt.status().message()),
                HasSubstr(absl::StrCat("tensor 'evil' names shard '", shard,
                                       "', which is not a plain file name")));
  }
}

TEST(Checkpoint, BadIndexesAndShards) {
  ShardedFixture f;
  struct Case {
    const char* what;
    std::string index;
    absl::StatusCode code;
    const char* message;
  };
  const Case cases[] = {
      {"not json", "{weight_map", absl::StatusCode::kInvalidArgument, "not valid JSON"},
      {"not object", "[]", absl::StatusCode::kInvalidArgument, "must be a JSON object"},
      {"no weight_map", "{\"metadata\": {}}", absl::StatusCode::kInvalidArgument,
       "\"weight_map\" must be an object"},
      {"empty weight_map", "{\"weight_map\": {}}", absl::StatusCode::kInvalidArgument,
       "\"weight_map\" is empty"},
      {"shard not string", "{\"weight_map\": {\"a\": 3}}", absl::StatusCode::kInvalidArgument,
       "weight_map entry for tensor 'a' must be a file name string"},
      {"missing shard", "{\"weight_map\": {\"a\": \"model-00009.safetensors\"}}",
       absl::StatusCode::kNotFound, "shard 'model-00009.safetensors' (for tensor 'a') is missing"},
      {"tensor not in shard",
       "{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00002.safetensors\"}}",
       absl::StatusCode::kInvalidArgument,
       "tensor 'lm_head.weight' is mapped to shard 'model-00001-of-00002.safetensors' but that "
       "file does not contain it"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    WriteText(f.dir + "/" + kSafetensorsIndexName, c.index);
    auto ckpt = Checkpoint::Open(f.dir);
    ASSERT_FALSE(ckpt.ok());
    EXPECT_EQ(ckpt.status().code(), c.code) << ckpt.status();
    EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr(c.message));
    EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr(f.dir));
  }

  // A corrupt shard reports the shard's path.
  f.WriteIndex({{"lm_head.weight", "model-00002-of-00002.safetensors"}});
  WriteText(f.dir + "/model-00002-of-00002.safetensors", std::string("\x10\0\0\0\0\0\0\0{", 9));
  auto ckpt = Checkpoint::Open(f.dir);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("model-00002-of-00002.safetensors"));
}

TEST(Checkpoint, EmptyOrMissingDirectory) {
  const std::string dir = MakeTempDir();
  for (const std::string& d : {dir, dir + "/missing"}) {
    auto ckpt = Checkpoint::Open(d);
    EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound) << ckpt.status();
    EXPECT_THAT(std::string(ckpt.status().message()),
                HasSubstr("no model.safetensors or model.safetensors.index.json"));
  }
}

TEST(Checkpoint, PlainFileNames) {
  EXPECT_TRUE(internal::IsPlainFileName("model-00001-of-00002.safetensors"));
  EXPECT_TRUE(internal::IsPlainFileName("..model.safetensors"));
  EXPECT_FALSE(internal::IsPlainFileName(""));
  EXPECT_FALSE(internal::IsPlainFileName("."));
  EXPECT_FALSE(internal::IsPlainFileName(".."));
  EXPECT_FALSE(internal::IsPlainFileName("a/b"));
  EXPECT_FALSE(internal::IsPlainFileName("/abs"));
  EXPECT_FALSE(internal::IsPlainFileName("a\\b"));
  EXPECT_FALSE(internal::IsPlainFileName(std::string("a\0b", 3)));
}

// ---- Interop: checkpoints written by transformers' save_pretrained ----

std::string FixturesDir() {
  const char* d = std::getenv("OFT_MODEL_FIXTURES");
  return d == nullptr ? "" : d;
}

std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

void ExpectMatchesRecord(const Checkpoint& ckpt, const json& expected) {
  std::vector<std::string> names;
  for (const auto& [name, rec] : expected["tensors"].items()) names.push_back(name);
  EXPECT_EQ(ckpt.names(), names);
  for (const auto& [name, rec] : expected["tensors"].items()) {
    SCOPED_TRACE(name);
    auto t = ckpt.Tensor(name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(std::vector<int64_t>(t->sizes().begin(), t->sizes().end()),
              rec["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(Hex(RawBytes(*t)), rec["bytes_hex"].get<std::string>());
  }
}

TEST(CheckpointInterop, ReadsTransformersCheckpoints) {
  const std::string root = FixturesDir();
  if (root.empty()) GTEST_SKIP() << "run through ctest test checkpoint_interop (needs fixtures)";

  auto llama = Checkpoint::Open(root + "/py/sharded_llama");
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_TRUE((*llama)->sharded());
  EXPECT_GT((*llama)->shard_files().size(), 1u);
  EXPECT_TRUE((*llama)->Has("lm_head.weight"));
  auto summary = (*llama)->DtypeSummary();
  EXPECT_EQ(summary.size(), 1u);
  EXPECT_EQ(summary.count("BF16"), 1u);
  ExpectMatchesRecord(**llama, json::parse(ReadAll(root + "/py/sharded_llama.json")));

  auto qwen = Checkpoint::Open(root + "/py/qwen2_tiny");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_FALSE((*qwen)->sharded());
  EXPECT_FALSE((*qwen)->Has("lm_head.weight"));  // tied to embed_tokens
  EXPECT_TRUE((*qwen)->Has("model.layers.0.self_attn.q_proj.bias"));
  ExpectMatchesRecord(**qwen, json::parse(ReadAll(root + "/py/qwen2_tiny.json")));
}

}  // namespace
}  // namespace oft
