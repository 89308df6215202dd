#include "server/data/dataset.h"

#include <cstdio>
#include <exception>
#include <filesystem>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/data/internal/text_util.h"

namespace oft {
namespace {

using json = nlohmann::json;
using internal::FindInvalidUtf8;
using internal::QuoteForMessage;
using internal::TruncateUtf8;

// Longest parser message kept in an error; the parser echoes the token it was
// reading, which for a hostile line can be up to max_line_bytes long.
constexpr size_t kMaxParserMessageBytes = 160;
// Keys listed when a row matches no format.
constexpr int kMaxKeysListed = 5;

bool IsJsonWhitespace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool IsBlankLine(absl::string_view line) {
  for (char c : line) {
    if (!IsJsonWhitespace(c)) return false;
  }
  return true;
}

// The deepest nesting of arrays and objects in `text`, ignoring brackets inside
// strings; stops counting once `limit` is exceeded. Run before the JSON parser
// so that a hostile row cannot make it build a deep tree.
int NestingDepth(absl::string_view text, int limit) {
  int depth = 0;
  int max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // skip the escaped character
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) max_depth = depth;
      if (max_depth > limit) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

// "[json.exception.parse_error.101] parse error at line 1, column 9: syntax
// error ..." -> "column 9: syntax error ...", truncated.
std::string ParserMessage(const char* what) {
  absl::string_view msg(what);
  if (const size_t at = msg.find("parse error at line 1, "); at != absl::string_view::npos) {
    msg.remove_prefix(at + sizeof("parse error at line 1, ") - 1);
  } else if (absl::StartsWith(msg, "[json.exception.")) {
    const size_t close = msg.find("] ");
    if (close != absl::string_view::npos) msg.remove_prefix(close + 2);
  }
  return TruncateUtf8(msg, kMaxParserMessageBytes);
}

absl::Status RowError(absl::string_view reason) { return absl::InvalidArgumentError(reason); }

// Reads `obj[key]` (which must exist) into `out`: a string with at least one
// non-whitespace character. `where` prefixes the message ("" or "messages[2]: ").
absl::Status ReadNonBlankString(const json& obj, const char* key, absl::string_view where,
                                std::string* out) {
  const json& value = obj.at(key);
  if (!value.is_string()) {
    return RowError(absl::StrCat(where, "\"", key, "\" must be a string, got ", value.type_name()));
  }
  const std::string& s = value.get_ref<const std::string&>();
  if (s.empty()) return RowError(absl::StrCat(where, "\"", key, "\" is empty"));
  if (IsBlank(s)) return RowError(absl::StrCat(where, "\"", key, "\" is only whitespace"));
  *out = s;
  return absl::OkStatus();
}

absl::Status ReadMessages(const json& row, const DatasetLimits& limits, Example* example) {
  const json& messages = row.at("messages");
  if (!messages.is_array()) {
    return RowError(absl::StrCat("\"messages\" must be an array, got ", messages.type_name()));
  }
  if (messages.empty()) return RowError("\"messages\" is empty");
  if (static_cast<int64_t>(messages.size()) > limits.max_messages) {
    return RowError(absl::StrCat("\"messages\" has ", messages.size(),
                                 " entries, over the limit of ", limits.max_messages));
  }
  bool has_assistant = false;
  example->messages.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) {
      return RowError(absl::StrCat(where, " must be an object, got ", m.type_name()));
    }
    for (const char* key : {"role", "content"}) {
      if (!m.contains(key)) return RowError(absl::StrCat(where, ": missing field \"", key, "\""));
    }
    const json& role = m.at("role");
    if (!role.is_string()) {
      return RowError(absl::StrCat(where, ": \"role\" must be a string, got ", role.type_name()));
    }
    const std::string& role_str = role.get_ref<const std::string&>();
    if (role_str != "system" && role_str != "user" && role_str != "assistant") {
      return RowError(absl::StrCat(where, ": \"role\" is ", QuoteForMessage(role_str),
                                   ", expected \"system\", \"user\" or \"assistant\""));
    }
    Message message;
    message.role = role_str;
    if (absl::Status s =
            ReadNonBlankString(m, "content", absl::StrCat(where, ": "), &message.content);
        !s.ok()) {
      return s;
    }
    has_assistant = has_assistant || role_str == "assistant";
    example->messages.push_back(std::move(message));
  }
  if (!has_assistant) {
    return RowError("\"messages\" has no \"assistant\" message, so nothing would be trained");
  }
  return absl::OkStatus();
}

// Lists up to kMaxKeysListed keys of `obj` for an error message.
std::string DescribeKeys(const json& obj) {
  if (obj.empty()) return "the object is empty";
  std::vector<std::string> keys;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (static_cast<int>(keys.size()) == kMaxKeysListed) {
      keys.push_back("...");
      break;
    }
    keys.push_back(QuoteForMessage(it.key()));
  }
  return absl::StrCat("row has ", absl::StrJoin(keys, ", "));
}

// Parses one non-blank line. Errors are INVALID_ARGUMENT with the reason only
// (no line number).
absl::StatusOr<Example> ParseRow(absl::string_view line, const DatasetLimits& limits) {
  if (static_cast<int64_t>(line.size()) > limits.max_line_bytes) {
    return RowError(
        absl::StrCat("row is ", line.size(), " bytes, over the limit of ", limits.max_line_bytes));
  }
  if (std::optional<size_t> bad = FindInvalidUtf8(line); bad.has_value()) {
    return RowError(absl::StrCat("invalid UTF-8 at column ", *bad + 1));
  }
  if (NestingDepth(line, limits.max_json_depth) > limits.max_json_depth) {
    return RowError(absl::StrCat("JSON nested deeper than ", limits.max_json_depth, " levels"));
  }
  json row;
  try {
    row = json::parse(line.begin(), line.end());
  } catch (const json::parse_error& e) {
    return RowError(absl::StrCat("invalid JSON: ", ParserMessage(e.what())));
  }
  if (!row.is_object()) {
    return RowError(absl::StrCat("row must be a JSON object, got ", row.type_name()));
  }

  const bool has_text = row.contains("text");
  const bool has_prompt = row.contains("prompt");
  const bool has_completion = row.contains("completion");
  const bool has_messages = row.contains("messages");
  std::vector<absl::string_view> present;
  if (has_text) present.push_back("\"text\"");
  if (has_prompt || has_completion) {
    present.push_back(has_prompt ? "\"prompt\"" : "\"completion\"");
  }
  if (has_messages) present.push_back("\"messages\"");
  if (present.size() > 1) {
    return RowError(absl::StrCat("row mixes formats: it has ", absl::StrJoin(present, " and "),
                                 "; use exactly one of \"text\", \"prompt\"+\"completion\" or "
                                 "\"messages\""));
  }
  if (present.empty()) {
    return RowError(absl::StrCat(
        "row has none of the fields \"text\", \"prompt\"+\"completion\" or \"messages\" (",
        DescribeKeys(row), ")"));
  }

  Example example;
  if (has_text) {
    example.format = RowFormat::kText;
    if (absl::Status s = ReadNonBlankString(row, "text", "", &example.text); !s.ok()) return s;
  } else if (has_messages) {
    example.format = RowFormat::kChat;
    if (absl::Status s = ReadMessages(row, limits, &example); !s.ok()) return s;
  } else {
    example.format = RowFormat::kPromptCompletion;
    if (!has_completion) return RowError("missing field \"completion\" (row has \"prompt\")");
    if (!has_prompt) return RowError("missing field \"prompt\" (row has \"completion\")");
    if (absl::Status s = ReadNonBlankString(row, "prompt", "", &example.prompt); !s.ok()) {
      return s;
    }
    if (absl::Status s = ReadNonBlankString(row, "completion", "", &example.completion); !s.ok()) {
      return s;
    }
  }
  return example;
}

// Accumulates row errors; keeps the first `max_errors` messages and counts the rest.
class ErrorList {
 public:
  explicit ErrorList(int max_errors) : max_errors_(max_errors < 1 ? 1 : max_errors) {}

  void Add(int64_t line, absl::string_view reason) {
    if (static_cast<int>(messages_.size()) < max_errors_) {
      messages_.push_back(absl::StrCat("line ", line, ": ", reason));
    }
    ++count_;
  }
  bool empty() const { return count_ == 0; }

  absl::Status ToStatus() const {
    std::string msg = absl::StrJoin(messages_, "\n");
    if (count_ > static_cast<int64_t>(messages_.size())) {
      absl::StrAppend(&msg, "\n(and ", count_ - static_cast<int64_t>(messages_.size()),
                      " more not shown)");
    }
    return absl::InvalidArgumentError(msg);
  }

 private:
  const int max_errors_;
  std::vector<std::string> messages_;
  int64_t count_ = 0;
};

absl::StatusOr<std::vector<Example>> ParseJsonlImpl(absl::string_view contents,
                                                    const DatasetLimits& limits,
                                                    DatasetSummary* summary) {
  if (static_cast<int64_t>(contents.size()) > limits.max_file_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset is ", contents.size(), " bytes, over the limit of ", limits.max_file_bytes));
  }
  summary->total_bytes = static_cast<int64_t>(contents.size());
  if (absl::StartsWith(contents, "\xEF\xBB\xBF")) contents.remove_prefix(3);  // UTF-8 BOM

  std::vector<Example> examples;
  ErrorList errors(limits.max_errors);
  std::optional<RowFormat> format;
  int64_t format_line = 0;
  int64_t rows = 0;
  int64_t line_number = 0;
  size_t pos = 0;
  while (pos < contents.size()) {
    ++line_number;
    size_t end = contents.find('\n', pos);
    if (end == absl::string_view::npos) end = contents.size();
    absl::string_view line = contents.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (IsBlankLine(line)) {
      ++summary->blank_lines;
      continue;
    }
    if (++rows > limits.max_rows) {
      errors.Add(line_number, absl::StrCat("dataset has more than ", limits.max_rows,
                                           " rows, the limit; split the file"));
      break;
    }
    absl::StatusOr<Example> example = ParseRow(line, limits);
    if (!example.ok()) {
      errors.Add(line_number, example.status().message());
      continue;
    }
    if (!format.has_value()) {
      format = example->format;
      format_line = line_number;
    } else if (example->format != *format) {
      errors.Add(line_number,
                 absl::StrCat("row is ", RowFormatName(example->format), " but line ", format_line,
                              " is ", RowFormatName(*format), "; all rows must use one format"));
      continue;
    }
    if (!errors.empty()) continue;  // the result is an error; stop collecting rows
    example->line = line_number;
    examples.push_back(*std::move(example));
  }
  if (!errors.empty()) return errors.ToStatus();
  if (examples.empty()) {
    return absl::InvalidArgumentError("dataset is empty: it has no non-blank lines");
  }
  summary->rows = static_cast<int64_t>(examples.size());
  summary->format = *format;
  return examples;
}

absl::StatusOr<std::vector<Example>> ParseJsonlGuarded(absl::string_view contents,
                                                       const DatasetLimits& limits,
                                                       DatasetSummary* summary) {
  // Nothing below is expected to throw once types are checked, but the JSON
  // library and the allocator may: keep every exception inside this module.
  try {
    return ParseJsonlImpl(contents, limits, summary);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory while parsing the dataset");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("unexpected error while parsing the dataset: ",
                                            TruncateUtf8(e.what(), kMaxParserMessageBytes)));
  }
}

}  // namespace

absl::string_view RowFormatName(RowFormat format) {
  switch (format) {
    case RowFormat::kText:
      return "text";
    case RowFormat::kPromptCompletion:
      return "prompt/completion";
    case RowFormat::kChat:
      return "chat";
  }
  return "unknown";
}

bool IsBlank(absl::string_view s) { return TrimWhitespace(s).empty(); }

absl::string_view TrimWhitespace(absl::string_view s) {
  while (!s.empty()) {
    const size_t n = internal::LeadingSpaceBytes(s);
    if (n == 0) break;
    s.remove_prefix(n);
  }
  while (!s.empty()) {
    const size_t n = internal::TrailingSpaceBytes(s);
    if (n == 0) break;
    s.remove_suffix(n);
  }
  return s;
}

absl::StatusOr<std::vector<Example>> ParseJsonl(absl::string_view contents,
                                                const DatasetLimits& limits) {
  DatasetSummary summary;
  return ParseJsonlGuarded(contents, limits, &summary);
}

absl::StatusOr<DatasetSummary> ValidateJsonl(absl::string_view contents,
                                             const DatasetLimits& limits) {
  DatasetSummary summary;
  absl::StatusOr<std::vector<Example>> examples = ParseJsonlGuarded(contents, limits, &summary);
  if (!examples.ok()) return examples.status();
  return summary;
}

absl::StatusOr<std::vector<Example>> ParseJsonlFile(const std::string& path,
                                                    const DatasetLimits& limits) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) {
    return absl::NotFoundError(absl::StrCat("dataset file not found: ", path));
  }
  if (!std::filesystem::is_regular_file(st)) {
    return absl::InvalidArgumentError(absl::StrCat("dataset path is not a regular file: ", path));
  }
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot stat ", path, ": ", ec.message()));
  if (size > static_cast<uintmax_t>(limits.max_file_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset is ", size, " bytes, over the limit of ", limits.max_file_bytes));
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::UnavailableError(absl::StrCat("cannot open ", path));
  std::string contents;
  try {
    contents.resize(static_cast<size_t>(size));
  } catch (const std::bad_alloc&) {
    std::fclose(f);
    return absl::ResourceExhaustedError("out of memory reading the dataset");
  }
  const size_t read = std::fread(contents.data(), 1, contents.size(), f);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::UnavailableError(absl::StrCat("error reading ", path));
  contents.resize(read);  // the file may have shrunk since it was sized
  return ParseJsonl(contents, limits);
}

}  // namespace oft
