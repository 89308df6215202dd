// Trainer contract tests on a tiny random Llama built in memory (no fixtures needed).
#include "server/train/trainer.h"

#include <atomic>
#include <filesystem>
#include <map>
#include <set>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/autocast_mode.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/train/trainer_checkpoint.h"
#include "torch/csrc/autograd/function.h"
#include "tests/train/tiny_model.h"

namespace oft {
namespace {

namespace fs = std::filesystem;
using testing::MakeByteTokenizer;
using testing::MakeTinyModel;
using testing::MakeTinyModelWithAdapter;
using testing::RepetitiveRows;

std::string FreshDir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path p = fs::path(::testing::TempDir()) /
               absl::StrCat("oft_trainer_", info->test_suite_name(), "_", info->name(), "_", name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

TrainOptions SmallOptions(int64_t steps) {
  TrainOptions o;
  o.learning_rate = 0.02;
  o.schedule = LrSchedule::kConstant;
  o.batch_size = 4;
  o.max_seq_len = 64;
  o.max_steps = steps;
  o.epochs = 0;
  o.checkpoint_every = 0;
  o.seed = 11;
  return o;
}

struct Harness {
  std::unique_ptr<LlamaModel> model = MakeTinyModel();
  std::unique_ptr<Tokenizer> tokenizer = MakeByteTokenizer();
  std::unique_ptr<Trainer> trainer;
  std::vector<TrainEvent> events;

  TrainerParams Params(const TrainOptions& o, std::vector<Example> rows = RepetitiveRows(16),
                       const std::string& ckpt = "") {
    TrainerParams p;
    p.model = model.get();
    p.tokenizer = tokenizer.get();
    p.train = std::move(rows);
    p.options = o;
    p.adapter.oft_block_size = 8;
    p.targets.target_modules = {"all-linear"};
    p.checkpoint_dir = ckpt;
    return p;
  }
  absl::Status Create(TrainerParams p) {
    auto t = Trainer::Create(std::move(p));
    if (!t.ok()) return t.status();
    trainer = std::move(*t);
    return absl::OkStatus();
  }
  absl::Status Go(const std::atomic<bool>* cancel = nullptr,
                  std::function<void(const TrainEvent&)> extra = nullptr) {
    return trainer->Run(
        [&, extra](const TrainEvent& e) {
          events.push_back(e);
          if (extra) extra(e);
        },
        cancel);
  }
  std::map<std::string, at::Tensor> Adapter() const {
    std::map<std::string, at::Tensor> out;
    auto params = model->AdapterParameters("default");
    for (auto& [n, t] : *params) out[n] = t.detach().clone();
    return out;
  }
  std::vector<double> Losses() const {
    std::vector<double> l;
    for (const auto& e : events) {
      if (e.kind == TrainEvent::Kind::kStep) l.push_back(e.loss);
    }
    return l;
  }
};

bool BitwiseEqual(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [n, t] : a) {
    if (!b.count(n) || !at::equal(t, b.at(n))) return false;
  }
  return true;
}

TEST(TrainerTest, LossDecreasesOnlyAdapterTrainsBaseUntouched) {
  Harness r;
  ASSERT_NE(r.model, nullptr);
  std::map<std::string, at::Tensor> base_before;
  for (auto& [n, t] : r.model->BaseTensors()) base_before[n] = t.clone();
  ASSERT_TRUE(r.Create(r.Params(SmallOptions(30))).ok());
  ASSERT_TRUE(r.Go().ok());
  const auto losses = r.Losses();
  ASSERT_EQ(losses.size(), 30u);
  const double first = (losses[0] + losses[1] + losses[2]) / 3;
  const double last = (losses[27] + losses[28] + losses[29]) / 3;
  EXPECT_LT(last, first * 0.9) << "first " << first << " last " << last;

  // Base weights: bitwise unchanged, never require grad, never got a gradient.
  for (auto& [n, t] : r.model->BaseTensors()) {
    EXPECT_TRUE(at::equal(t, base_before.at(n))) << n;
    EXPECT_FALSE(t.requires_grad()) << n;
    EXPECT_FALSE(t.grad().defined()) << n;
  }
  // Every adapter parameter trains (it started at zero, R = I).
  for (auto& [n, t] : r.Adapter()) {
    EXPECT_GT(t.abs().max().item<double>(), 0) << n;
    EXPECT_TRUE(r.model->AdapterParameters("default")->at(n).requires_grad()) << n;
  }
  // Step events carry the fields users watch.
  const TrainEvent& s = r.events[r.events.size() - 3];
  EXPECT_EQ(s.kind, TrainEvent::Kind::kStep);
  EXPECT_EQ(s.total_steps, 30);
  EXPECT_GT(s.tokens_per_second, 0);
  EXPECT_GT(s.grad_norm, 0);
  EXPECT_DOUBLE_EQ(s.learning_rate, 0.02);
  EXPECT_EQ(r.events.back().kind, TrainEvent::Kind::kDone);
  EXPECT_EQ(r.trainer->metrics().steps_completed, 30);
}

TEST(TrainerTest, GradAccumulationEqualsBiggerBatch) {
  auto opts = SmallOptions(3);
  opts.adam_eps = 1e-2;  // keeps the update a smooth function of the gradient
  Harness a, b;
  auto oa = opts;
  oa.batch_size = 2;
  oa.grad_accum_steps = 1;
  auto ob = opts;
  ob.batch_size = 1;
  ob.grad_accum_steps = 2;
  ASSERT_TRUE(a.Create(a.Params(oa)).ok());
  ASSERT_TRUE(b.Create(b.Params(ob)).ok());
  ASSERT_TRUE(a.Go().ok());
  ASSERT_TRUE(b.Go().ok());
  auto pa = a.Adapter(), pb = b.Adapter();
  for (auto& [n, t] : pa) {
    EXPECT_TRUE(at::allclose(t, pb.at(n), 1e-4, 1e-6)) << n << " max diff "
                                                      << (t - pb.at(n)).abs().max().item<double>();
  }
  const auto la = a.Losses(), lb = b.Losses();
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-5);
}

TEST(TrainerTest, SameSeedGivesBitwiseIdenticalAdapter) {
  auto opts = SmallOptions(5);
  Harness a, b, c;
  auto pa = a.Params(opts), pb = b.Params(opts);
  pa.adapter.module_dropout = pb.adapter.module_dropout = 0.25;  // uses the RNG
  pa.adapter.init_weights = pb.adapter.init_weights = false;
  ASSERT_TRUE(a.Create(pa).ok());
  ASSERT_TRUE(b.Create(pb).ok());
  ASSERT_TRUE(a.Go().ok());
  ASSERT_TRUE(b.Go().ok());
  EXPECT_TRUE(BitwiseEqual(a.Adapter(), b.Adapter()));
  opts.seed = 12;
  auto pc = c.Params(opts);
  pc.adapter.module_dropout = 0.25;
  pc.adapter.init_weights = false;
  ASSERT_TRUE(c.Create(pc).ok());
  ASSERT_TRUE(c.Go().ok());
  EXPECT_FALSE(BitwiseEqual(a.Adapter(), c.Adapter()));
}

TEST(TrainerTest, ResumeAfterCancelIsExact) {
  const std::string dir = FreshDir("ckpt");
  auto opts = SmallOptions(7);
  opts.checkpoint_every = 2;
  Harness full;
  ASSERT_TRUE(full.Create(full.Params(opts)).ok());
  ASSERT_TRUE(full.Go().ok());

  Harness first;
  ASSERT_TRUE(first.Create(first.Params(opts, RepetitiveRows(16), dir)).ok());
  std::atomic<bool> cancel{false};
  absl::Status st = first.Go(&cancel, [&](const TrainEvent& e) {
    if (e.kind == TrainEvent::Kind::kStep && e.step == 3) cancel = true;
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kCancelled) << st;
  // Honoured before the next step: no step 4 ran, and step 3 was checkpointed.
  EXPECT_EQ(first.Losses().size(), 3u);
  EXPECT_TRUE(fs::exists(fs::path(dir) / "step-3" / "state.json"));

  Harness second;
  ASSERT_TRUE(second.Create(second.Params(opts, RepetitiveRows(16), dir)).ok());
  ASSERT_TRUE(second.Go().ok());
  ASSERT_FALSE(second.events.empty());
  // The step, not the checkpoint's path (tenants see this message).
  EXPECT_TRUE(absl::StrContains(second.events[0].message, "resumed from the checkpoint at step 3"))
      << second.events[0].message;
  EXPECT_FALSE(absl::StrContains(second.events[0].message, dir)) << second.events[0].message;
  EXPECT_EQ(second.Losses().size(), 4u);
  EXPECT_TRUE(BitwiseEqual(full.Adapter(), second.Adapter()));
  // keep_checkpoints = 2: only the newest two remain.
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += absl::StartsWith(e.path().filename().string(), "step-");
  EXPECT_EQ(n, 2);
}

TEST(TrainerTest, ResumeWithOtherOptionsOrDataIsRefused) {
  const std::string dir = FreshDir("ckpt");
  auto opts = SmallOptions(2);
  Harness first;
  ASSERT_TRUE(first.Create(first.Params(opts, RepetitiveRows(16), dir)).ok());
  ASSERT_TRUE(first.Go().ok());

  auto other = opts;
  other.learning_rate = 0.5;
  Harness second;
  ASSERT_TRUE(second.Create(second.Params(other, RepetitiveRows(16), dir)).ok());
  absl::Status st = second.Go();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(st.message(), "learning_rate (checkpoint 0.02, now 0.5)")) << st;

  Harness third;
  ASSERT_TRUE(third.Create(third.Params(opts, RepetitiveRows(12), dir)).ok());
  st = third.Go();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(st.message(), "different training/validation data")) << st;
}

TEST(TrainerTest, NonFiniteLossStopsAndKeepsLastGoodCheckpoint) {
  const std::string dir = FreshDir("ckpt");
  auto opts = SmallOptions(8);
  opts.checkpoint_every = 2;
  Harness r;
  auto p = r.Params(opts, RepetitiveRows(16), dir);
  p.inject_nan_for_testing = [](int64_t step) { return step == 5; };
  ASSERT_TRUE(r.Create(p).ok());
  absl::Status st = r.Go();
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StartsWith(st.message(), "non-finite loss at step 5")) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "step-4")) << st;
  EXPECT_TRUE(fs::exists(fs::path(dir) / "step-4"));
  EXPECT_FALSE(fs::exists(fs::path(dir) / "step-5"));
  for (auto& [n, t] : r.Adapter()) EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << n;

  // The last good checkpoint loads and training finishes from it.
  Harness again;
  ASSERT_TRUE(again.Create(again.Params(opts, RepetitiveRows(16), dir)).ok());
  ASSERT_TRUE(again.Go().ok());
  EXPECT_TRUE(absl::StrContains(again.events[0].message, "checkpoint at step 4")) << again.events[0].message;
  EXPECT_EQ(again.Losses().size(), 4u);
}

TEST(TrainerTest, EarlyStoppingAndSelectBest) {
  auto opts = SmallOptions(40);
  opts.learning_rate = 0.2;  // large on purpose: the eval loss soon stops improving
  opts.eval_every = 1;
  opts.early_stopping_patience = 2;
  opts.select_best = true;
  Harness r;
  auto p = r.Params(opts, RepetitiveRows(16));
  p.valid = RepetitiveRows(6);
  for (auto& v : p.valid) v.text = "sat on the cat mat dog " + v.text;
  ASSERT_TRUE(r.Create(p).ok());
  std::map<int64_t, std::map<std::string, at::Tensor>> snapshots;
  absl::Status st = r.Go(nullptr, [&](const TrainEvent& e) {
    if (e.kind == TrainEvent::Kind::kEval) snapshots[e.step] = r.Adapter();
  });
  ASSERT_TRUE(st.ok()) << st;
  const TrainMetrics& m = r.trainer->metrics();
  ASSERT_TRUE(m.stopped_early);
  EXPECT_LT(m.steps_completed, 40);
  double best = 1e30;
  int64_t best_step = 0;
  std::vector<double> evals;
  for (const auto& e : r.events) {
    if (e.kind != TrainEvent::Kind::kEval) continue;
    evals.push_back(e.eval_loss);
    if (e.eval_loss < best) best = e.eval_loss, best_step = e.step;
  }
  EXPECT_EQ(m.best_eval_loss, best);
  EXPECT_EQ(m.best_step, best_step);
  EXPECT_EQ(m.result_step, best_step);
  EXPECT_EQ(m.steps_completed, best_step + 2);  // patience 2
  EXPECT_TRUE(BitwiseEqual(r.Adapter(), snapshots.at(best_step)));
  EXPECT_FALSE(BitwiseEqual(r.Adapter(), snapshots.at(m.steps_completed)));
}

TEST(TrainerTest, HeldOutFractionAndPackingAndActivationCheckpointing) {
  auto opts = SmallOptions(3);
  opts.eval_fraction = 0.25;
  opts.eval_every = 3;
  opts.pack = true;
  opts.adam_eps = 1e-2;
  Harness a, b;
  ASSERT_TRUE(a.Create(a.Params(opts)).ok());
  ASSERT_TRUE(a.Go().ok());
  // 4 of 16 rows held out; two rows do not fit one 64-token sequence, so 4 sequences.
  EXPECT_EQ(a.trainer->metrics().eval_sequences, 4);
  EXPECT_EQ(a.trainer->metrics().train_sequences, 12);
  EXPECT_GT(a.trainer->metrics().last_eval_loss, 0);
  opts.activation_checkpointing = true;
  ASSERT_TRUE(b.Create(b.Params(opts)).ok());
  ASSERT_TRUE(b.Go().ok());
  auto pa = a.Adapter(), pb = b.Adapter();
  for (auto& [n, t] : pa) EXPECT_TRUE(at::allclose(t, pb.at(n), 1e-5, 1e-7)) << n;
}

TEST(TrainerTest, BadInputsAreRejected) {
  Harness r;
  auto opts = SmallOptions(3);
  opts.learning_rate = -3;
  auto st = Trainer::Create(r.Params(opts)).status();
  EXPECT_EQ(st.message(), "learning_rate must be in (0, 1], got -3");
  EXPECT_EQ(Trainer::Create(r.Params(SmallOptions(3), {})).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto noeval = SmallOptions(3);
  noeval.eval_every = 2;
  EXPECT_EQ(Trainer::Create(r.Params(noeval)).status().message(),
            "eval_every > 0 needs a validation set or eval_fraction > 0");
  ASSERT_TRUE(r.Create(r.Params(SmallOptions(3))).ok());
  EXPECT_EQ(Trainer::Create(r.Params(SmallOptions(3))).status().code(),
            absl::StatusCode::kAlreadyExists);
}

// Runs `fn` on a fresh thread and waits: "alone" and "concurrent" runs then see the same
// per-thread runtime defaults (intra-op threads, autocast flags).
void OnThread(const std::function<void()>& fn) {
  std::thread t(fn);
  t.join();
}

TrainerParams DropoutParams(Harness& h, uint64_t seed) {
  auto opts = SmallOptions(6);
  opts.seed = seed;
  auto p = h.Params(opts);
  p.adapter.module_dropout = 0.5;  // draws every forward
  p.adapter.init_weights = false;  // draws at Create
  return p;
}

TEST(TrainerRngTest, ConcurrentTrainersEqualEachAlone) {
  std::map<std::string, at::Tensor> alone_a, alone_b;
  for (uint64_t seed : {11u, 12u}) {
    OnThread([&] {
      Harness h;
      ASSERT_TRUE(h.Create(DropoutParams(h, seed)).ok());
      ASSERT_TRUE(h.Go().ok());
      (seed == 11 ? alone_a : alone_b) = h.Adapter();
    });
  }
  ASSERT_FALSE(BitwiseEqual(alone_a, alone_b));  // the seeds matter
  Harness a, b;
  absl::Status sa, sb;
  std::thread ta([&] {
    sa = a.Create(DropoutParams(a, 11));
    if (sa.ok()) sa = a.Go();
  });
  std::thread tb([&] {
    sb = b.Create(DropoutParams(b, 12));
    if (sb.ok()) sb = b.Go();
  });
  ta.join();
  tb.join();
  ASSERT_TRUE(sa.ok()) << sa;
  ASSERT_TRUE(sb.ok()) << sb;
  EXPECT_TRUE(BitwiseEqual(a.Adapter(), alone_a));
  EXPECT_TRUE(BitwiseEqual(b.Adapter(), alone_b));
}

TEST(TrainerRngTest, ProcessWideGeneratorIsNotTouched) {
  Harness h;  // the test's tiny model draws its weights from the process-wide generator
  at::manual_seed(1234);
  const at::Tensor expected = at::randn({8});
  at::manual_seed(1234);
  ASSERT_TRUE(h.Create(DropoutParams(h, 11)).ok());
  ASSERT_TRUE(h.Go().ok());
  EXPECT_TRUE(at::equal(at::randn({8}), expected));
}

TEST(TrainerRngTest, CheckpointFromAnotherDeviceResumesWithAWarning) {
  const std::string dir = FreshDir("ckpt");
  auto opts = SmallOptions(5);
  Harness full;
  auto pf = full.Params(opts);
  pf.adapter.module_dropout = 0.5;
  ASSERT_TRUE(full.Create(pf).ok());
  ASSERT_TRUE(full.Go().ok());

  Harness first;
  auto p1 = first.Params(opts, RepetitiveRows(16), dir);
  p1.adapter.module_dropout = 0.5;
  ASSERT_TRUE(first.Create(p1).ok());
  std::atomic<bool> cancel{false};
  EXPECT_EQ(first.Go(&cancel, [&](const TrainEvent& e) {
                  if (e.kind == TrainEvent::Kind::kStep && e.step == 2) cancel = true;
                }).code(),
            absl::StatusCode::kCancelled);
  // The whole random state is the job's host generator: no device file.
  const fs::path ckpt = fs::path(dir) / "step-2";
  EXPECT_TRUE(fs::exists(ckpt / "rng_cpu.bin"));
  EXPECT_FALSE(fs::exists(ckpt / "rng_cuda.bin"));
  // Pretend the checkpoint was written on a GPU.
  std::ifstream in(ckpt / "state.json");
  nlohmann::json state = nlohmann::json::parse(in);
  in.close();
  EXPECT_EQ(state["device"], "cpu");
  state["device"] = "cuda:0";
  std::ofstream(ckpt / "state.json") << state.dump(2);

  Harness second;
  auto p2 = second.Params(opts, RepetitiveRows(16), dir);
  p2.adapter.module_dropout = 0.5;
  ASSERT_TRUE(second.Create(p2).ok());
  ASSERT_TRUE(second.Go().ok());
  bool warned = false;
  for (const auto& e : second.events) {
    warned |= e.kind == TrainEvent::Kind::kWarning &&
              absl::StrContains(e.message, "written on cuda:0, resuming on cpu");
  }
  EXPECT_TRUE(warned);
  // The random state carried over: on one device the result is still exact.
  EXPECT_TRUE(BitwiseEqual(full.Adapter(), second.Adapter()));
  EXPECT_EQ(DeviceChangeWarning("cpu", "cpu"), "");
  EXPECT_EQ(DeviceChangeWarning("", "cuda:0"), "");  // older checkpoints do not say
}

// Emulates CUDA's situation on the CPU: the trainer's autocast scope sets bf16, but outside
// it (when backward runs) the thread's autocast dtype is fp16, as CUDA's default is.
class OuterAutocastDtype {
 public:
  explicit OuterAutocastDtype(at::ScalarType t) : was_(at::autocast::get_autocast_dtype(at::kCPU)) {
    at::autocast::set_autocast_dtype(at::kCPU, t);
  }
  ~OuterAutocastDtype() { at::autocast::set_autocast_dtype(at::kCPU, was_); }

 private:
  at::ScalarType was_;
};

TEST(ActivationCheckpointingTest, RecomputesInTheForwardAutocastDtype) {
  OuterAutocastDtype fp16_outside(at::kHalf);
  auto opts = SmallOptions(3);
  Harness plain, ckpt;
  auto pp = plain.Params(opts);
  pp.cpu_autocast_for_testing = true;
  ASSERT_TRUE(plain.Create(pp).ok());
  ASSERT_TRUE(plain.Go().ok());
  opts.activation_checkpointing = true;
  auto pc = ckpt.Params(opts);
  pc.cpu_autocast_for_testing = true;
  ASSERT_TRUE(ckpt.Create(pc).ok());
  ASSERT_TRUE(ckpt.Go().ok());
  auto a = plain.Adapter(), b = ckpt.Adapter();
  for (auto& [n, t] : a) {
    EXPECT_TRUE(at::allclose(t, b.at(n), 1e-5, 1e-7)) << n << " max diff "
                                                      << (t - b.at(n)).abs().max().item<double>();
  }
  // And autocast really ran (bf16 matmuls): the fp32 run differs.
  Harness fp32;
  opts.activation_checkpointing = false;
  ASSERT_TRUE(fp32.Create(fp32.Params(opts)).ok());
  ASSERT_TRUE(fp32.Go().ok());
  EXPECT_FALSE(BitwiseEqual(fp32.Adapter(), a));
}

TEST(ActivationCheckpointingTest, WorksWithCoft) {
  auto opts = SmallOptions(3);
  Harness plain, ckpt;
  auto pp = plain.Params(opts);
  pp.adapter.coft = true;
  ASSERT_TRUE(plain.Create(pp).ok());
  ASSERT_TRUE(plain.Go().ok());
  opts.activation_checkpointing = true;
  auto pc = ckpt.Params(opts);
  pc.adapter.coft = true;
  ASSERT_TRUE(ckpt.Create(pc).ok());
  absl::Status st = ckpt.Go();
  ASSERT_TRUE(st.ok()) << st;
  auto a = plain.Adapter(), b = ckpt.Adapter();
  for (auto& [n, t] : a) EXPECT_TRUE(at::allclose(t, b.at(n), 1e-5, 1e-7)) << n;
}

TEST(TrainerPrecisionTest, Float16ModelIsRefused) {
  const ModelConfig c = testing::TinyConfig();
  auto tensors = testing::RandomLlamaTensors(c, 7);
  LoadOptions lo;
  lo.dtype = at::kHalf;
  auto model = LlamaModel::FromSource(
      c, [&](const std::string& n) -> absl::StatusOr<at::Tensor> { return tensors.at(n); }, lo);
  ASSERT_TRUE(model.ok()) << model.status();
  Harness h;
  h.model = std::move(*model);
  auto st = Trainer::Create(h.Params(SmallOptions(2))).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(st.message(), "float16")) << st;
}

// The two model changes the trainer relies on.
TEST(ModelForTrainingTest, DocumentIdsIsolatePackedDocuments) {
  auto model = MakeTinyModel();
  auto doc_a = at::tensor(std::vector<int64_t>{5, 6, 7, 8}).view({1, 4});
  auto doc_b = at::tensor(std::vector<int64_t>{9, 10, 11}).view({1, 3});
  auto packed = at::cat({doc_a, doc_b}, 1);
  ForwardOptions fo;
  fo.position_ids = at::tensor(std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2}).view({1, 7});
  fo.document_ids = at::tensor(std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1}).view({1, 7});
  auto both = model->Forward(packed, fo);
  auto alone_b = model->Forward(doc_b);
  EXPECT_TRUE(at::allclose(both.narrow(1, 4, 3), alone_b, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(both.narrow(1, 0, 4), model->Forward(doc_a), 1e-5, 1e-5));
  // Undefined document_ids: unchanged behaviour (doc b sees doc a).
  ForwardOptions plain;
  plain.position_ids = fo.position_ids;
  EXPECT_FALSE(at::allclose(model->Forward(packed, plain).narrow(1, 4, 3), alone_b, 1e-5, 1e-5));
}

TEST(ModelForTrainingTest, WeightCentricMatchesInputCentric) {
  auto model = MakeTinyModelWithAdapter();
  ASSERT_NE(model, nullptr);
  auto ids = at::tensor(std::vector<int64_t>{1, 50, 99, 200, 3}).view({1, 5});
  auto ic = model->Forward(ids);
  model->set_oft_compute(OftCompute::kWeightCentric);
  auto wc = model->Forward(ids);
  EXPECT_TRUE(at::allclose(ic, wc, 1e-4, 1e-4)) << (ic - wc).abs().max().item<double>();
  ASSERT_TRUE(model->SetActiveAdapters({}).ok());
  auto base = model->Forward(ids);
  EXPECT_FALSE(at::allclose(ic, base, 1e-4, 1e-4));
}

// Whether the autograd graph behind `t` has a node whose name contains `what`.
bool GraphHas(const at::Tensor& t, const std::string& what) {
  std::vector<torch::autograd::Node*> stack{t.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  while (!stack.empty()) {
    torch::autograd::Node* n = stack.back();
    stack.pop_back();
    if (n == nullptr || !seen.insert(n).second) continue;
    if (n->name().find(what) != std::string::npos) return true;
    for (const auto& e : n->next_edges()) stack.push_back(e.function.get());
  }
  return false;
}

// The model's default compute (kAuto) folds the Linears whose outputs the pass's tokens reach
// (tiny model: q/k/v/o/down have 16-32 outputs, gate/up 64), so at 40 tokens q/k/v fold as a
// group while gate/up still rotate x together, and at 5 tokens nothing folds. The loss and
// every adapter gradient match input-centric.
TEST(ModelForTrainingTest, AutoFoldsWhereItPaysAndMatchesInputCentric) {
  auto model = MakeTinyModelWithAdapter();
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->oft_compute(), OftCompute::kAuto);
  at::manual_seed(5);
  for (const int64_t tokens : {40, 5}) {
    SCOPED_TRACE(tokens);
    const at::Tensor ids = at::randint(0, 256, {1, tokens + 1}, at::kLong);
    const at::Tensor in = ids.narrow(1, 0, tokens), targets = ids.narrow(1, 1, tokens);
    std::map<std::string, at::Tensor> grads[3];
    double loss[3];
    bool folded[3];
    const OftCompute computes[3] = {OftCompute::kAuto, OftCompute::kInputCentric, OftCompute::kFolded};
    for (int k = 0; k < 3; ++k) {
      model->set_oft_compute(computes[k]);
      const at::Tensor l = model->CausalLmLoss(in, targets);
      folded[k] = GraphHas(l, "FoldedOft");
      l.backward();
      auto params = model->AdapterParameters("a");
      ASSERT_TRUE(params.ok()) << params.status();
      for (auto& [n, p] : *params) {
        grads[k][n] = p.grad().clone();
        p.mutable_grad() = at::Tensor();
      }
      loss[k] = l.item<double>();
    }
    model->set_oft_compute(OftCompute::kAuto);
    EXPECT_EQ(folded[0], tokens == 40);
    EXPECT_FALSE(folded[1]);
    EXPECT_TRUE(folded[2]);
    for (int k : {0, 2}) {
      EXPECT_NEAR(loss[k], loss[1], 1e-5 * std::abs(loss[1]));
      for (const auto& [n, g] : grads[1]) {  // fp32 rounding, relative to the largest entry
        const double diff = (grads[k].at(n) - g).abs().max().item<double>();
        EXPECT_LE(diff, 1e-4 * g.abs().max().item<double>()) << k << " " << n;
      }
    }
  }
}

}  // namespace
}  // namespace oft
