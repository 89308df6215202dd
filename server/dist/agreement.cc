#include "server/dist/agreement.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace oft {
namespace {

using Json = nlohmann::json;

// Long values (hashes, option objects) are cut so that one message stays readable.
std::string Short(const std::string& s) {
  constexpr size_t kMax = 160;
  return s.size() <= kMax ? s : absl::StrCat(s.substr(0, kMax), "...");
}

}  // namespace

absl::Status CompareIdentities(absl::string_view what, const std::vector<std::string>& identities) {
  if (identities.empty()) return absl::OkStatus();
  const std::string& ref = identities[0];
  const Json ref_json = Json::parse(ref, nullptr, /*allow_exceptions=*/false);
  for (size_t r = 1; r < identities.size(); ++r) {
    if (identities[r] == ref) continue;
    const Json j = Json::parse(identities[r], nullptr, /*allow_exceptions=*/false);
    if (ref_json.is_object() && j.is_object()) {
      std::set<std::string> keys;
      for (auto it = ref_json.begin(); it != ref_json.end(); ++it) keys.insert(it.key());
      for (auto it = j.begin(); it != j.end(); ++it) keys.insert(it.key());
      for (const std::string& k : keys) {
        const std::string mine = j.contains(k) ? j[k].dump() : "missing";
        const std::string theirs = ref_json.contains(k) ? ref_json[k].dump() : "missing";
        if (mine == theirs) continue;
        return absl::FailedPreconditionError(absl::StrCat("ranks disagree on ", what, ": ", k,
                                                          " is ", Short(mine), " on rank ", r,
                                                          " but ", Short(theirs), " on rank 0"));
      }
      continue;  // equal objects, different spelling
    }
    return absl::FailedPreconditionError(absl::StrCat("ranks disagree on ", what, ": rank ", r,
                                                      " has ", Short(identities[r]),
                                                      " but rank 0 has ", Short(ref)));
  }
  return absl::OkStatus();
}

}  // namespace oft
