// PEFT interop, C++ side (peft_interop.py is the Python side):
//   PeftAdapters:  adapters trained/saved by PEFT load here and give PEFT's logits.
//   WriteOurs:     we save adapters (and merged exports) plus our logits for the Python check.
// Plus unit tests of adapter_config.json parsing and loading errors.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "server/artifacts/peft_format.h"
#include "server/common/file_util.h"
#include "server/model/safetensors.h"
#include "server/model/safetensors_torch.h"

namespace oft {
namespace {

namespace fs = std::filesystem;

std::string Env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

// The families beyond Llama (tests/model/make_llama_fixtures.py), one all-linear case each
// both ways (peft_interop.py's FAMILIES).
constexpr const char* kFamilies[] = {"qwen3", "olmo2", "granite", "gemma2", "gemma3", "phi3"};

struct Inputs {
  torch::Tensor ids, mask;
};

Inputs LoadInputs(const std::string& model_dir) {
  auto f = SafetensorsFile::Open(model_dir + "/expected.safetensors");
  EXPECT_TRUE(f.ok()) << f.status();
  return {(*f)->Tensor("ids").value(), (*f)->Tensor("attention_mask").value()};
}

torch::Tensor Logits(LlamaModel& m, const Inputs& in) {
  torch::NoGradGuard ng;
  ForwardOptions fo;
  fo.attention_mask = in.mask;
  return m.Forward(in.ids, fo).to(torch::kFloat32);
}

double MaskedMaxErr(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& mask) {
  auto valid = mask.to(torch::kBool).unsqueeze(-1).expand_as(a);
  return (a - b).abs().masked_select(valid).max().item<double>();
}

std::string ReadText(const std::string& p) {
  std::ifstream f(p);
  std::string s((std::istreambuf_iterator<char>(f)), {});
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

TEST(PeftInterop, PeftAdaptersGivePeftLogits) {
  const std::string models = Env("OFT_LLAMA_FIXTURES"), out = Env("OFT_PEFT_FIXTURES");
  if (models.empty() || out.empty()) GTEST_SKIP() << "fixtures not set";
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(out)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("peft_", 0) != 0) continue;
    const std::string model_dir = models + "/" + ReadText(entry.path().string() + "/model_dir.txt");
    auto model = LlamaModel::Load(model_dir, {});
    ASSERT_TRUE(model.ok()) << model.status();
    auto cfg = LoadPeftAdapter(**model, entry.path().string(), "peft");
    ASSERT_TRUE(cfg.ok()) << name << ": " << cfg.status();
    ASSERT_TRUE((*model)->SetActiveAdapters({"peft"}).ok());
    auto in = LoadInputs(model_dir);
    auto want = SafetensorsFile::Open(entry.path().string() + "/expected.safetensors").value()->Tensor("logits").value();
    const double err = MaskedMaxErr(Logits(**model, in), want, in.mask);
    EXPECT_LE(err, 1e-4) << name;
    std::cout << name << ": max abs error " << err << "\n";
    // The adapter is not a no-op: the base model's logits differ.
    ASSERT_TRUE((*model)->SetActiveAdapters({}).ok());
    EXPECT_GT(MaskedMaxErr(Logits(**model, in), want, in.mask), 1e-3) << name;
    ++seen;
  }
  EXPECT_EQ(seen, 4 + static_cast<int>(std::size(kFamilies)));
}

struct OurCase {
  const char* name;
  const char* model;
  OftConfig oft;
  TargetSpec targets;
  bool merged_export;
};

std::vector<OurCase> OurCases() {
  std::vector<OurCase> cases;
  {
    OurCase c{"cnp_qv", "llama3", {}, {}, true};
    c.oft.oft_block_size = 8;
    c.targets.target_modules = {"q_proj", "v_proj"};
    cases.push_back(c);
  }
  {
    OurCase c{"exact_share", "llama3", {}, {}, false};
    c.oft.r = 4;
    c.oft.oft_block_size = 0;
    c.oft.use_cayley_neumann = false;
    c.oft.block_share = true;
    c.targets.target_modules = {"q_proj", "k_proj", "o_proj"};
    cases.push_back(c);
  }
  {
    OurCase c{"all_linear", "qwen2_tied", {}, {}, true};
    c.oft.oft_block_size = 16;
    c.oft.num_cayley_neumann_terms = 3;
    c.targets.target_modules = {"all-linear"};
    cases.push_back(c);
  }
  {
    OurCase c{"layers", "mistral", {}, {}, false};
    c.oft.oft_block_size = 32;
    c.targets.target_modules = {"gate_proj", "down_proj"};
    c.targets.layers_to_transform = {1};
    cases.push_back(c);
  }
  // Names are kept alive by the static storage of kFamilies and these strings.
  static const std::vector<std::string>* const kNames = [] {
    auto* v = new std::vector<std::string>();
    for (const char* f : kFamilies) v->push_back(std::string("family_") + f);
    return v;
  }();
  for (size_t i = 0; i < std::size(kFamilies); ++i) {
    OurCase c{(*kNames)[i].c_str(), kFamilies[i], {}, {}, true};
    c.oft.oft_block_size = 16;
    c.targets.target_modules = {"all-linear"};
    cases.push_back(c);
  }
  return cases;
}

TEST(PeftInterop, WriteOurs) {
  const std::string models = Env("OFT_LLAMA_FIXTURES"), out = Env("OFT_PEFT_FIXTURES");
  if (models.empty() || out.empty()) GTEST_SKIP() << "fixtures not set";
  torch::manual_seed(42);
  for (const auto& c : OurCases()) {
    const std::string model_dir = models + "/" + c.model;
    auto model = LlamaModel::Load(model_dir, {});
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_TRUE((*model)->AddAdapter("ours", c.oft, c.targets).ok());
    {
      torch::NoGradGuard ng;
      auto params = (*model)->AdapterParameters("ours").value();
      for (auto& [n, p] : params) p.normal_(0.0, 0.05);
    }
    ASSERT_TRUE((*model)->SetActiveAdapters({"ours"}).ok());
    auto in = LoadInputs(model_dir);
    auto logits = Logits(**model, in);
    const std::string dir = out + "/ours_" + c.name;
    ASSERT_TRUE(SavePeftAdapter(**model, "ours", c.targets, c.model, dir).ok());
    ASSERT_TRUE(WriteSafetensors(dir + "/expected.safetensors", {{"logits", logits}}).ok());
    ASSERT_TRUE(WriteFileAtomic(dir + "/model_dir.txt", std::string(c.model)).ok());
    // Round trip through our own loader.
    auto again = LlamaModel::Load(model_dir, {});
    ASSERT_TRUE(LoadPeftAdapter(**again, dir, "x").ok());
    ASSERT_TRUE((*again)->SetActiveAdapters({"x"}).ok());
    EXPECT_EQ(MaskedMaxErr(Logits(**again, in), logits, in.mask), 0.0) << c.name;
    if (c.merged_export) {
      const std::string mdir = out + "/merged_" + c.name;
      ASSERT_TRUE(ExportMergedModel(**model, "ours", mdir, torch::kFloat32).ok());
      ASSERT_TRUE(WriteSafetensors(mdir + "/expected.safetensors", {{"logits", logits}}).ok());
      ASSERT_TRUE(WriteFileAtomic(mdir + "/model_dir.txt", std::string(c.model)).ok());
      // Our loader reads the merged export and gives the adapter's logits without it.
      auto merged = LlamaModel::Load(mdir, {});
      ASSERT_TRUE(merged.ok()) << merged.status();
      EXPECT_LT(MaskedMaxErr(Logits(**merged, in), logits, in.mask), 1e-4) << c.name;
    }
  }
}

TEST(AdapterConfig, JsonRoundTrip) {
  PeftAdapterConfig c;
  c.oft.oft_block_size = 16;
  c.oft.use_cayley_neumann = false;
  c.oft.block_share = true;
  c.targets.target_modules = {"q_proj", "v_proj"};
  c.targets.layers_to_transform = {0, 2};
  c.base_model_name_or_path = "tiny-llama";
  auto json = AdapterConfigToJson(c);
  for (const char* key : {"\"peft_type\": \"OFT\"", "\"peft_version\": \"0.18.0\"", "\"oft_block_size\": 16",
                          "\"r\": 0", "\"inference_mode\": true", "\"use_cayley_neumann\": false",
                          "\"task_type\": \"CAUSAL_LM\""}) {
    EXPECT_NE(json.find(key), std::string::npos) << key << " in " << json;
  }
  auto back = ParseAdapterConfig(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->oft.oft_block_size, 16);
  EXPECT_FALSE(back->oft.use_cayley_neumann);
  EXPECT_TRUE(back->oft.block_share);
  EXPECT_EQ(back->targets.target_modules, c.targets.target_modules);
  EXPECT_EQ(back->targets.layers_to_transform, c.targets.layers_to_transform);
  EXPECT_TRUE(back->warnings.empty());
}

TEST(AdapterConfig, BadConfigsNameTheField) {
  struct Case {
    const char* json;
    const char* message;
  } cases[] = {
      {"[1,2]", "not a JSON object"},
      {R"({"peft_type": "LORA", "oft_block_size": 32})", "peft_type must be \"OFT\""},
      {R"({"peft_type": "OFT", "r": 8})", "oft_block_size is missing"},
      {R"({"peft_type": "OFT", "r": 8, "oft_block_size": 32, "target_modules": ["q_proj"]})",
       "exactly one of r and oft_block_size"},
      {R"({"peft_type": "OFT", "oft_block_size": "32"})", "oft_block_size must be an integer"},
      {R"({"peft_type": "OFT", "oft_block_size": 32, "target_modules": 7})", "target_modules must be a list"},
      {R"({"peft_type": "OFT", "oft_block_size": 32, "target_modules": ["q"], "fan_in_fan_out": true})",
       "fan_in_fan_out must be false"},
      {R"({"peft_type": "OFT", "oft_block_size": 32, "target_modules": ["q"], "num_cayley_neumann_terms": 0})",
       "num_cayley_neumann_terms must be in [1, 32]"},
  };
  for (const auto& c : cases) {
    auto s = ParseAdapterConfig(c.json).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_NE(s.message().find(c.message), std::string::npos) << c.json << " -> " << s.message();
  }
  auto old = ParseAdapterConfig(
      R"({"peft_type": "OFT", "oft_block_size": 32, "target_modules": ["q_proj"], "peft_version": "0.17.1"})");
  ASSERT_TRUE(old.ok());
  ASSERT_EQ(old->warnings.size(), 1u);
  EXPECT_NE(old->warnings[0].find("0.17.1"), std::string::npos);
}

// Adapter tensors that would load silently and serve garbage are refused, naming the tensor.
TEST(AdapterFiles, NonFiniteOrNonFloatTensorsAreRejectedByName) {
  const std::string dir =
      (fs::path(::testing::TempDir()) / absl::StrCat("adapter_files_", ::getpid())).string();
  fs::create_directories(dir);
  PeftAdapterConfig cfg;
  cfg.oft.oft_block_size = 4;
  cfg.targets.target_modules = {"q_proj"};
  ASSERT_TRUE(WriteFileAtomic(dir + "/" + kAdapterConfigFile, AdapterConfigToJson(cfg)).ok());
  const std::string key = "base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight";
  struct Case {
    torch::Tensor weight;
    const char* message;  // empty: loads
  } cases[] = {
      {torch::zeros({2, 6}), ""},
      {torch::zeros({2, 6}, torch::kBFloat16), ""},
      {torch::full({2, 6}, std::nan("")), "holds NaN or Inf values"},
      {torch::tensor({0.0f, 1.0f, INFINITY, 0.0f, 0.0f, 0.0f}).reshape({1, 6}), "holds NaN or Inf values"},
      {torch::zeros({2, 6}, torch::kBool), "has dtype BOOL"},
      {torch::zeros({2, 6}, torch::kInt8), "has dtype I8"},
  };
  for (const auto& c : cases) {
    ASSERT_TRUE(WriteSafetensors(dir + "/" + kAdapterWeightsFile, {{key, c.weight}}).ok());
    auto files = ReadPeftAdapterFiles(dir);
    if (std::string(c.message).empty()) {
      ASSERT_TRUE(files.ok()) << files.status();
      EXPECT_EQ(files->packed.count("model.layers.0.self_attn.q_proj"), 1u);
      continue;
    }
    ASSERT_FALSE(files.ok()) << c.message;
    EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(files.status().message().find(key), std::string::npos) << files.status();
    EXPECT_NE(files.status().message().find(c.message), std::string::npos) << files.status();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace oft
