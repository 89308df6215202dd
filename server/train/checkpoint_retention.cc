#include "server/train/checkpoint_retention.h"

#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/train/trainer_checkpoint.h"

namespace oft {
namespace {

namespace fs = std::filesystem;

absl::Status RemoveTree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot remove ", path.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CheckpointRetention> ParseCheckpointRetention(absl::string_view text) {
  if (text == "all") return CheckpointRetention::kAll;
  if (text == "last") return CheckpointRetention::kLast;
  if (text == "none") return CheckpointRetention::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("--checkpoint_retention must be all, last or none, got '", text.substr(0, 80), "'"));
}

const char* CheckpointRetentionName(CheckpointRetention policy) {
  switch (policy) {
    case CheckpointRetention::kAll: return "all";
    case CheckpointRetention::kLast: return "last";
    case CheckpointRetention::kNone: return "none";
  }
  return "?";
}

absl::StatusOr<int64_t> ApplyCheckpointRetention(const std::string& work_dir,
                                                 CheckpointRetention policy) {
  if (policy == CheckpointRetention::kAll) return 0;
  const fs::path root = fs::path(work_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    if (absl::Status st = RemoveTree(fs::path(work_dir) / "staging"); !st.ok()) return st;
    return 0;
  }
  std::string keep;
  if (policy == CheckpointRetention::kLast) {
    const auto complete = ListCheckpoints(root.string());
    if (!complete.empty()) keep = fs::path(complete.back().second).filename().string();
  }
  // Everything under checkpoints/ but the kept one: older steps, and half-written ones.
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (e.path().filename().string() != keep) doomed.push_back(e.path());
  }
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot list ", root.string(), ": ", ec.message()));
  }
  int64_t removed = 0;
  for (const fs::path& p : doomed) {
    if (absl::Status st = RemoveTree(p); !st.ok()) return st;
    ++removed;
  }
  if (keep.empty()) {
    if (absl::Status st = RemoveTree(root); !st.ok()) return st;
  }
  if (absl::Status st = RemoveTree(fs::path(work_dir) / "staging"); !st.ok()) return st;
  return removed;
}

}  // namespace oft
