// Structured logging of the service layer (oft_server): one line per event on stderr,
// written through spdlog (Debian's libspdlog-dev), as text or as one JSON object per line.
//
//   LogEvent(LogLevel::kInfo, "job started", {{"job_id", id}, {"device", "cpu"}});
//   text:  2026-12-02T15:40:00.123Z info oft_server: job started job_id=job-1 device=cpu
//   json:  {"time":"2026-12-02T15:40:00.123456Z","level":"info","logger":"oft_server",
//           "msg":"job started","job_id":"job-1","device":"cpu"}
//
// Only the service layer links this (library oft_log, built with OFT_WITH_SERVICE): the
// engine libraries (model, oft, quant, train, serving, artifacts) log nothing and need no
// spdlog. Thread-safe; lines from different threads never interleave.
#ifndef OFT_SERVER_COMMON_LOG_H_
#define OFT_SERVER_COMMON_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <variant>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oft {

enum class LogLevel { kDebug, kInfo, kWarn, kError };
enum class LogFormat { kText, kJson };

// "debug" | "info" | "warn" | "error"; "text" | "json". INVALID_ARGUMENT naming the flag.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view text);
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view text);

// One key=value of a log line. Strings, integers, doubles and booleans keep their JSON type.
struct LogField {
  LogField(absl::string_view k, absl::string_view v) : key(k), value(std::string(v)) {}
  LogField(absl::string_view k, const char* v) : key(k), value(std::string(v)) {}
  LogField(absl::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(absl::string_view k, int v) : key(k), value(int64_t{v}) {}
  LogField(absl::string_view k, long v) : key(k), value(int64_t{v}) {}            // NOLINT
  LogField(absl::string_view k, long long v) : key(k), value(int64_t{v}) {}       // NOLINT
  LogField(absl::string_view k, unsigned long v)                                  // NOLINT
      : key(k), value(static_cast<int64_t>(v)) {}
  LogField(absl::string_view k, double v) : key(k), value(v) {}
  LogField(absl::string_view k, bool v) : key(k), value(v) {}
  std::string key;
  std::variant<std::string, int64_t, double, bool> value;
};

// Configures the process's log: format, lowest level written, logger name, and where lines
// go (nullptr = stderr; tests pass a stream). Until it is called: text, info, stderr.
void InitLogging(LogFormat format, LogLevel level, const std::string& name = "oft_server",
                 std::ostream* out = nullptr);

// Whether a line at `level` would be written (skip building costly fields otherwise).
bool LogEnabled(LogLevel level);

// Writes one line. Field keys should be snake_case; "time", "level", "logger" and "msg" are
// taken by the line itself.
void LogEvent(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields = {});

}  // namespace oft

#endif  // OFT_SERVER_COMMON_LOG_H_
