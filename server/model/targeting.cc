#include "server/model/targeting.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/client_regex.h"

namespace oft {
namespace {

bool NameMatches(const std::vector<std::string>& names, const std::optional<std::string>& regex,
                 const std::string& key) {
  if (regex) {
    // Validated specs compile; an unvalidated bad pattern matches nothing.
    auto re = ClientRegex::Compile("regex", *regex);
    return re.ok() && re->FullMatch(key);
  }
  for (const auto& n : names) {
    if (key == n) return true;
    if (key.size() > n.size() + 1 && key.compare(key.size() - n.size(), n.size(), n) == 0 &&
        key[key.size() - n.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

const char* const kCommonLayerPatterns[] = {"layers", "h", "block", "blocks", "layer"};

}  // namespace

absl::Status ValidateTargetSpec(const TargetSpec& spec) {
  for (const auto* re : {&spec.target_regex, &spec.exclude_regex}) {
    if (!*re) continue;
    auto compiled =
        ClientRegex::Compile(re == &spec.target_regex ? "target_modules" : "exclude_modules", **re);
    if (!compiled.ok()) return compiled.status();
  }
  if (!spec.target_regex && spec.target_modules.empty()) {
    return absl::InvalidArgumentError(
        "target_modules must name at least one module, or be \"all-linear\"");
  }
  for (const auto& n : spec.target_modules) {
    if (n.empty()) return absl::InvalidArgumentError("target_modules contains an empty name");
  }
  for (int64_t l : spec.layers_to_transform) {
    if (l < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("layers_to_transform entries must be >= 0, got ", l));
    }
  }
  return absl::OkStatus();
}

std::optional<int64_t> LayerIndex(const std::string& name,
                                  const std::optional<std::string>& layers_pattern) {
  std::vector<std::string> patterns;
  if (layers_pattern) {
    patterns.push_back(*layers_pattern);
  } else {
    patterns.assign(std::begin(kCommonLayerPatterns), std::end(kCommonLayerPatterns));
  }
  for (const auto& p : patterns) {
    // PEFT: re.match(rf".*\.{p}\.(\d+)\.", key) — the pattern is a plain word here.
    const std::string needle = absl::StrCat(".", p, ".");
    size_t pos = 0;
    while ((pos = name.find(needle, pos)) != std::string::npos) {
      size_t i = pos + needle.size(), j = i;
      while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
      if (j > i && j < name.size() && name[j] == '.') return std::stoll(name.substr(i, j - i));
      pos += 1;
    }
  }
  return std::nullopt;
}

bool IsTargeted(const TargetSpec& spec, const std::string& name, bool is_output_layer) {
  if (NameMatches(spec.exclude_modules, spec.exclude_regex, name)) return false;
  bool match;
  if (spec.all_linear()) {
    match = !is_output_layer;
  } else {
    match = NameMatches(spec.target_modules, spec.target_regex, name);
  }
  if (!match) return false;
  if (!spec.layers_to_transform.empty()) {
    auto idx = LayerIndex(name, spec.layers_pattern);
    if (!idx) return false;
    bool listed = false;
    for (int64_t l : spec.layers_to_transform) listed |= (l == *idx);
    return listed;
  }
  return true;
}

absl::StatusOr<std::vector<std::string>> SelectTargets(const TargetSpec& spec,
                                                       const std::vector<std::string>& linear_names,
                                                       const std::string& output_name) {
  if (auto s = ValidateTargetSpec(spec); !s.ok()) return s;
  std::vector<std::string> out;
  for (const auto& n : linear_names) {
    if (IsTargeted(spec, n, n == output_name)) out.push_back(n);
  }
  if (out.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "target_modules ",
        spec.target_regex ? absl::StrCat("\"", *spec.target_regex, "\"")
                          : absl::StrCat("[", absl::StrJoin(spec.target_modules, ", "), "]"),
        " matched no Linear module of the model"));
  }
  return out;
}

}  // namespace oft
