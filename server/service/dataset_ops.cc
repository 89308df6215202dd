#include "server/service/dataset_ops.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/data/dataset.h"
#include "server/service/upload_file.h"

namespace oft {
namespace {

using oft::v1::DatasetFormat;

DatasetFormat FormatOf(RowFormat f) {
  switch (f) {
    case RowFormat::kText: return oft::v1::DATASET_FORMAT_TEXT;
    case RowFormat::kPromptCompletion: return oft::v1::DATASET_FORMAT_PROMPT_COMPLETION;
    case RowFormat::kChat: return oft::v1::DATASET_FORMAT_CHAT;
  }
  return oft::v1::DATASET_FORMAT_UNSPECIFIED;
}

}  // namespace

std::string NewUploadTempPath(const ServiceEnv& env) {
  return NewTempUploadName(env.data_dir + "/datasets");
}

absl::StatusOr<DatasetRecord> PublishUpload(const ServiceEnv& env, ReceivedUpload& upload) {
  OFT_ASSIGN_OR_RETURN(std::string contents,
                       ReadFile(upload.temp_path, static_cast<size_t>(env.limits.max_upload_bytes)));
  DatasetLimits limits;
  limits.max_file_bytes = env.limits.max_upload_bytes;
  OFT_ASSIGN_OR_RETURN(DatasetSummary summary, ValidateJsonl(contents, limits));
  const DatasetFormat format = FormatOf(summary.format);
  if (upload.requested_format != oft::v1::DATASET_FORMAT_UNSPECIFIED && upload.requested_format != format) {
    return absl::InvalidArgumentError(absl::StrCat("header.format is ",
                                                   oft::v1::DatasetFormat_Name(upload.requested_format),
                                                   " but the rows are ", oft::v1::DatasetFormat_Name(format)));
  }
  // Content-addressed: the same bytes uploaded twice share one file.
  const std::string final_path = absl::StrCat(env.data_dir, "/datasets/", upload.sha256, ".jsonl");
  if (rename(upload.temp_path.c_str(), final_path.c_str()) != 0) {
    return ErrnoStatus(errno, "storing the upload");
  }
  upload.temp_path.clear();
  OFT_RETURN_IF_ERROR(FsyncDirectory(env.data_dir + "/datasets"));
  NewDataset record;
  record.tenant = upload.tenant;
  record.name = upload.name;
  record.sha256 = upload.sha256;
  record.size_bytes = upload.size_bytes;
  record.rows = summary.rows;
  record.blank_lines = summary.blank_lines;
  record.format = oft::v1::DatasetFormat_Name(format);
  record.path = final_path;
  return env.datasets->CreateDataset(record);
}

absl::StatusOr<DatasetRecord> StoreDatasetBytes(const ServiceEnv& env, const std::string& tenant,
                                                const std::string& name, absl::string_view bytes) {
  if (bytes.empty()) return absl::InvalidArgumentError("file is empty");
  if (static_cast<int64_t>(bytes.size()) > env.limits.max_upload_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("file is ", bytes.size(),
                                                     " bytes, over the upload limit of ",
                                                     env.limits.max_upload_bytes, " bytes"));
  }
  ReceivedUpload upload;
  upload.tenant = tenant;
  upload.name = name;
  upload.size_bytes = static_cast<int64_t>(bytes.size());
  OFT_ASSIGN_OR_RETURN(std::unique_ptr<UploadFile> file,
                       UploadFile::Create(NewUploadTempPath(env), "the upload file"));
  OFT_RETURN_IF_ERROR(file->Append(bytes));
  OFT_RETURN_IF_ERROR(file->Finish());
  upload.temp_path = file->path();
  upload.sha256 = file->sha256();
  absl::StatusOr<DatasetRecord> stored = PublishUpload(env, upload);
  if (upload.temp_path.empty()) file->Keep();  // moved to its final path
  return stored;
}

absl::StatusOr<DatasetRecord> DeleteDatasetAndFile(const ServiceEnv& env, const std::string& tenant,
                                                   const std::string& id) {
  OFT_ASSIGN_OR_RETURN(DeletedDataset d, env.datasets->DeleteDataset(tenant, id));
  if (!d.path_still_referenced) {
    std::error_code ec;
    std::filesystem::remove(d.record.path, ec);  // the record is gone; a leftover file is harmless
  }
  return d.record;
}

oft::v1::Dataset DatasetToProto(const DatasetRecord& r) {
  oft::v1::Dataset d;
  d.set_id(r.id);
  d.set_name(r.name);
  d.set_sha256(r.sha256);
  d.set_size_bytes(r.size_bytes);
  DatasetFormat f = oft::v1::DATASET_FORMAT_UNSPECIFIED;
  oft::v1::DatasetFormat_Parse(r.format, &f);
  d.set_format(f);
  *d.mutable_create_time() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(r.created_at));
  d.mutable_validation()->set_rows(r.rows);
  d.mutable_validation()->set_blank_lines(r.blank_lines);
  return d;
}

}  // namespace oft
