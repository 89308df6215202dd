#include "client/progress.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"

namespace oft {

int ExitCodeForJobState(v1::Job::State state) {
  switch (state) {
    case v1::Job::SUCCEEDED: return kExitOk;
    case v1::Job::FAILED: return kExitJobFailed;
    case v1::Job::CANCELLED: return kExitJobCancelled;
    default: return kExitRpcError;
  }
}

int ExitCodeForStatus(const absl::Status& status, bool is_download) {
  if (status.ok()) return kExitOk;
  if (is_download && status.code() == absl::StatusCode::kDataLoss) return kExitChecksumMismatch;
  return kExitRpcError;
}

std::string ToJson(const google::protobuf::Message& msg, bool pretty) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = pretty;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(msg, &out, opts).ok()) return "{}";
  if (pretty && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string FormatCliError(const absl::Status& status) {
  return absl::StrCat("oftctl: ", absl::StatusCodeToString(status.code()), ": ",
                      status.message());
}

std::string FormatEta(double seconds) {
  if (!(seconds >= 0) || std::isinf(seconds)) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, (s % 86400) / 3600);
}

std::string FormatCount(double value) {
  const double a = std::fabs(value);
  if (a < 1000) return absl::StrFormat("%.0f", value);
  if (a < 1e6) return absl::StrFormat("%.1fk", value / 1e3);
  if (a < 1e9) return absl::StrFormat("%.1fM", value / 1e6);
  return absl::StrFormat("%.1fG", value / 1e9);
}

std::string FormatBytes(int64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (std::fabs(v) >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return absl::StrCat(bytes, " B");
  return absl::StrFormat("%.1f %s", v, kUnits[u]);
}

std::string StateName(v1::Job::State state) {
  if (state == v1::Job::STATE_UNSPECIFIED) return "UNKNOWN";
  const std::string& name = v1::Job::State_Name(state);
  return name.empty() ? absl::StrCat("STATE_", static_cast<int>(state)) : name;
}

void WatchProgress::Apply(const v1::JobEvent& event) {
  last_event_id = std::max(last_event_id, event.event_id());
  if (job_id.empty()) job_id = event.job_id();
  switch (event.payload_case()) {
    case v1::JobEvent::kStateChanged:
      state = event.state_changed().state();
      if (state != v1::Job::QUEUED) {
        queue_position = 0;
        queue_reason.clear();
      }
      if (state == v1::Job::SUCCEEDED || state == v1::Job::FAILED ||
          state == v1::Job::CANCELLED) {
        eta_seconds = 0;
      }
      break;
    case v1::JobEvent::kStep: {
      const auto& s = event.step();
      has_step = true;
      step = s.progress().step();
      if (s.progress().total_steps() > 0) total_steps = s.progress().total_steps();
      epoch = s.progress().epoch();
      loss = s.metrics().loss();
      if (s.metrics().has_eval_loss()) eval_loss = s.metrics().eval_loss();
      learning_rate = s.metrics().learning_rate();
      tokens_per_second = s.metrics().tokens_per_second();
      eta_seconds = s.eta_seconds();
      if (state == v1::Job::STATE_UNSPECIFIED || state == v1::Job::QUEUED) {
        state = v1::Job::RUNNING;
      }
      break;
    }
    case v1::JobEvent::kEval:
      eval_loss = event.eval().eval_loss();
      break;
    case v1::JobEvent::kQueuePositionChanged:
      queue_position = event.queue_position_changed().queue_position();
      queue_reason = event.queue_position_changed().reason();
      break;
    default:
      break;
  }
}

void WatchProgress::ApplyJob(const v1::Job& job) {
  job_id = job.id();
  state = job.state();
  step = job.progress().step();
  total_steps = job.progress().total_steps();
  epoch = job.progress().epoch();
  loss = job.metrics().loss();
  if (job.metrics().has_eval_loss()) eval_loss = job.metrics().eval_loss();
  learning_rate = job.metrics().learning_rate();
  tokens_per_second = job.metrics().tokens_per_second();
  eta_seconds = job.eta_seconds();
  queue_position = job.queue_position();
  queue_reason = job.queue_reason();
  has_step = has_step || step > 0;
}

namespace {

std::string Bar(int64_t step, int64_t total, int cells) {
  const double frac = total > 0 ? std::clamp(static_cast<double>(step) / total, 0.0, 1.0) : 0;
  const int filled = static_cast<int>(frac * cells);
  return absl::StrCat("[", std::string(filled, '#'), std::string(cells - filled, '.'), "]");
}

std::string StepText(const WatchProgress& p) {
  if (p.total_steps > 0) {
    const double pct = 100.0 * static_cast<double>(p.step) / static_cast<double>(p.total_steps);
    return absl::StrFormat("%d/%d %.0f%%", p.step, p.total_steps, pct);
  }
  return absl::StrCat("step ", p.step);
}

}  // namespace

std::string RenderProgressLine(const WatchProgress& p, int width) {
  const size_t limit = static_cast<size_t>(std::max(width, 20) - 1);
  std::string head = StateName(p.state);
  if (p.state == v1::Job::QUEUED) {
    std::string line = head;
    if (p.queue_position > 0) absl::StrAppend(&line, " position ", p.queue_position);
    if (!p.queue_reason.empty()) absl::StrAppend(&line, " (", p.queue_reason, ")");
    if (line.size() > limit) line.resize(limit);
    return line;
  }
  if (!p.has_step) {
    if (head.size() > limit) head.resize(limit);
    return head;
  }
  // Parts in display order with a drop priority (higher = dropped first).
  struct Part {
    std::string text;
    int drop;
  };
  std::vector<Part> parts;
  parts.push_back({StepText(p), 0});
  parts.push_back({absl::StrFormat("loss %.4f", p.loss), 0});
  if (p.eval_loss.has_value()) parts.push_back({absl::StrFormat("eval %.4f", *p.eval_loss), 3});
  parts.push_back({absl::StrFormat("lr %.2e", p.learning_rate), 4});
  parts.push_back({absl::StrCat(FormatCount(p.tokens_per_second), " tok/s"), 2});
  parts.push_back({absl::StrCat("ETA ", FormatEta(p.eta_seconds)), 1});

  auto join = [&](int max_drop) {
    std::vector<std::string> kept;
    for (const auto& part : parts) {
      if (part.drop <= max_drop) kept.push_back(part.text);
    }
    return absl::StrJoin(kept, " ");
  };
  // A 10..30-cell bar when everything fits beside it; otherwise drop the bar, then parts.
  if (p.total_steps > 0) {
    const std::string rest = join(4);
    const size_t fixed = head.size() + 1 + rest.size();
    if (fixed + 13 <= limit) {
      const int cells = static_cast<int>(std::min<size_t>(30, limit - fixed - 3));
      return absl::StrCat(head, " ", Bar(p.step, p.total_steps, cells), " ", rest);
    }
  }
  for (int max_drop = 4; max_drop >= 0; --max_drop) {
    std::string line = absl::StrCat(head, " ", join(max_drop));
    if (line.size() <= limit) return line;
  }
  std::string line = absl::StrCat(head, " ", join(0));
  if (line.size() > limit) line.resize(limit);
  return line;
}

std::string FormatEventLine(const v1::JobEvent& event) {
  std::string line = absl::StrCat("#", event.event_id(), " ");
  switch (event.payload_case()) {
    case v1::JobEvent::kStateChanged: {
      const auto& sc = event.state_changed();
      if (sc.previous_state() == v1::Job::STATE_UNSPECIFIED) {
        absl::StrAppend(&line, "state ", StateName(sc.state()));
      } else {
        absl::StrAppend(&line, "state ", StateName(sc.previous_state()), " -> ",
                        StateName(sc.state()));
      }
      if (!sc.message().empty()) absl::StrAppend(&line, ": ", sc.message());
      if (sc.has_failure()) {
        absl::StrAppend(&line, " [", v1::JobFailure::Reason_Name(sc.failure().reason()));
        if (!sc.failure().field().empty()) absl::StrAppend(&line, " ", sc.failure().field());
        absl::StrAppend(&line, "]");
        if (!sc.failure().message().empty() && sc.failure().message() != sc.message()) {
          absl::StrAppend(&line, " ", sc.failure().message());
        }
      }
      break;
    }
    case v1::JobEvent::kStep: {
      const auto& s = event.step();
      WatchProgress p;
      p.step = s.progress().step();
      p.total_steps = s.progress().total_steps();
      absl::StrAppend(&line, p.total_steps > 0 ? "step " : "", StepText(p),
                      absl::StrFormat(" loss %.4f lr %.2e ", s.metrics().loss(),
                                      s.metrics().learning_rate()),
                      FormatCount(s.metrics().tokens_per_second()), " tok/s ETA ",
                      FormatEta(s.eta_seconds()));
      break;
    }
    case v1::JobEvent::kEval: {
      const auto& e = event.eval();
      absl::StrAppend(&line, absl::StrFormat("eval step %d eval_loss %.4f", e.step(),
                                             e.eval_loss()));
      if (e.is_best()) {
        absl::StrAppend(&line, " (best)");
      } else if (e.evals_without_improvement() > 0) {
        absl::StrAppend(&line, " (", e.evals_without_improvement(), " without improvement)");
      }
      break;
    }
    case v1::JobEvent::kCheckpointSaved:
      absl::StrAppend(&line, "checkpoint step ", event.checkpoint_saved().step());
      break;
    case v1::JobEvent::kQueuePositionChanged:
      absl::StrAppend(&line, "queue position ", event.queue_position_changed().queue_position());
      if (!event.queue_position_changed().reason().empty()) {
        absl::StrAppend(&line, ": ", event.queue_position_changed().reason());
      }
      break;
    case v1::JobEvent::kWarning:
      absl::StrAppend(&line, "warning ", event.warning().code(), ": ", event.warning().message());
      break;
    default:
      absl::StrAppend(&line, "(unknown event)");
      break;
  }
  return line;
}

}  // namespace oft
