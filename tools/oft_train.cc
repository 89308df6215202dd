// oft_train: trains one OFTv2 adapter from the command line, printing one JSON line per
// training event on stdout (flushed per line). Used by the resume test and `make demo`.
//
//   oft_train --model_dir=DIR --train=train.jsonl [--valid=valid.jsonl] --out=ADAPTER_DIR
//             [--checkpoint_dir=DIR] [--config=job.json] [--threads=N] [--device=cpu|cuda:0]
//             [--dtype=fp32|bf16] [--chat_template=NAME] [--adapter_name=NAME]
//             [--cuda_kernels=auto|on|off]   (kernel self-check, server/oft/self_check.h)
//             [--nf4]                        (QOFT: the base's decoder Linears in NF4)
//             [--target_modules=q_proj,v_proj|all-linear] [--oft_block_size=32] [--r=0]
//             [--<any TrainOptions field>=VALUE ...]
//
// job.json: {"train_options": {TrainOptions JSON}, "oft_block_size": 32, "r": 0,
//            "target_modules": [...], "module_dropout": 0.0, "chat_template": "chatml",
//            "block_share": false, "use_cayley_neumann": true, "num_cayley_neumann_terms": 5,
//            "coft": false, "eps": 6e-5, "adapter_name": "default"}.
// Every key is honoured or rejected by name (exit 2), in job.json and as a --flag; a key of
// the wrong JSON type is rejected naming it. A block size / r that PEFT's divisor rule
// changes is announced: a stderr warning and a {"kind":"warning"} line before training.
// Length: name one of max_steps and epochs (the other becomes 0); both non-zero is refused.
// --dtype defaults to the trainer's precision policy (precision.h: fp32 on the CPU, bf16 on
// CUDA unless bf16_autocast is off). Individual flags override job.json. Exit status: 0 done, 1 error, 2 usage, 3 cancelled
// (SIGINT/SIGTERM: a checkpoint is written, a rerun resumes).
//
// Data parallel: launched with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, LOCAL_RANK, LOCAL_WORLD_SIZE, TORCHELASTIC_USE_AGENT_STORE; server/dist/
// launch_env.h), each process is one rank of a c10d group (TCPStore + Gloo); --batch_size is
// the per-rank micro-batch (trainer.h). Only rank 0 prints events and writes --out and the
// checkpoints (--checkpoint_dir must be shared by the ranks); every rank prints its errors.
// --dist_timeout_seconds (default 300) bounds every wait for a peer. CUDA ranks (--device=cuda,
// meaning cuda:LOCAL_RANK) use NCCL in builds that have it (compiled, not yet run on a GPU).
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ATen/Parallel.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/common/file_util.h"
#include "server/oft/cpu_isa.h"
#include "server/data/chat_template.h"
#include "server/data/dataset.h"
#include "server/dist/c10d_collective.h"
#include "server/dist/launch_env.h"
#include "server/model/hf_config.h"
#include "server/model/llama.h"
#include "server/model/tokenizer.h"
#include "server/oft/self_check.h"
#include "server/model/targeting.h"
#include "server/train/block_plan.h"
#include "server/train/precision.h"
#include "server/train/trainer.h"

namespace {

using Json = nlohmann::json;
std::atomic<bool> g_cancel{false};

void OnSignal(int) { g_cancel.store(true); }

void PrintError(const absl::Status& st) {
  Json j;
  j["kind"] = "error";
  j["code"] = absl::StatusCodeToString(st.code());
  j["message"] = std::string(st.message());
  std::cout << j.dump() << std::endl;
  std::cerr << "oft_train: " << st << std::endl;
}

// A flag value as JSON: numbers and booleans as such, anything else a string.
Json FlagValue(const std::string& v) {
  Json j = Json::parse(v, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && (j.is_number() || j.is_boolean())) return j;
  return Json(v);
}

// The adapter options job.json (and the command line) may set, with their JSON types.
enum class KeyType { kInt, kNumber, kBool, kString, kStringOrList, kObject };
const std::map<std::string, KeyType>& JobKeys() {
  static const auto* const keys = new std::map<std::string, KeyType>{
      {"train_options", KeyType::kObject},   {"adapter_name", KeyType::kString},
      {"chat_template", KeyType::kString},   {"target_modules", KeyType::kStringOrList},
      {"oft_block_size", KeyType::kInt},     {"r", KeyType::kInt},
      {"module_dropout", KeyType::kNumber},  {"block_share", KeyType::kBool},
      {"use_cayley_neumann", KeyType::kBool}, {"num_cayley_neumann_terms", KeyType::kInt},
      {"coft", KeyType::kBool},              {"eps", KeyType::kNumber},
  };
  return *keys;
}

// Every key of `job` is known and of its type; the error names the key and the file.
absl::Status CheckJobKeys(const Json& job, const std::string& source) {
  for (auto it = job.begin(); it != job.end(); ++it) {
    auto known = JobKeys().find(it.key());
    if (known == JobKeys().end()) {
      std::string names;
      for (const auto& [k, t] : JobKeys()) names += (names.empty() ? "" : ", ") + k;
      return absl::InvalidArgumentError(absl::StrCat(source, ": unknown key \"", it.key(),
                                                     "\" (known: ", names, ")"));
    }
    const Json& v = it.value();
    bool ok = false;
    const char* want = "";
    switch (known->second) {
      case KeyType::kInt: ok = v.is_number_integer(); want = "an integer"; break;
      case KeyType::kNumber: ok = v.is_number(); want = "a number"; break;
      case KeyType::kBool: ok = v.is_boolean(); want = "true or false"; break;
      case KeyType::kString: ok = v.is_string(); want = "a string"; break;
      case KeyType::kStringOrList:
        ok = v.is_string() || (v.is_array() && std::all_of(v.begin(), v.end(),
                                                            [](const Json& x) { return x.is_string(); }));
        want = "a string or a list of strings";
        break;
      case KeyType::kObject: ok = v.is_object(); want = "an object"; break;
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": \"", it.key(), "\" must be ", want, ", got ", v.dump()));
    }
  }
  return absl::OkStatus();
}

constexpr char kUsage[] =
    "usage: oft_train --model_dir=DIR --train=train.jsonl [--valid=valid.jsonl] --out=ADAPTER_DIR\n"
    "                 [--checkpoint_dir=DIR] [--config=job.json] [--threads=N]\n"
    "                 [--device=cpu|cuda:0] [--dtype=fp32|bf16] [--chat_template=NAME]\n"
    "                 [--adapter_name=NAME] [--target_modules=q_proj,v_proj|all-linear]\n"
    "                 [--oft_block_size=32] [--r=0] [--<any TrainOptions field>=VALUE ...]\n"
    "                 [--block_share] [--use_cayley_neumann=BOOL] [--num_cayley_neumann_terms=N]\n"
    "                 [--coft] [--eps=E] [--module_dropout=P] [--dist_timeout_seconds=300]\n"
    "Trains one OFTv2 adapter, one JSON line per training event on stdout; resumes from\n"
    "--checkpoint_dir. job.json: {\"train_options\": {...}, \"oft_block_size\": 32, \"r\": 0,\n"
    "\"target_modules\": [...], \"module_dropout\": 0.0, \"chat_template\": \"chatml\",\n"
    "\"block_share\": false, \"use_cayley_neumann\": true, \"num_cayley_neumann_terms\": 5,\n"
    "\"coft\": false, \"eps\": 6e-5, \"adapter_name\": \"default\"}; any other key is an error.\n"
    "Length: give one of --max_steps / --epochs (the other becomes 0); both non-zero: an error.\n"
    "A block size (or r) that does not divide a module's input width is adjusted as PEFT does\n"
    "and announced on stderr and as a warning event.\n"
    "Data parallel: run one process per rank with torchrun's environment (RANK, WORLD_SIZE,\n"
    "MASTER_ADDR, MASTER_PORT; LOCAL_RANK, LOCAL_WORLD_SIZE, TORCHELASTIC_USE_AGENT_STORE);\n"
    "--batch_size is then per rank, rank 0 prints the events and writes --out and checkpoints.\n"
    "Exit status: 0 done, 1 error, 2 usage, 3 cancelled.\n";

int Main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv, kUsage)) return 0;
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) {
      std::cerr << "unexpected argument " << a << "\n";
      return 2;
    }
    const size_t eq = a.find('=');
    if (eq == std::string::npos) flags[a.substr(2)] = "true";
    else flags[a.substr(2, eq - 2)] = a.substr(eq + 1);
  }
  auto take = [&](const std::string& k, const std::string& def = "") {
    auto it = flags.find(k);
    if (it == flags.end()) return def;
    std::string v = it->second;
    flags.erase(it);
    return v;
  };
  const std::string model_dir = take("model_dir"), train_path = take("train"),
                    valid_path = take("valid"), out_dir = take("out"),
                    checkpoint_dir = take("checkpoint_dir"), config_path = take("config");
  const int threads = std::stoi(take("threads", "0"));
  std::string device = take("device", "cpu");
  const std::string dtype = take("dtype", "");
  const bool nf4 = take("nf4", "false") == "true";
  const std::string dist_timeout = take("dist_timeout_seconds", "300");
  if (model_dir.empty() || train_path.empty()) {
    std::cerr << "oft_train: --model_dir and --train are required\n" << kUsage;
    return 2;
  }
  if (absl::Status isa = oft::cpu::CheckCpuIsaEnvironment(); !isa.ok()) {
    return PrintError(isa), 2;
  }
  // Data parallel: join the group first, so a misconfigured launch fails before loading.
  auto launch = oft::LaunchEnvFromEnvironment([](const char* n) { return std::getenv(n); });
  if (!launch.ok()) return PrintError(launch.status()), 2;
  std::unique_ptr<oft::Collective> group;
  if (launch->has_value()) {
    double seconds = 0;
    if (!absl::SimpleAtod(dist_timeout, &seconds) || !(seconds > 0) || seconds > 86400) {
      return PrintError(absl::InvalidArgumentError(absl::StrCat(
                 "--dist_timeout_seconds must be in (0, 86400], got \"", dist_timeout, "\""))),
             2;
    }
    oft::C10dOptions dist;
    dist.timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
    // CUDA ranks (NCCL): --device=cuda means this rank's device, cuda:LOCAL_RANK, as torchrun's.
    if (device == "cuda") device = "cuda:" + std::to_string((*launch)->local_rank);
    if (device.rfind("cuda", 0) == 0) dist.cuda_device = c10::Device(device).index();
    auto connected = oft::ConnectC10d(**launch, dist);
    if (!connected.ok()) return PrintError(connected.status()), 1;
    group = std::move(*connected);
  }
  const bool rank0 = group == nullptr || group->rank() == 0;
  oft::ConfigureCpuRuntime(threads);
  {
    // The custom kernels of the training device (and the CPU) checked against their
    // composite paths before the first step; log lines go to stderr (stdout is events).
    auto mode = oft::ParseKernelMode(take("cuda_kernels", "auto"));
    if (!mode.ok()) return PrintError(mode.status()), 2;
    oft::KernelSelfCheckOptions check;
    check.mode = *mode;
    check.devices = {device, "cpu"};
    auto report = oft::RunKernelSelfCheck(check);
    if (!report.ok()) return PrintError(report.status()), 1;
  }

  Json job = Json::object();
  if (!config_path.empty()) {
    auto text = oft::ReadFile(config_path);
    if (!text.ok()) return PrintError(text.status()), 1;
    job = Json::parse(*text, nullptr, false);
    if (job.is_discarded() || !job.is_object()) {
      return PrintError(absl::InvalidArgumentError(config_path + ": not a JSON object")), 1;
    }
  }
  if (absl::Status keys = CheckJobKeys(job, config_path); !keys.ok()) {
    return PrintError(keys), 2;
  }
  for (const auto& [k, type] : JobKeys()) {
    if (k == "train_options" || !flags.count(k)) continue;
    const std::string v = take(k);
    // A string key keeps the text as is ("--chat_template=1" is a name, not a number).
    job[k] = type == KeyType::kString || type == KeyType::kStringOrList ? Json(v) : FlagValue(v);
  }
  if (absl::Status keys = CheckJobKeys(job, "command line"); !keys.ok()) {
    return PrintError(keys), 2;
  }
  Json topts = job.value("train_options", Json::object());
  for (auto& [k, v] : flags) topts[k] = FlagValue(v);  // every other flag is a train option
  // Naming only one of max_steps / epochs selects it (the other defaults to 0).
  if (topts.contains("max_steps") && !topts.contains("epochs")) topts["epochs"] = 0;
  if (topts.contains("epochs") && !topts.contains("max_steps")) topts["max_steps"] = 0;
  auto options = oft::TrainOptionsFromJson(topts.dump());
  if (!options.ok()) return PrintError(options.status()), 2;
  if (absl::Status v = options->Validate(); !v.ok()) return PrintError(v), 2;  // a usage error

  oft::TrainerParams p;
  p.options = *options;
  p.checkpoint_dir = checkpoint_dir;
  p.base_model_name = model_dir;
  p.adapter_name = job.value("adapter_name", std::string("default"));
  p.adapter.oft_block_size = job.value("oft_block_size", int64_t{32});
  p.adapter.r = job.value("r", int64_t{0});
  p.adapter.module_dropout = job.value("module_dropout", 0.0);
  p.adapter.block_share = job.value("block_share", p.adapter.block_share);
  p.adapter.use_cayley_neumann = job.value("use_cayley_neumann", p.adapter.use_cayley_neumann);
  p.adapter.num_cayley_neumann_terms =
      job.value("num_cayley_neumann_terms", p.adapter.num_cayley_neumann_terms);
  p.adapter.coft = job.value("coft", p.adapter.coft);
  p.adapter.eps = job.value("eps", p.adapter.eps);
  if (absl::Status v = p.adapter.Validate(); !v.ok()) return PrintError(v), 2;
  if (job.contains("target_modules")) {
    const Json& t = job["target_modules"];
    if (t.is_array()) {
      for (const auto& x : t) p.targets.target_modules.push_back(x.get<std::string>());
    } else {
      p.targets.target_modules = absl::StrSplit(t.get<std::string>(), ',');
    }
  } else {
    p.targets.target_modules = {"all-linear"};
  }

  oft::LoadOptions lo;
  lo.device = device;
  if (dtype.empty()) {
    auto config = oft::LoadModelConfig(model_dir);
    if (!config.ok()) return PrintError(config.status()), 1;
    lo.dtype = oft::TrainingBaseDtype(*config, device.rfind("cuda", 0) == 0 ? c10::Device(device)
                                                                              : c10::Device(c10::kCPU),
                                      p.options.bf16_autocast);
  } else {
    lo.dtype = dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  }
  lo.quantize_nf4 = nf4;
  auto model = oft::LlamaModel::Load(model_dir, lo);
  if (!model.ok()) return PrintError(model.status()), 1;
  auto tokenizer = oft::Tokenizer::FromFile(model_dir + "/tokenizer.json");
  if (!tokenizer.ok()) return PrintError(tokenizer.status()), 1;
  auto train = oft::ParseJsonlFile(train_path);
  if (!train.ok()) return PrintError(train.status()), 1;
  p.train = std::move(*train);
  if (!valid_path.empty()) {
    auto valid = oft::ParseJsonlFile(valid_path);
    if (!valid.ok()) return PrintError(valid.status()), 1;
    p.valid = std::move(*valid);
  }
  {
    bool has_chat = false;
    for (const auto* rows : {&p.train, &p.valid}) {
      for (const oft::Example& e : *rows) has_chat = has_chat || e.format == oft::RowFormat::kChat;
    }
    std::optional<std::string> named;
    if (job.contains("chat_template")) named = job["chat_template"].get<std::string>();
    auto kind = oft::ResolveTrainingTemplate(named, model_dir, has_chat);
    if (!kind.ok()) return PrintError(kind.status()), 2;
    p.chat_template = *kind;
  }
  p.model = model->get();
  p.tokenizer = tokenizer->get();
  p.collective = group.get();

  // Announce what PEFT's divisor rule changes (the trainer applies it silently).
  {
    auto config = oft::LoadModelConfig(model_dir);
    if (!config.ok()) return PrintError(config.status()), 1;
    const std::map<std::string, int64_t> linears = oft::LinearInputs(*config);
    std::vector<std::string> names;
    for (const auto& [name, in] : linears) names.push_back(name);
    auto selected = oft::SelectTargets(p.targets, names, "lm_head");
    if (!selected.ok()) return PrintError(selected.status()), 2;
    auto plan = oft::PlanBlocks(p.adapter, *selected, linears, "");
    if (!plan.ok()) return PrintError(plan.status()), 2;
    for (const std::string& w : plan->warnings) {
      std::cerr << "oft_train: warning: " << w << std::endl;
      oft::TrainEvent e;
      e.kind = oft::TrainEvent::Kind::kWarning;
      e.warning = oft::WarningCode::kBlockSizeAdjusted;
      e.message = w;
      if (rank0) std::cout << oft::TrainEventToJson(e) << std::endl;
    }
  }
  auto trainer = oft::Trainer::Create(std::move(p));
  if (!trainer.ok()) return PrintError(trainer.status()), 1;
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  absl::Status st = (*trainer)->Run(
      [rank0](const oft::TrainEvent& e) {
        if (rank0) std::cout << oft::TrainEventToJson(e) << std::endl;
      },
      &g_cancel);
  if (absl::IsCancelled(st)) return PrintError(st), 3;
  if (!st.ok()) return PrintError(st), 1;
  if (!out_dir.empty() && rank0) {
    st = (*trainer)->SaveAdapter(out_dir);
    if (!st.ok()) return PrintError(st), 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
