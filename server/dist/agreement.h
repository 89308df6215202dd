// Whether the ranks of one group agree on what they run: the comparison behind
// Collective::CheckAgreement, kept apart from any transport so that it is testable alone.
// Pure function, no LibTorch, thread-safe.
#ifndef OFT_SERVER_DIST_AGREEMENT_H_
#define OFT_SERVER_DIST_AGREEMENT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace oft {

// `identities[i]` is what rank i published: a JSON object (any other text is compared as a
// whole). OK when all are equal. Otherwise FAILED_PRECONDITION naming `what`, the first rank
// that differs from rank 0, the first top-level key whose values differ (keys in sorted
// order; a key missing on one side counts as differing) and both values, e.g.
//   "ranks disagree on the job: world_size is 3 on rank 1 but 2 on rank 0".
absl::Status CompareIdentities(absl::string_view what, const std::vector<std::string>& identities);

}  // namespace oft

#endif  // OFT_SERVER_DIST_AGREEMENT_H_
