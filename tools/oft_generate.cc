// oft_generate: generation from a model directory, optionally with a PEFT OFT adapter.
//
//   oft_generate --model_dir=models/default [--adapter_dir=DIR] [--nf4]
//                [--max_tokens=48] [--temperature=0] [--top_p=1] [--top_k=0] [--seed=0]
//                [--stop=STRING] [--threads=N] PROMPT...
// Each PROMPT (the escape "\n" becomes a newline) is completed and printed as
//   {"prompt": ..., "completion": ..., "finish_reason": ...}   (one JSON line per prompt)
// Exit codes: 0 ok, 2 bad arguments, 1 any other error (message on stderr).
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ATen/Parallel.h"
#include "server/common/flags.h"
#include "server/common/runtime.h"
#include "server/artifacts/peft_format.h"
#include "server/model/generate.h"
#include "server/model/llama.h"
#include "server/model/tokenizer.h"
#include "server/oft/cpu_isa.h"

namespace {

constexpr char kUsage[] =
    "usage: oft_generate [--model_dir=models/default] [--adapter_dir=DIR] [--nf4]\n"
    "                    [--max_tokens=48] [--temperature=0] [--top_p=1] [--top_k=0] [--seed=0]\n"
    "                    [--stop=STRING]... [--threads=N] PROMPT...\n"
    "Completes each PROMPT (\"\\n\" in it is a newline) and prints one JSON line per prompt:\n"
    "  {\"prompt\": ..., \"completion\": ..., \"finish_reason\": ...}\n"
    "--adapter_dir: a PEFT OFT adapter to apply; --nf4: quantize the base to NF4.\n"
    "Exit status: 0 ok, 2 bad arguments, 1 any other error.\n";

std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n') {
      out.push_back('\n');
      ++i;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "oft_generate: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (oft::AnswerHelp(argc, argv, kUsage)) return 0;
  std::string model_dir = "models/default", adapter_dir, v;
  oft::SamplingOptions o;
  o.max_tokens = 48;
  bool nf4 = false;
  int threads = 0;
  std::vector<std::string> prompts;
  try {
    for (int i = 1; i < argc; ++i) {
      if (oft::ParseFlag(argv[i], "--model_dir", &v)) model_dir = v;
      else if (oft::ParseFlag(argv[i], "--adapter_dir", &v)) adapter_dir = v;
      else if (oft::ParseFlag(argv[i], "--max_tokens", &v)) o.max_tokens = std::stoll(v);
      else if (oft::ParseFlag(argv[i], "--temperature", &v)) o.temperature = std::stod(v);
      else if (oft::ParseFlag(argv[i], "--top_p", &v)) o.top_p = std::stod(v);
      else if (oft::ParseFlag(argv[i], "--top_k", &v)) o.top_k = std::stoll(v);
      else if (oft::ParseFlag(argv[i], "--seed", &v)) o.seed = std::stoull(v);
      else if (oft::ParseFlag(argv[i], "--stop", &v)) o.stop_strings.push_back(Unescape(v));
      else if (oft::ParseFlag(argv[i], "--threads", &v)) threads = std::stoi(v);
      else if (std::strcmp(argv[i], "--nf4") == 0) nf4 = true;
      else if (std::strncmp(argv[i], "--", 2) == 0) {
        std::fprintf(stderr, "oft_generate: unknown flag %s\n%s", argv[i], kUsage);
        return 2;
      } else {
        prompts.push_back(Unescape(argv[i]));
      }
    }
  } catch (const std::exception&) {
    std::fprintf(stderr, "oft_generate: bad value in %s\n", v.c_str());
    return 2;
  }
  if (prompts.empty()) {
    std::fprintf(stderr, "oft_generate: no PROMPT given\n%s", kUsage);
    return 2;
  }
  if (absl::Status isa = oft::cpu::CheckCpuIsaEnvironment(); !isa.ok()) {
    std::fprintf(stderr, "oft_generate: %s\n", std::string(isa.message()).c_str());
    return 2;
  }
  oft::ConfigureCpuRuntime(threads);
  oft::LoadOptions lo;
  lo.quantize_nf4 = nf4;
  auto model = oft::LlamaModel::Load(model_dir, lo);
  if (!model.ok()) return Fail(model.status());
  auto tok = oft::Tokenizer::FromFile(model_dir + "/tokenizer.json");
  if (!tok.ok()) return Fail(tok.status());
  if (!adapter_dir.empty()) {
    auto cfg = oft::LoadPeftAdapter(**model, adapter_dir, "adapter");
    if (!cfg.ok()) return Fail(cfg.status());
    for (const auto& w : cfg->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    if (auto s = (*model)->SetActiveAdapters({"adapter"}); !s.ok()) return Fail(s);
  }
  if ((*tok)->eos_id()) o.stop_ids.push_back(*(*tok)->eos_id());
  for (const auto& p : prompts) {
    auto ids = (*tok)->Encode(p, /*add_special_tokens=*/true);
    auto r = oft::Generate(**model, tok->get(), ids, o);
    if (!r.ok()) return Fail(r.status());
    nlohmann::json j = {{"prompt", p}, {"completion", r->text}, {"finish_reason", r->finish_reason}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    std::fflush(stdout);
  }
  return 0;
}
