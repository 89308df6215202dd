// Keeps the server's own file paths out of what tenants see.
//
// Job events, failure messages and job-check errors are shown to the tenant that owns the
// job; they must not reveal where the server keeps its data (`--data_dir`, model directories).
// PathRedactor replaces every registered directory, in the form it was given and in its
// absolute and canonical forms, with a label such as "<data_dir>".
//
// Thread safety: Add() before sharing; Redact() is const and may run on any thread.
#ifndef OFT_SERVER_COMMON_PATH_REDACT_H_
#define OFT_SERVER_COMMON_PATH_REDACT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace oft {

class PathRedactor {
 public:
  // Registers `dir` (and its absolute and canonical spellings) to be shown as `label`. The
  // spellings "", "." and "/" themselves are never replaced (that would mangle ordinary
  // text); "." still registers the absolute working directory.
  void Add(const std::string& dir, const std::string& label);

  // `text` with every registered directory replaced by its label, longest spelling first
  // (a model dir inside the data dir keeps its own label).
  std::string Redact(absl::string_view text) const;

 private:
  std::vector<std::pair<std::string, std::string>> spellings_;  // (path, label), longest first
};

}  // namespace oft

#endif  // OFT_SERVER_COMMON_PATH_REDACT_H_
