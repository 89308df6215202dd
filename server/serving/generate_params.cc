#include "server/serving/generate_params.h"

#include "absl/strings/str_cat.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"

namespace oft {

absl::Status ValidateGenerateParams(const GenerateParams& p) {
  if (p.text.has_value() == p.chat.has_value()) {
    return absl::InvalidArgumentError("prompt is required: set exactly one of text or chat");
  }
  if (p.text && p.text->empty()) return absl::InvalidArgumentError("text must not be empty");
  if (p.chat) {
    if (p.chat->empty() || p.chat->size() > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat.messages must hold 1-256 messages, got ", p.chat->size()));
    }
    for (size_t i = 0; i < p.chat->size(); ++i) {
      const Message& m = (*p.chat)[i];
      if (m.role != "system" && m.role != "user" && m.role != "assistant") {
        return absl::InvalidArgumentError(absl::StrCat(
            "chat.messages[", i, "].role must be \"system\", \"user\" or \"assistant\", got \"",
            m.role, "\""));
      }
      if (m.content.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("chat.messages[", i, "].content must not be empty"));
      }
    }
  }
  if (p.max_tokens < 0 || p.max_tokens > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be in [1, 4096] (0 = 256), got ",
                                                   p.max_tokens));
  }
  if (p.temperature && !(*p.temperature >= 0.0 && *p.temperature <= 2.0)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be in [0, 2], got ", *p.temperature));
  }
  if (p.top_p && !(*p.top_p > 0.0 && *p.top_p <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", *p.top_p));
  }
  if (p.top_k && *p.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", *p.top_k));
  }
  if (p.stop.size() > 8) {
    return absl::InvalidArgumentError(absl::StrCat("stop holds at most 8 strings, got ", p.stop.size()));
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    if (p.stop[i].empty() || p.stop[i].size() > 64) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop[", i, "] must be 1-64 bytes, got ", p.stop[i].size()));
    }
  }
  if (p.adapter && p.alias) return absl::InvalidArgumentError("set at most one of adapter_ref and alias");
  if (p.adapter) {
    OFT_RETURN_IF_ERROR(ValidateName("adapter_ref.name", p.adapter->name));
    if (p.adapter->version < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter_ref.version must be >= 0, got ", p.adapter->version));
    }
  }
  if (p.alias) OFT_RETURN_IF_ERROR(ValidateName("alias", *p.alias));
  return absl::OkStatus();
}

}  // namespace oft
