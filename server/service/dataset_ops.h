// The dataset operations behind every API: storing an uploaded file (validated, content-
// addressed under <data_dir>/datasets/<sha256>.jsonl, recorded in the DatasetStore) and
// deleting one. The gRPC DatasetService (client-streamed uploads) and the HTTP /v1/files
// routes (multipart bodies) both call these, so a file is accepted or refused by the same
// rules whichever API sent it.
//
// Errors name what is wrong: INVALID_ARGUMENT (rows, with the line; size or sha256
// mismatch), RESOURCE_EXHAUSTED (over ServiceLimits::max_upload_bytes), NOT_FOUND (another
// tenant's or an unknown id), INTERNAL/UNAVAILABLE (disk). On error nothing is recorded and
// no file is left behind. Thread-safe (the stores are).
#ifndef OFT_SERVER_SERVICE_DATASET_OPS_H_
#define OFT_SERVER_SERVICE_DATASET_OPS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "oft/v1/datasets.pb.h"
#include "server/service/service_env.h"

namespace oft {

// A file received in full under <data_dir>/datasets (a temp name), not yet checked.
struct ReceivedUpload {
  std::string tenant;
  std::string name;                 // already validated (ValidateName)
  std::string temp_path;            // renamed to its final path on success, else left to the caller
  std::string sha256;               // lowercase hex of the received bytes
  int64_t size_bytes = 0;           // bytes received
  oft::v1::DatasetFormat requested_format = oft::v1::DATASET_FORMAT_UNSPECIFIED;  // = any
};

// A fresh temp path under <data_dir>/datasets for an upload in progress.
std::string NewUploadTempPath(const ServiceEnv& env);

// Validates the rows of a received (fsynced) file, moves it to its content address and
// records it for the tenant. On success upload.temp_path is cleared.
absl::StatusOr<DatasetRecord> PublishUpload(const ServiceEnv& env, ReceivedUpload& upload);

// Stores `bytes` (a whole JSONL file) as a dataset: the temp file, PublishUpload and the
// cleanup on error. `name` must be valid (ValidateName).
absl::StatusOr<DatasetRecord> StoreDatasetBytes(const ServiceEnv& env, const std::string& tenant,
                                                const std::string& name, absl::string_view bytes);

// Deletes the tenant's dataset record, and its file when no other record shares it.
absl::StatusOr<DatasetRecord> DeleteDatasetAndFile(const ServiceEnv& env, const std::string& tenant,
                                                   const std::string& id);

// The gRPC form of a record.
oft::v1::Dataset DatasetToProto(const DatasetRecord& record);

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_DATASET_OPS_H_
