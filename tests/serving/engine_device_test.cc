// The serving engine on one device (OFT_TEST_DEVICE: "cpu" by default, "cuda:0" for the
// gpu-labelled registration that scripts/gpu_check.sh runs):
//   - a mixed batch of 8 requests, each with its own adapter (three block sizes, one shared
//     block), gives each request exactly the tokens it gets alone;
//   - unmerged serving equals the merged model: the engine with adapter k gives the tokens
//     that Generate gives on the export with adapter k merged into the base weights.
// fp32 with TF32 off, greedy decoding: batch composition changes only the order of float
// sums (~1e-6 relative), far below the logit gaps that decide the tokens of this model.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Context.h"
#include "ATen/core/grad_mode.h"
#include "server/artifacts/peft_format.h"
#include "server/model/generate.h"
#include "server/serving/adapter_registry.h"
#include "server/serving/engine.h"
#include "tests/serving/serving_fixtures.h"

namespace oft {
namespace {

using testing::AddRandomAdapter;
using testing::AllLinear;
using testing::RandomOftConfig;

std::string TestDevice() {
  const char* d = std::getenv("OFT_TEST_DEVICE");
  return d && *d ? d : "cpu";
}

class EngineDeviceTest : public ::testing::Test {
 protected:
  static constexpr int kAdapters = 8;

  void SetUp() override {
    device_ = TestDevice();
    if (device_.rfind("cuda", 0) == 0 && !at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
    at::globalContext().setAllowTF32CuBLAS(false);
    dir_ = testing::MakeTempDir("oft-engine-device");
    ASSERT_FALSE(dir_.empty());
    std::filesystem::create_directories(dir_ + "/base");
    ASSERT_TRUE(testing::WriteTinyModelDir(dir_ + "/base").ok());
    LoadOptions lo;
    lo.device = device_;
    auto serving = LlamaModel::Load(dir_ + "/base", lo);
    auto attached = LlamaModel::Load(dir_ + "/base", lo);
    ASSERT_TRUE(serving.ok()) << serving.status();
    ASSERT_TRUE(attached.ok()) << attached.status();
    serving_ = std::move(*serving);
    attached_ = std::move(*attached);
    tokenizer_ = testing::MakeByteTokenizer();
    for (int i = 0; i < kAdapters; ++i) {
      const std::string n = Name(i);
      // Block sizes 4, 8 and 16, and one adapter with a shared block.
      const OftConfig cfg = RandomOftConfig(int64_t{4} << (i % 3), /*share=*/i == 5);
      ASSERT_TRUE(AddRandomAdapter(*attached_, n, 300 + i, cfg).ok()) << n;
      auto prepared = testing::Prepare(*serving_, *attached_, n);
      ASSERT_NE(prepared, nullptr) << n;
      handles_.push_back(testing::Handle(prepared, n));
    }
  }

  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  static std::string Name(int i) { return "ad" + std::to_string(i); }

  static std::vector<int32_t> Bytes(const std::string& s) {
    std::vector<int32_t> ids;
    for (unsigned char c : s) ids.push_back(c);
    return ids;
  }

  // Runs `prompts[i]` with `adapters[i]` together in one engine; returns each request's tokens.
  std::vector<std::vector<int32_t>> RunTogether(const std::vector<std::string>& prompts,
                                                const std::vector<AdapterHandle>& adapters,
                                                const SamplingOptions& s) {
    EngineOptions o;
    o.model = serving_.get();
    o.tokenizer = tokenizer_.get();
    o.max_batch = kAdapters;
    o.start_thread = false;
    auto engine = Engine::Create(o);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return {};
    std::vector<GenerationOutcome> out(prompts.size());
    std::vector<bool> done(prompts.size(), false);
    for (size_t i = 0; i < prompts.size(); ++i) {
      GenerationRequest r;
      r.prompt = Bytes(prompts[i]);
      r.sampling = s;
      r.adapter = adapters[i];
      r.on_done = [&out, &done, i](const GenerationOutcome& g) {
        out[i] = g;
        done[i] = true;
      };
      EXPECT_TRUE((*engine)->Submit(std::move(r)).ok());
    }
    for (int step = 0; step < 10000 && (*engine)->pending() > 0; ++step) (*engine)->Step();
    std::vector<std::vector<int32_t>> tokens;
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_TRUE(done[i]) << "request " << i;
      EXPECT_TRUE(out[i].status.ok()) << "request " << i << ": " << out[i].status;
      tokens.push_back(out[i].tokens);
    }
    return tokens;
  }

  std::string device_, dir_;
  std::unique_ptr<LlamaModel> serving_, attached_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<AdapterHandle> handles_;
};

TEST_F(EngineDeviceTest, MixedEightAdapterBatchEqualsEachRequestAlone) {
  SamplingOptions s;
  s.max_tokens = 16;
  std::vector<std::string> prompts;
  for (int i = 0; i < kAdapters; ++i) prompts.push_back(std::string("prompt ") + std::string(i + 1, 'a' + i));
  const auto together = RunTogether(prompts, handles_, s);
  ASSERT_EQ(together.size(), static_cast<size_t>(kAdapters));
  for (int i = 0; i < kAdapters; ++i) {
    const auto alone = RunTogether({prompts[i]}, {handles_[i]}, s);
    ASSERT_EQ(alone.size(), 1u);
    EXPECT_EQ(together[i], alone[0]) << "request " << i << " (" << Name(i) << ") on " << device_;
  }
  // The adapters matter: the same prompt through the base and through an adapter differs.
  const auto pair = RunTogether({prompts[0], prompts[0]}, {nullptr, handles_[0]}, s);
  ASSERT_EQ(pair.size(), 2u);
  EXPECT_NE(pair[0], pair[1]);
}

TEST_F(EngineDeviceTest, UnmergedServingEqualsMergedModel) {
  at::NoGradGuard ng;
  SamplingOptions s;
  s.max_tokens = 16;
  const std::string prompt = "merged or not";
  for (int i : {0, 1, 2, 5}) {  // block sizes 4, 8, 16 and the shared block
    const std::string merged_dir = dir_ + "/merged-" + Name(i);
    ASSERT_TRUE(ExportMergedModel(*attached_, Name(i), merged_dir, at::kFloat).ok()) << Name(i);
    LoadOptions lo;
    lo.device = device_;
    auto merged = LlamaModel::Load(merged_dir, lo);
    ASSERT_TRUE(merged.ok()) << merged.status();
    auto ref = Generate(**merged, tokenizer_.get(), Bytes(prompt), s);
    ASSERT_TRUE(ref.ok()) << ref.status();
    const auto served = RunTogether({prompt}, {handles_[i]}, s);
    ASSERT_EQ(served.size(), 1u);
    EXPECT_EQ(served[0], ref->tokens) << Name(i) << " on " << device_;
  }
}

}  // namespace
}  // namespace oft
