#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/model/safetensors.h"
#include "server/model/safetensors_torch.h"
#include "server/train/trainer.h"
#include "server/train/trainer_checkpoint.h"
#include "server/train/trainer_state.h"
#include "torch/serialize/archive.h"

namespace oft {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr int kCheckpointFormat = 1;

// Keys whose values differ between two JSON objects, "key (checkpoint X, now Y)".
std::vector<std::string> JsonDiff(const Json& saved, const Json& now) {
  std::vector<std::string> out;
  std::set<std::string> keys;
  for (auto it = saved.begin(); it != saved.end(); ++it) keys.insert(it.key());
  for (auto it = now.begin(); it != now.end(); ++it) keys.insert(it.key());
  for (const auto& k : keys) {
    const Json a = saved.contains(k) ? saved[k] : Json();
    const Json b = now.contains(k) ? now[k] : Json();
    if (a != b) out.push_back(absl::StrCat(k, " (checkpoint ", a.dump(), ", now ", b.dump(), ")"));
  }
  return out;
}

absl::StatusOr<int64_t> CheckpointStep(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5) return absl::NotFoundError(name);
  int64_t n = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return absl::NotFoundError(name);
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

}  // namespace

std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    auto step = CheckpointStep(e.path().filename().string());
    if (step.ok() && fs::exists(e.path() / "state.json", ec)) out.emplace_back(*step, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string DeviceChangeWarning(const std::string& written_on, const std::string& resumed_on) {
  if (written_on.empty() || written_on == resumed_on) return "";
  return absl::StrCat("written on ", written_on, ", resuming on ", resumed_on,
                      ": the random state carries over (all draws are made on the host), but "
                      "the numbers are not bitwise those of a run that stays on one device");
}

absl::Status Trainer::WriteCheckpoint(const Emit& emit) {
  State& s = *state_;
  const std::string& root = params_.checkpoint_dir;
  const std::string name = absl::StrCat("step-", s.step);
  const fs::path final_dir = fs::path(root) / name;
  const fs::path tmp = fs::path(root) / absl::StrCat(".tmp-", name, "-", ::getpid());
  if (params_.collective != nullptr && params_.collective->rank() != 0) {
    // Rank 0 writes the group's checkpoint (every rank holds the same state).
    s.last_checkpoint_step = s.step;
    s.last_checkpoint_dir = final_dir.string();
    return absl::OkStatus();
  }
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create checkpoint_dir ", root, ": ", ec.message()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [n, t] : s.params) tensors.emplace_back(n, t.detach());
  OFT_RETURN_IF_ERROR(WriteSafetensors((tmp / "adapter.safetensors").string(), tensors));
  if (s.have_best) {
    std::vector<std::pair<std::string, at::Tensor>> best;
    for (size_t i = 0; i < s.params.size(); ++i) best.emplace_back(s.params[i].first, s.best_params[i]);
    OFT_RETURN_IF_ERROR(WriteSafetensors((tmp / "best_adapter.safetensors").string(), best));
  }
  {
    torch::serialize::OutputArchive archive;
    s.optimizer->save(archive);
    std::ostringstream os;
    archive.save_to(os);
    OFT_RETURN_IF_ERROR(WriteFileAtomic((tmp / "optimizer.pt").string(), os.str()));
  }
  // The job's whole random state (job_rng.h): device-independent, so no device file.
  OFT_RETURN_IF_ERROR(WriteFileAtomic((tmp / "rng_cpu.bin").string(), s.rng.SaveBytes()));

  const BatchCursor c = s.train->cursor();
  Json j;
  j["format"] = kCheckpointFormat;
  j["step"] = s.step;
  j["total_steps"] = total_steps_;
  j["cursor"] = {{"epoch", c.epoch}, {"index", c.index}, {"fingerprint", c.fingerprint}};
  j["tokens_trained"] = s.tokens_trained;
  j["final_loss"] = s.final_loss;
  j["have_best"] = s.have_best;
  j["best_eval_loss"] = s.best_eval;
  j["best_step"] = s.best_step;
  j["evals_since_best"] = s.evals_since_best;
  j["have_eval"] = s.have_eval;
  j["last_eval_loss"] = s.last_eval;
  j["stopped_early"] = s.stopped_early;
  j["options"] = Json::parse(TrainOptionsToJson(params_.options));
  j["data_sha256"] = s.data_sha256;
  j["adapter"] = s.adapter_identity;
  j["adapter_name"] = params_.adapter_name;
  j["device"] = s.device.str();
  j["world_size"] = WorldSize();
  OFT_RETURN_IF_ERROR(WriteFileAtomic((tmp / "state.json").string(), j.dump(2)));
  OFT_RETURN_IF_ERROR(FsyncDirectory(tmp.string()));

  fs::remove_all(final_dir, ec);  // a re-written step (e.g. cancel right after a checkpoint)
  fs::rename(tmp, final_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename checkpoint into ", final_dir.string(), ": ", ec.message()));
  OFT_RETURN_IF_ERROR(FsyncDirectory(root));
  s.last_checkpoint_step = s.step;
  s.last_checkpoint_dir = final_dir.string();

  if (params_.options.keep_checkpoints > 0) {
    auto all = ListCheckpoints(root);
    const int64_t excess = static_cast<int64_t>(all.size()) - params_.options.keep_checkpoints;
    for (int64_t i = 0; i < excess; ++i) {
      if (all[i].second != s.last_checkpoint_dir) fs::remove_all(all[i].second, ec);
    }
  }
  TrainEvent e;
  e.kind = TrainEvent::Kind::kCheckpoint;
  e.message = s.last_checkpoint_dir;
  emit(e);
  return absl::OkStatus();
}

absl::Status Trainer::LoadCheckpoint(const std::string& dir) {
  State& s = *state_;
  OFT_ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/state.json"));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.value("format", 0) != kCheckpointFormat) {
    return absl::FailedPreconditionError(absl::StrCat(dir, "/state.json is not a checkpoint of this format"));
  }
  const Json options_now = Json::parse(TrainOptionsToJson(params_.options));
  if (auto diff = JsonDiff(j["options"], options_now); !diff.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir, " was written with different train options: ", absl::StrJoin(diff, ", "),
        "; use a new checkpoint_dir or the original options"));
  }
  if (j.value("data_sha256", "") != s.data_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir, " was written for different training/validation data (sha256 ",
        j.value("data_sha256", ""), ", now ", s.data_sha256, ")"));
  }
  if (auto diff = JsonDiff(j["adapter"], s.adapter_identity); !diff.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir, " was written for a different adapter: ", absl::StrJoin(diff, ", ")));
  }

  OFT_ASSIGN_OR_RETURN(auto adapter, SafetensorsFile::Open(dir + "/adapter.safetensors"));
  std::unique_ptr<SafetensorsFile> best;
  if (j.value("have_best", false)) {
    OFT_ASSIGN_OR_RETURN(best, SafetensorsFile::Open(dir + "/best_adapter.safetensors"));
  }
  s.best_params.clear();
  {
    at::NoGradGuard no_grad;
    for (const auto& [name, param] : s.params) {
      OFT_ASSIGN_OR_RETURN(at::Tensor t, adapter->Tensor(name));
      if (t.sizes() != param.sizes()) {
        return absl::FailedPreconditionError(absl::StrCat("checkpoint ", dir, ": tensor ", name,
                                                          " has shape ", c10::str(t.sizes()),
                                                          ", the adapter has ", c10::str(param.sizes())));
      }
      const_cast<at::Tensor&>(param).copy_(t);
      if (best) {
        OFT_ASSIGN_OR_RETURN(at::Tensor b, best->Tensor(name));
        s.best_params.push_back(b.to(param.device(), param.scalar_type()));
      }
    }
  }
  {
    OFT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(dir + "/optimizer.pt"));
    std::istringstream is(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(is, s.device);
    s.optimizer->load(archive);
  }
  {
    // rng_cuda.bin of older checkpoints held the process-wide CUDA generator, which no
    // draw of a job uses any more: it is not needed and not read.
    OFT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(dir + "/rng_cpu.bin"));
    OFT_RETURN_IF_ERROR(s.rng.LoadBytes(bytes, dir + "/rng_cpu.bin"));
  }
  if (auto warning = DeviceChangeWarning(j.value("device", ""), s.device.str()); !warning.empty()) {
    s.pending_warnings.emplace_back(WarningCode::kTrainingWarning,
                                    absl::StrCat("checkpoint ", fs::path(dir).filename().string(), ": ", warning));
  }

  const Json& c = j["cursor"];
  const BatchCursor cursor{c["epoch"].get<int64_t>(), c["index"].get<int64_t>(),
                           c["fingerprint"].get<uint64_t>()};
  if (const int64_t written = j.value("world_size", int64_t{1}); written != WorldSize()) {
    // Another world size: the global batch (world_size x batch_size) differs, the sample
    // position carries over (trainer.h).
    if (written < 1) {
      return absl::FailedPreconditionError(absl::StrCat("checkpoint ", dir, ": bad world_size ", written));
    }
    OFT_RETURN_IF_ERROR(s.train->SeekFromBatchSize(cursor, written * params_.options.batch_size));
    s.pending_warnings.emplace_back(
        WarningCode::kTrainingWarning,
        absl::StrCat("checkpoint ", fs::path(dir).filename().string(), " was written by ", written,
                     " data-parallel ranks, this run has ", WorldSize(),
                     ": training continues at the same sample position (epoch ", cursor.epoch,
                     ", sequence ", cursor.index, ") with a global batch of ",
                     WorldSize() * params_.options.batch_size, " instead of ",
                     written * params_.options.batch_size,
                     " sequences per micro-step; the result matches neither world size's "
                     "uninterrupted run"));
  } else {
    OFT_RETURN_IF_ERROR(s.train->Seek(cursor));
  }
  s.step = j["step"].get<int64_t>();
  s.tokens_trained = j["tokens_trained"].get<int64_t>();
  s.final_loss = j["final_loss"].get<double>();
  s.have_best = j["have_best"].get<bool>();
  s.best_eval = s.have_best ? j["best_eval_loss"].get<double>() : 0.0;
  s.best_step = j["best_step"].get<int64_t>();
  s.evals_since_best = j["evals_since_best"].get<int64_t>();
  s.have_eval = j["have_eval"].get<bool>();
  s.last_eval = s.have_eval ? j["last_eval_loss"].get<double>() : 0.0;
  s.stopped_early = j["stopped_early"].get<bool>();
  s.last_checkpoint_step = s.step;
  s.last_checkpoint_dir = dir;
  return absl::OkStatus();
}

}  // namespace oft
