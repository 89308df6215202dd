// JSONL finetuning datasets: parsing and whole-file validation.
//
// A dataset is a UTF-8 text file with one JSON object per line, every row in
// the same one of three formats:
//
//   {"text": "..."}                                   kText: loss on all of it
//   {"prompt": "...", "completion": "..."}            kPromptCompletion: loss on
//                                                     the completion only
//   {"messages": [{"role": "user", "content": "..."},  kChat: rendered by a chat
//                 {"role": "assistant", ...}, ...]}    template (chat_template.h),
//                                                     loss on assistant turns
//
// Keys other than these are ignored, so rows may carry metadata such as "id".
// Blank lines are skipped but still counted for line numbers; a UTF-8 byte
// order mark at the start of the file and "\r\n" line endings are accepted.
//
// Validation covers the whole file before any training starts: every bad row
// is found (up to DatasetLimits::max_errors of them are spelled out in one
// status message, one per line of the message) so that a user can fix a file
// in one go. Each error names its 1-based line, e.g.
//
//   line 3: invalid JSON: column 9: syntax error while parsing ...
//   line 4: "text" is empty
//   line 9: row is 2000000 bytes, over the limit of 1048576
//   line 17: missing field "completion" (row has "prompt")
//
// The parser is meant for untrusted uploads: line, file, row, nesting and
// message-count limits bound the work, invalid UTF-8 is rejected, and no
// exception escapes (the JSON library's exceptions are caught inside).
//
// Thread safety: all functions are pure and may be called concurrently.
#ifndef OFT_SERVER_DATA_DATASET_H_
#define OFT_SERVER_DATA_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oft {

enum class RowFormat { kText, kPromptCompletion, kChat };

// "text", "prompt/completion" or "chat".
absl::string_view RowFormatName(RowFormat format);

// One turn of a chat row. `role` is one of "system", "user", "assistant";
// `content` has at least one non-whitespace character.
struct Message {
  std::string role;
  std::string content;
};

// One validated row. Only the fields of `format` are set: `text` for kText,
// `prompt` and `completion` for kPromptCompletion, `messages` for kChat.
// Strings are exactly as in the file (not trimmed) and valid UTF-8.
struct Example {
  RowFormat format = RowFormat::kText;
  std::string text;
  std::string prompt;
  std::string completion;
  std::vector<Message> messages;  // at least one with role "assistant"
  int64_t line = 0;               // 1-based line number in the file
};

// Bounds on the work a (possibly hostile) file can cause.
struct DatasetLimits {
  int64_t max_line_bytes = int64_t{1} << 20;  // longest accepted line, bytes
  int64_t max_rows = 1'000'000;               // most non-blank rows in a file
  int64_t max_file_bytes = int64_t{1} << 30;  // largest accepted file, bytes
  int64_t max_messages = 256;                 // most entries in one "messages"
  int max_json_depth = 32;                    // deepest nesting of arrays/objects
  int max_errors = 20;                        // errors spelled out in one status
};

// What a valid file holds, for the dataset record and the job view.
struct DatasetSummary {
  int64_t rows = 0;                     // non-blank rows (== examples)
  RowFormat format = RowFormat::kText;  // the one format of all rows
  int64_t total_bytes = 0;              // size of the file contents
  int64_t blank_lines = 0;              // skipped blank lines
};

// Parses and validates a whole JSONL file held in memory.
// Returns the rows in file order, or
//   INVALID_ARGUMENT: the file is empty, too large, has too many rows, or has
//     bad rows; the message lists the first `limits.max_errors` row errors,
//     one per line ("line N: reason"), then "(and K more not shown)" if there are more.
//   RESOURCE_EXHAUSTED: memory ran out while parsing.
absl::StatusOr<std::vector<Example>> ParseJsonl(absl::string_view contents,
                                                const DatasetLimits& limits = {});

// As ParseJsonl, reading the file at `path` first. Also returns
//   NOT_FOUND: no file at `path`; INVALID_ARGUMENT: over max_file_bytes (checked
//   before reading); UNAVAILABLE: the file could not be read.
absl::StatusOr<std::vector<Example>> ParseJsonlFile(const std::string& path,
                                                    const DatasetLimits& limits = {});

// Validates `contents` like ParseJsonl and returns its summary; same errors.
absl::StatusOr<DatasetSummary> ValidateJsonl(absl::string_view contents,
                                             const DatasetLimits& limits = {});

// True when `s` has no characters other than whitespace (Unicode White_Space as
// Python's str.isspace() sees it, which is what chat templates' `trim` strips).
bool IsBlank(absl::string_view s);

// `s` without leading and trailing whitespace in the sense of IsBlank().
absl::string_view TrimWhitespace(absl::string_view s);

}  // namespace oft

#endif  // OFT_SERVER_DATA_DATASET_H_
