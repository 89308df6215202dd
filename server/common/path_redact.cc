#include "server/common/path_redact.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/ascii.h"

namespace oft {

void PathRedactor::Add(const std::string& dir, const std::string& label) {
  namespace fs = std::filesystem;
  std::vector<std::string> forms = {dir};
  std::error_code ec;
  const fs::path absolute = fs::absolute(dir, ec);
  if (!ec) forms.push_back(absolute.lexically_normal().string());
  const fs::path canonical = fs::weakly_canonical(dir, ec);
  if (!ec) forms.push_back(canonical.string());
  for (std::string f : forms) {
    while (f.size() > 1 && f.back() == '/') f.pop_back();
    if (f.empty() || f == "." || f == "/" || f == "./") continue;
    spellings_.emplace_back(std::move(f), label);
  }
  std::stable_sort(spellings_.begin(), spellings_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  spellings_.erase(std::unique(spellings_.begin(), spellings_.end()), spellings_.end());
}

namespace {

// Whether `c` may continue a file name: a match followed by one is another path
// ("/data" inside "/data2"), not the registered directory.
bool ContinuesName(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

}  // namespace

std::string PathRedactor::Redact(absl::string_view text) const {
  std::string out(text);
  // Longest first, one spelling at a time: labels ("<...>") never contain a registered path,
  // so a later replacement cannot undo an earlier one.
  for (const auto& [path, label] : spellings_) {
    std::string next;
    size_t from = 0;
    for (size_t at = out.find(path); at != std::string::npos; at = out.find(path, at + 1)) {
      const size_t end = at + path.size();
      if (at < from || (end < out.size() && ContinuesName(out[end]))) continue;
      next.append(out, from, at - from).append(label);
      from = end;
    }
    if (from == 0) continue;
    next.append(out, from, std::string::npos);
    out = std::move(next);
  }
  return out;
}

}  // namespace oft
