#include "server/model/tokenizer/post_processors.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/model/tokenizer/utf8.h"

namespace oft::tokenizer {
namespace {

class NoopPostProcessor : public PostProcessor {
 public:
  void Process(std::vector<int32_t>* /*ids*/) const override {}
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void Process(std::vector<int32_t>* ids) const override {
    for (const auto& step : steps_) step->Process(ids);
  }
  void SpecialIds(std::optional<int32_t>* before, std::optional<int32_t>* after) const override {
    for (const auto& step : steps_) step->SpecialIds(before, after);
  }
  void Around(std::vector<int32_t>* before, std::vector<int32_t>* after) const override {
    for (const auto& step : steps_) step->Around(before, after);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// TemplateProcessing's `single` template, and the fixed cls/sep of Roberta and Bert.
class TemplatePostProcessor : public PostProcessor {
 public:
  TemplatePostProcessor(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void Process(std::vector<int32_t>* ids) const override {
    ids->insert(ids->begin(), before_.begin(), before_.end());
    ids->insert(ids->end(), after_.begin(), after_.end());
  }
  void SpecialIds(std::optional<int32_t>* before, std::optional<int32_t>* after) const override {
    if (!before_.empty()) *before = before_.front();
    if (!after_.empty()) *after = after_.front();
  }
  void Around(std::vector<int32_t>* before, std::vector<int32_t>* after) const override {
    before->insert(before->begin(), before_.begin(), before_.end());
    after->insert(after->end(), after_.begin(), after_.end());
  }

 private:
  std::vector<int32_t> before_;
  std::vector<int32_t> after_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const Json& j,
                                                                  const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string type, RequireString(j, "type", path));
  if (type == "ByteLevel") return std::make_unique<NoopPostProcessor>();
  if (type == "Sequence") {
    OFT_ASSIGN_OR_RETURN(const Json* list, RequireMember(j, "processors", path));
    if (!list->is_array()) return Invalid(Key(path, "processors"), "expected an array");
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      OFT_ASSIGN_OR_RETURN(auto step,
                           ParsePostProcessor((*list)[i], Index(Key(path, "processors"), i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePostProcessor>(std::move(steps));
  }
  if (type == "TemplateProcessing") {
    OFT_ASSIGN_OR_RETURN(const Json* single, RequireMember(j, "single", path));
    const std::string spath = Key(path, "single");
    if (!single->is_array()) return Invalid(spath, "expected an array of template pieces");
    const Json* specials = Member(j, "special_tokens");
    std::vector<int32_t> before, after;
    bool seen_sequence = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const Json& item = (*single)[i];
      const std::string ipath = Index(spath, i);
      if (const Json* seq = Member(item, "Sequence"); seq != nullptr) {
        if (seen_sequence) return Invalid(ipath, "the single template has $A twice");
        seen_sequence = true;
        continue;
      }
      const Json* sp = Member(item, "SpecialToken");
      if (sp == nullptr) {
        return Invalid(ipath,
                       absl::StrCat("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}, got ",
                                    item.dump()));
      }
      OFT_ASSIGN_OR_RETURN(std::string name, RequireString(*sp, "id", Key(ipath, "SpecialToken")));
      const Json* entry = specials != nullptr ? Member(*specials, name.c_str()) : nullptr;
      if (entry == nullptr) {
        return Invalid(Key(path, "special_tokens"),
                       absl::StrCat("no entry for \"", name, "\" used by ", ipath));
      }
      const std::string epath = Key(Key(path, "special_tokens"), name);
      OFT_ASSIGN_OR_RETURN(const Json* ids, RequireMember(*entry, "ids", epath));
      if (!ids->is_array()) return Invalid(Key(epath, "ids"), "expected an array of ids");
      for (size_t k = 0; k < ids->size(); ++k) {
        OFT_ASSIGN_OR_RETURN(int32_t id, AsId((*ids)[k], Index(Key(epath, "ids"), k)));
        (seen_sequence ? after : before).push_back(id);
      }
    }
    if (!seen_sequence) return Invalid(spath, "the single template has no $A sequence");
    return std::make_unique<TemplatePostProcessor>(std::move(before), std::move(after));
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    std::vector<int32_t> ids[2];
    const char* keys[2] = {"cls", "sep"};
    for (int k = 0; k < 2; ++k) {
      OFT_ASSIGN_OR_RETURN(const Json* pair, RequireMember(j, keys[k], path));
      if (!pair->is_array() || pair->size() != 2) {
        return Invalid(Key(path, keys[k]), "expected [token, id]");
      }
      OFT_ASSIGN_OR_RETURN(int32_t id, AsId((*pair)[1], Index(Key(path, keys[k]), 1)));
      ids[k].push_back(id);
    }
    return std::make_unique<TemplatePostProcessor>(std::move(ids[0]), std::move(ids[1]));
  }
  return Unsupported(path, "post_processor", type,
                     "TemplateProcessing, ByteLevel, Sequence, RobertaProcessing, BertProcessing");
}

}  // namespace oft::tokenizer
