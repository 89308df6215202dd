#include "server/train/train_options.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace oft {
namespace {

using Json = nlohmann::json;

absl::Status OutOfRange(absl::string_view field, absl::string_view range, double value) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be in ", range, ", got ", value));
}

// Closed / half-open interval checks that also reject NaN.
bool In(double v, double lo, double hi, bool lo_open, bool hi_open) {
  if (!std::isfinite(v)) return false;
  if (lo_open ? v <= lo : v < lo) return false;
  if (hi_open ? v >= hi : v > hi) return false;
  return true;
}

}  // namespace

absl::string_view LrScheduleName(LrSchedule schedule) {
  switch (schedule) {
    case LrSchedule::kConstant: return "constant";
    case LrSchedule::kLinear: return "linear";
    case LrSchedule::kCosine: return "cosine";
  }
  return "?";
}

absl::StatusOr<LrSchedule> ParseLrSchedule(absl::string_view name) {
  for (LrSchedule s : {LrSchedule::kConstant, LrSchedule::kLinear, LrSchedule::kCosine}) {
    if (name == LrScheduleName(s)) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("schedule must be one of constant, linear, cosine, got \"", name, "\""));
}

absl::Status TrainOptions::Validate() const {
  if (!In(learning_rate, 0, 1, true, false)) return OutOfRange("learning_rate", "(0, 1]", learning_rate);
  if (!In(beta1, 0, 1, false, true)) return OutOfRange("beta1", "[0, 1)", beta1);
  if (!In(beta2, 0, 1, false, true)) return OutOfRange("beta2", "[0, 1)", beta2);
  if (!In(adam_eps, 0, 1e-2, true, false)) return OutOfRange("adam_eps", "(0, 0.01]", adam_eps);
  if (!In(weight_decay, 0, 1, false, false)) return OutOfRange("weight_decay", "[0, 1]", weight_decay);
  if (warmup_steps < 0) return OutOfRange("warmup_steps", "[0, inf)", warmup_steps);
  if (!In(min_lr_ratio, 0, 1, false, false)) return OutOfRange("min_lr_ratio", "[0, 1]", min_lr_ratio);
  if (grad_accum_steps < 1 || grad_accum_steps > 1024) {
    return OutOfRange("grad_accum_steps", "[1, 1024]", grad_accum_steps);
  }
  if (!std::isfinite(max_grad_norm) || max_grad_norm < 0) {
    return OutOfRange("max_grad_norm", "[0, inf) (0 = off)", max_grad_norm);
  }
  if (batch_size < 1 || batch_size > 4096) return OutOfRange("batch_size", "[1, 4096]", batch_size);
  if (max_seq_len < 2 || max_seq_len > (int64_t{1} << 20)) {
    return OutOfRange("max_seq_len", "[2, 1048576]", max_seq_len);
  }
  if (max_steps < 0) return OutOfRange("max_steps", "[0, inf)", max_steps);
  if (epochs < 0 || epochs > 100000) return OutOfRange("epochs", "[0, 100000]", epochs);
  if ((max_steps > 0) == (epochs > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "set exactly one of max_steps and epochs (the other 0), got max_steps=", max_steps,
        ", epochs=", epochs));
  }
  if (eval_every < 0) return OutOfRange("eval_every", "[0, inf) (0 = off)", eval_every);
  if (!In(eval_fraction, 0, 0.5, false, false)) return OutOfRange("eval_fraction", "[0, 0.5]", eval_fraction);
  if (early_stopping_patience < 0) {
    return OutOfRange("early_stopping_patience", "[0, inf) (0 = off)", early_stopping_patience);
  }
  if (early_stopping_patience > 0 && eval_every == 0) {
    return absl::InvalidArgumentError("early_stopping_patience needs eval_every > 0");
  }
  if (select_best && eval_every == 0) {
    return absl::InvalidArgumentError("select_best needs eval_every > 0");
  }
  if (checkpoint_every < 0) return OutOfRange("checkpoint_every", "[0, inf) (0 = off)", checkpoint_every);
  if (keep_checkpoints < 0) return OutOfRange("keep_checkpoints", "[0, inf) (0 = all)", keep_checkpoints);
  return absl::OkStatus();
}

// One list of fields drives both directions of the JSON mapping.
#define OFT_TRAIN_OPTION_FIELDS(X)                                                     \
  X(learning_rate) X(beta1) X(beta2) X(adam_eps) X(weight_decay) X(warmup_steps)      \
  X(min_lr_ratio) X(grad_accum_steps) X(max_grad_norm) X(batch_size) X(max_seq_len)   \
  X(pack) X(max_steps) X(epochs) X(seed) X(eval_every) X(eval_fraction)               \
  X(early_stopping_patience) X(select_best) X(checkpoint_every) X(keep_checkpoints)   \
  X(activation_checkpointing) X(bf16_autocast)

std::string TrainOptionsToJson(const TrainOptions& o) {
  Json j = Json::object();
#define OFT_WRITE_FIELD(name) j[#name] = o.name;
  OFT_TRAIN_OPTION_FIELDS(OFT_WRITE_FIELD)
#undef OFT_WRITE_FIELD
  j["schedule"] = std::string(LrScheduleName(o.schedule));
  return j.dump();
}

namespace {

template <typename T>
absl::Status ReadField(const Json& v, absl::string_view key, T* out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return absl::InvalidArgumentError(absl::StrCat(key, " must be a boolean"));
    *out = v.get<bool>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) return absl::InvalidArgumentError(absl::StrCat(key, " must be a number"));
    *out = v.get<double>();
  } else if constexpr (std::is_unsigned_v<T>) {
    if (!v.is_number_unsigned()) {
      return absl::InvalidArgumentError(absl::StrCat(key, " must be a non-negative integer"));
    }
    *out = v.get<uint64_t>();
  } else {
    if (!v.is_number_integer()) return absl::InvalidArgumentError(absl::StrCat(key, " must be an integer"));
    *out = v.get<int64_t>();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TrainOptions> TrainOptionsFromJson(absl::string_view text) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("train options: not a JSON object");
  }
  TrainOptions o;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const Json& v = it.value();
    if (key == "schedule") {
      if (!v.is_string()) return absl::InvalidArgumentError("schedule must be a string");
      auto s = ParseLrSchedule(v.get<std::string>());
      if (!s.ok()) return s.status();
      o.schedule = *s;
      continue;
    }
    bool known = false;
#define OFT_READ_FIELD(name)                                 \
  if (key == #name) {                                        \
    known = true;                                            \
    absl::Status st = ReadField(v, #name, &o.name);          \
    if (!st.ok()) return st;                                 \
  }
    OFT_TRAIN_OPTION_FIELDS(OFT_READ_FIELD)
#undef OFT_READ_FIELD
    if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown train option \"", key, "\""));
  }
  return o;
}

}  // namespace oft
