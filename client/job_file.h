// Job files and submit flags for oftctl: YAML or JSON text -> protobuf messages (JobSpec,
// ChatPrompt), and command-line flags that override single JobSpec fields.
//
// Text format: a mapping whose keys are the message's proto field names (snake_case) or
// their proto3 JSON names (lowerCamelCase); nested messages are nested mappings; repeated
// fields are sequences (a single scalar is accepted as a one-element list); enums are
// value names, case-insensitive, with or without the enum's prefix ("cosine", "COSINE",
// "none" for BIAS_NONE) or numbers; integers may be quoted (proto3 JSON writes int64 as
// strings); null leaves a field unset. JSON is parsed as the YAML subset it is, so both
// formats give line numbers in errors. Unlike protobuf's JSON parser this is strict about
// oneofs: setting two members of one oneof (e.g. max_steps and epochs) is an error.
//
// Errors are INVALID_ARGUMENT with "<source>:<line>: <what>", e.g.
//   job.yaml:7: unknown key "learning_rat" in hyperparameters (known: learning_rate, ...)
// All functions are thread-safe (no shared state).
#ifndef OFT_CLIENT_JOB_FILE_H_
#define OFT_CLIENT_JOB_FILE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "oft/v1/inference.pb.h"
#include "oft/v1/jobs.pb.h"

namespace oft {

// Merges the YAML/JSON mapping in `text` into `message` (fields in the text replace those
// already set; repeated fields are replaced, not appended). `source` names the text in
// error messages (a file name).
absl::Status ParseTextMessage(absl::string_view text, absl::string_view source,
                              google::protobuf::Message* message);

// A JobSpec from YAML/JSON text / from a file (NOT_FOUND when it cannot be read).
absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text,
                                         absl::string_view source = "job file");
absl::StatusOr<v1::JobSpec> LoadJobSpecFile(const std::string& path);

// A chat prompt file: either a ChatPrompt mapping ({"messages": [...]}) or a bare
// sequence of {role, content} mappings.
absl::StatusOr<v1::ChatPrompt> LoadChatPromptFile(const std::string& path);

// Sets the field at dotted `path` (proto field names, e.g. "hyperparameters.learning_rate")
// from `value`, parsed by the field's type as above; repeated fields take a
// comma-separated list and replace what was there. Errors name the path.
absl::Status SetFieldByPath(absl::string_view path, absl::string_view value,
                            google::protobuf::Message* message);

// A submit flag that sets one JobSpec field.
struct JobSpecFlag {
  const char* flag;  // without dashes, e.g. "learning-rate"
  const char* path;  // JobSpec field path, e.g. "hyperparameters.learning_rate"
};
// Every flag ApplyJobSpecFlags knows, besides "dataset" (repeatable: training dataset ids,
// replacing the file's list) and "set" (PATH=VALUE for any field).
const std::vector<JobSpecFlag>& JobSpecFlags();
// True for the flag names ApplyJobSpecFlags accepts.
bool IsJobSpecFlag(absl::string_view flag);

// Applies (flag, value) pairs in order on top of `spec` (normally loaded from --file), so
// flags override the file. Giving --r without --oft-block-size sets oft_block_size to 0 and
// vice versa (exactly one may be non-zero). --max-steps and --epochs (also through --set)
// on one command line are refused; either one replaces the file's max_steps / epochs (a
// oneof), as --validation-dataset / --validation-fraction replace each other.
// Errors: INVALID_ARGUMENT naming the flag.
absl::Status ApplyJobSpecFlags(const std::vector<std::pair<std::string, std::string>>& flags,
                               v1::JobSpec* spec);

}  // namespace oft

#endif  // OFT_CLIENT_JOB_FILE_H_
