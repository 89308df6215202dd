// JobSpec resolution from arbitrary proto bytes (what CreateJob receives): parse as
// oft.v1.JobSpec, then ResolveJobSpec against the repository's models/default. Beyond "no
// crash": an error message stays far below gRPC's 16 KiB metadata limit (client values are
// echoed cut), and a resolved spec is a fixed point: its canonical JSON parses back to the
// same JSON, resolving it again gives the same spec, and the stored record turns into a Job.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/service/job_spec.h"
#include "server/service/model_catalog.h"

namespace {

const oft::ModelCatalog& Catalog() {
  static const oft::ModelCatalog* const catalog = [] {
    auto c = oft::ModelCatalog::Create({{"default", std::string(OFT_FUZZ_ROOT) + "/models/default"}});
    if (!c.ok()) std::abort();
    return new oft::ModelCatalog(*std::move(c));
  }();
  return *catalog;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  oft::v1::JobSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<oft::ResolvedJob> r = oft::ResolveJobSpec(spec, Catalog());
  if (!r.ok()) {
    if (r.status().message().size() > 8192) std::abort();  // an unbounded echo
    return 0;
  }
  absl::StatusOr<std::string> json = oft::JobSpecToJson(r->spec);
  if (!json.ok()) std::abort();  // a resolved spec must be storable
  absl::StatusOr<oft::v1::JobSpec> back = oft::JobSpecFromJson(*json);
  if (!back.ok()) std::abort();
  absl::StatusOr<std::string> again_json = oft::JobSpecToJson(*back);
  if (!again_json.ok() || *again_json != *json) std::abort();  // canonical
  absl::StatusOr<oft::ResolvedJob> again = oft::ResolveJobSpec(*back, Catalog());
  if (!again.ok()) std::abort();  // the stored spec resolves again (restart, idempotency)
  absl::StatusOr<std::string> resolved_twice = oft::JobSpecToJson(again->spec);
  if (!resolved_twice.ok() || *resolved_twice != *json) std::abort();  // defaults are stable
  oft::JobRecord record;
  record.id = "job-fuzz";
  record.spec_json = *json;
  if (!oft::JobToProto(record, 0, 1).ok()) std::abort();
  return 0;
}
