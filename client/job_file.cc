#include "client/job_file.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "server/common/status_macros.h"

namespace oft {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Where an error happened: "source:line: " (line 0 = unknown).
struct Where {
  absl::string_view source;
  int line = 0;
  std::string Prefix() const {
    return line > 0 ? absl::StrCat(source, ":", line, ": ") : absl::StrCat(source, ": ");
  }
};

int LineOf(const YAML::Node& node) { return node.Mark().line + 1; }

const EnumValueDescriptor* FindEnumValue(const EnumDescriptor* e, absl::string_view text) {
  if (const auto* v = e->FindValueByName(std::string(text))) return v;
  const std::string upper = absl::AsciiStrToUpper(text);
  if (const auto* v = e->FindValueByName(upper)) return v;
  for (int i = 0; i < e->value_count(); ++i) {
    const auto* v = e->value(i);
    if (absl::EndsWith(v->name(), absl::StrCat("_", upper))) return v;
  }
  int number = 0;
  if (absl::SimpleAtoi(text, &number)) return e->FindValueByNumber(number);
  return nullptr;
}

std::string EnumNames(const EnumDescriptor* e) {
  std::vector<std::string> names;
  for (int i = 0; i < e->value_count(); ++i) names.push_back(e->value(i)->name());
  return absl::StrJoin(names, ", ");
}

const FieldDescriptor* FindByJsonName(const Descriptor* d, absl::string_view name) {
  for (int i = 0; i < d->field_count(); ++i) {
    if (d->field(i)->json_name() == name) return d->field(i);
  }
  return nullptr;
}

std::string KnownKeys(const Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return absl::StrJoin(names, ", ");
}

bool ParseBool(absl::string_view text, bool* out) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "true" || t == "yes" || t == "on" || t == "1") {
    *out = true;
    return true;
  }
  if (t == "false" || t == "no" || t == "off" || t == "0") {
    *out = false;
    return true;
  }
  return false;
}

// Sets (or, for repeated fields, appends) one scalar value of `field` parsed from `text`.
// `name` is the field's path for messages.
absl::Status SetScalar(const FieldDescriptor* field, absl::string_view text,
                       const std::string& name, const Where& where, Message* msg) {
  const Reflection* r = msg->GetReflection();
  const bool rep = field->is_repeated();
  auto bad = [&](absl::string_view want) {
    return absl::InvalidArgumentError(
        absl::StrCat(where.Prefix(), name, ": expected ", want, ", got \"", text, "\""));
  };
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad("a 32-bit integer");
      rep ? r->AddInt32(msg, field, v) : r->SetInt32(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad("an integer");
      rep ? r->AddInt64(msg, field, v) : r->SetInt64(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad("a non-negative 32-bit integer");
      rep ? r->AddUInt32(msg, field, v) : r->SetUInt32(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad("a non-negative integer");
      rep ? r->AddUInt64(msg, field, v) : r->SetUInt64(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      double v;
      if (!absl::SimpleAtod(text, &v)) return bad("a number");
      rep ? r->AddDouble(msg, field, v) : r->SetDouble(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_FLOAT: {
      float v;
      if (!absl::SimpleAtof(text, &v)) return bad("a number");
      rep ? r->AddFloat(msg, field, v) : r->SetFloat(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (!ParseBool(text, &v)) return bad("true or false");
      rep ? r->AddBool(msg, field, v) : r->SetBool(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      const std::string v(text);
      rep ? r->AddString(msg, field, v) : r->SetString(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumValueDescriptor* v = FindEnumValue(field->enum_type(), text);
      if (v == nullptr) return bad(absl::StrCat("one of ", EnumNames(field->enum_type())));
      rep ? r->AddEnum(msg, field, v) : r->SetEnum(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return absl::InvalidArgumentError(
          absl::StrCat(where.Prefix(), name, ": expected a mapping, got \"", text, "\""));
  }
  return absl::OkStatus();
}

absl::Status MergeMapping(const YAML::Node& node, absl::string_view source,
                          const std::string& path, Message* msg);

// One value (scalar or mapping) of `field`, set or appended.
absl::Status SetValue(const YAML::Node& value, const FieldDescriptor* field,
                      absl::string_view source, const std::string& name, Message* msg) {
  const Where where{source, LineOf(value)};
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    if (field->is_map()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where.Prefix(), name, ": map fields are not supported in job files"));
    }
    if (!value.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(where.Prefix(), name, ": expected a mapping"));
    }
    const Reflection* r = msg->GetReflection();
    Message* sub = field->is_repeated() ? r->AddMessage(msg, field) : r->MutableMessage(msg, field);
    return MergeMapping(value, source, name, sub);
  }
  if (!value.IsScalar()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where.Prefix(), name, ": expected a single value, got a ",
                     value.IsMap() ? "mapping" : "sequence"));
  }
  return SetScalar(field, value.Scalar(), name, where, msg);
}

absl::Status MergeMapping(const YAML::Node& node, absl::string_view source,
                          const std::string& path, Message* msg) {
  const Descriptor* d = msg->GetDescriptor();
  const Reflection* r = msg->GetReflection();
  const std::string where_name = path.empty() ? d->name() : path;
  if (!node.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(Where{source, LineOf(node)}.Prefix(),
                                                   "expected a mapping of ", where_name,
                                                   " fields"));
  }
  std::set<int> seen;
  std::map<const google::protobuf::OneofDescriptor*, std::string> oneof_seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    // Copies (a Node is a handle): it-> returns a temporary proxy, so references into it
    // would dangle after this statement.
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    const Where where{source, LineOf(key)};
    if (!key.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(where.Prefix(), "keys must be field names"));
    }
    const std::string& k = key.Scalar();
    const FieldDescriptor* field = d->FindFieldByName(k);
    if (field == nullptr) field = FindByJsonName(d, k);
    if (field == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where.Prefix(), "unknown key \"", k,
                                                     "\" in ", where_name, " (known: ",
                                                     KnownKeys(d), ")"));
    }
    const std::string name = path.empty() ? field->name() : absl::StrCat(path, ".", field->name());
    if (!seen.insert(field->number()).second) {
      return absl::InvalidArgumentError(absl::StrCat(where.Prefix(), "duplicate key \"", k, "\""));
    }
    if (value.IsNull()) continue;  // null = unset (proto3 JSON)
    if (const auto* oneof = field->containing_oneof();
        oneof != nullptr && !oneof->is_synthetic()) {
      auto [pos, inserted] = oneof_seen.emplace(oneof, field->name());
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(
            where.Prefix(), "\"", pos->second, "\" and \"", field->name(),
            "\" are both set, but only one of ", oneof->name(), " may be"));
      }
    }
    if (field->is_repeated()) {
      r->ClearField(msg, field);
      if (value.IsSequence()) {
        for (size_t i = 0; i < value.size(); ++i) {
          OFT_RETURN_IF_ERROR(
              SetValue(value[i], field, source, absl::StrCat(name, "[", i, "]"), msg));
        }
        continue;
      }
    } else if (value.IsSequence()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where.Prefix(), name, ": expected a single value, got a sequence"));
    }
    OFT_RETURN_IF_ERROR(SetValue(value, field, source, name, msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string msg = absl::StrCat("cannot read ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

absl::StatusOr<YAML::Node> LoadYaml(absl::string_view text, absl::string_view source) {
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where{source, e.mark.is_null() ? 0 : e.mark.line + 1}.Prefix(), e.msg));
  }
}

}  // namespace

absl::Status ParseTextMessage(absl::string_view text, absl::string_view source,
                              google::protobuf::Message* message) {
  OFT_ASSIGN_OR_RETURN(YAML::Node root, LoadYaml(text, source));
  if (!root.IsDefined() || root.IsNull()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": is empty"));
  }
  try {
    return MergeMapping(root, source, "", message);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(Where{source, e.mark.line + 1}.Prefix(), e.msg));
  }
}

absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text, absl::string_view source) {
  v1::JobSpec spec;
  OFT_RETURN_IF_ERROR(ParseTextMessage(text, source, &spec));
  return spec;
}

absl::StatusOr<v1::JobSpec> LoadJobSpecFile(const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string text, ReadText(path));
  return ParseJobSpec(text, path);
}

absl::StatusOr<v1::ChatPrompt> LoadChatPromptFile(const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string text, ReadText(path));
  OFT_ASSIGN_OR_RETURN(YAML::Node root, LoadYaml(text, path));
  v1::ChatPrompt prompt;
  try {
    if (root.IsSequence()) {
      YAML::Node wrapped(YAML::NodeType::Map);
      wrapped["messages"] = root;
      OFT_RETURN_IF_ERROR(MergeMapping(wrapped, path, "", &prompt));
    } else {
      OFT_RETURN_IF_ERROR(ParseTextMessage(text, path, &prompt));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(Where{path, e.mark.line + 1}.Prefix(), e.msg));
  }
  if (prompt.messages().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": has no messages"));
  }
  return prompt;
}

absl::Status SetFieldByPath(absl::string_view path, absl::string_view value,
                            google::protobuf::Message* message) {
  std::vector<absl::string_view> parts = absl::StrSplit(path, '.');
  Message* msg = message;
  std::string walked;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Descriptor* d = msg->GetDescriptor();
    const FieldDescriptor* field = d->FindFieldByName(std::string(parts[i]));
    if (field == nullptr) field = FindByJsonName(d, parts[i]);
    if (field == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown field \"", parts[i], "\" in ", walked.empty() ? d->name() : walked,
          " (known: ", KnownKeys(d), ")"));
    }
    walked = walked.empty() ? field->name() : absl::StrCat(walked, ".", field->name());
    const bool last = i + 1 == parts.size();
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (last || field->is_repeated()) {
        return absl::InvalidArgumentError(
            absl::StrCat(walked, " is a message; name one of its fields"));
      }
      msg = msg->GetReflection()->MutableMessage(msg, field);
      continue;
    }
    if (!last) {
      return absl::InvalidArgumentError(absl::StrCat(walked, " has no fields"));
    }
    const Where w{"", 0};
    auto with_name = [&](absl::Status s) {
      // SetScalar prefixes "source: "; here the flag's path says where.
      return s.ok() ? s
                    : absl::InvalidArgumentError(
                          absl::StripPrefix(s.message(), w.Prefix()));
    };
    if (field->is_repeated()) {
      msg->GetReflection()->ClearField(msg, field);
      if (value.empty()) return absl::OkStatus();
      for (absl::string_view item : absl::StrSplit(value, ',')) {
        OFT_RETURN_IF_ERROR(
            with_name(SetScalar(field, absl::StripAsciiWhitespace(item), walked, w, msg)));
      }
      return absl::OkStatus();
    }
    return with_name(SetScalar(field, value, walked, w, msg));
  }
  return absl::InvalidArgumentError("empty field path");
}

const std::vector<JobSpecFlag>& JobSpecFlags() {
  static const std::vector<JobSpecFlag>* const kFlags = new std::vector<JobSpecFlag>{
      {"base-model", "base_model"},
      {"validation-dataset", "validation_dataset_id"},
      {"validation-fraction", "validation_fraction"},
      {"output-adapter", "output_adapter_name"},
      {"priority", "priority"},
      {"learning-rate", "hyperparameters.learning_rate"},
      {"lr", "hyperparameters.learning_rate"},
      {"weight-decay", "hyperparameters.weight_decay"},
      {"schedule", "hyperparameters.schedule"},
      {"warmup-steps", "hyperparameters.warmup_steps"},
      {"min-lr-ratio", "hyperparameters.min_lr_ratio"},
      {"grad-accum-steps", "hyperparameters.grad_accum_steps"},
      {"max-grad-norm", "hyperparameters.max_grad_norm"},
      {"batch-size", "hyperparameters.batch_size"},
      {"max-seq-len", "hyperparameters.max_seq_len"},
      {"pack", "hyperparameters.pack"},
      {"max-steps", "hyperparameters.max_steps"},
      {"epochs", "hyperparameters.epochs"},
      {"seed", "hyperparameters.seed"},
      {"eval-every", "hyperparameters.eval_every"},
      {"early-stopping-patience", "hyperparameters.early_stopping_patience"},
      {"select-best", "hyperparameters.select_best"},
      {"checkpoint-every", "hyperparameters.checkpoint_every"},
      {"keep-checkpoints", "hyperparameters.keep_checkpoints"},
      {"activation-checkpointing", "hyperparameters.activation_checkpointing"},
      {"bf16-autocast", "hyperparameters.bf16_autocast"},
      {"r", "adapter_config.r"},
      {"oft-block-size", "adapter_config.oft_block_size"},
      {"use-cayley-neumann", "adapter_config.use_cayley_neumann"},
      {"num-cayley-neumann-terms", "adapter_config.num_cayley_neumann_terms"},
      {"block-share", "adapter_config.block_share"},
      {"coft", "adapter_config.coft"},
      {"eps", "adapter_config.eps"},
      {"module-dropout", "adapter_config.module_dropout"},
      {"bias", "adapter_config.bias"},
      {"target-modules", "adapter_config.target_modules"},
      {"target-regex", "adapter_config.target_regex"},
      {"exclude-modules", "adapter_config.exclude_modules"},
      {"layers-to-transform", "adapter_config.layers_to_transform"},
      {"layers-pattern", "adapter_config.layers_pattern"},
      {"quantize-base-nf4", "adapter_config.quantize_base_nf4"},
  };
  return *kFlags;
}

bool IsJobSpecFlag(absl::string_view flag) {
  if (flag == "dataset" || flag == "set") return true;
  for (const auto& f : JobSpecFlags()) {
    if (flag == f.flag) return true;
  }
  return false;
}

absl::Status ApplyJobSpecFlags(const std::vector<std::pair<std::string, std::string>>& flags,
                               v1::JobSpec* spec) {
  bool datasets_cleared = false;
  bool has_r = false;
  bool has_block = false;
  // A job's length is a number of steps or of epochs (a oneof): both on one command line
  // would let the later one win silently, so that is refused. Against the job file, the
  // flag replaces the file's choice.
  std::string steps_flag, epochs_flag;
  for (const auto& [flag, value] : flags) {
    if (flag == "r") has_r = true;
    if (flag == "oft-block-size") has_block = true;
    const absl::string_view set_path =
        flag == "set" ? absl::string_view(value).substr(0, value.find('=')) : "";
    if (flag == "max-steps" || set_path == "hyperparameters.max_steps") steps_flag = "--" + flag;
    if (flag == "epochs" || set_path == "hyperparameters.epochs") epochs_flag = "--" + flag;
  }
  if (!steps_flag.empty() && !epochs_flag.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        steps_flag == "--set" ? "--set=hyperparameters.max_steps" : steps_flag, " and ",
        epochs_flag == "--set" ? "--set=hyperparameters.epochs" : epochs_flag,
        " exclude each other: a job runs for a number of steps or of epochs; give one"));
  }
  for (const auto& [flag, value] : flags) {
    if (flag == "dataset") {
      if (!datasets_cleared) spec->clear_training_dataset_ids();
      datasets_cleared = true;
      for (absl::string_view id : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        spec->add_training_dataset_ids(std::string(id));
      }
      continue;
    }
    if (flag == "set") {
      const size_t eq = value.find('=');
      if (eq == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("--set wants PATH=VALUE, e.g. hyperparameters.pack=true; got \"",
                         value, "\""));
      }
      absl::Status s = SetFieldByPath(value.substr(0, eq), value.substr(eq + 1), spec);
      if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("--set: ", s.message()));
      continue;
    }
    const JobSpecFlag* known = nullptr;
    for (const auto& f : JobSpecFlags()) {
      if (flag == f.flag) known = &f;
    }
    if (known == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown submit flag --", flag));
    }
    absl::Status s = SetFieldByPath(known->path, value, spec);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", s.message()));
  }
  if (has_r && !has_block) spec->mutable_adapter_config()->set_oft_block_size(0);
  if (has_block && !has_r) spec->mutable_adapter_config()->set_r(0);
  return absl::OkStatus();
}

}  // namespace oft
