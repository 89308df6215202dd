#include "server/common/log.h"

#include <algorithm>
#include <atomic>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "spdlog/logger.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace oft {
namespace {

absl::Mutex g_mu(absl::kConstInit);  // guards g_logger replacement
std::shared_ptr<spdlog::logger> g_logger ABSL_GUARDED_BY(g_mu);  // null until first use or InitLogging
std::atomic<LogFormat> g_format{LogFormat::kText};
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

spdlog::level::level_enum ToSpd(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarn: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> MakeLogger(LogFormat format, LogLevel level, const std::string& name,
                                           std::ostream* out) {
  spdlog::sink_ptr sink;
  if (out != nullptr) {
    sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*out, /*force_flush=*/true);
  } else {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  }
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  // UTC timestamps; in JSON the message part (%v) is the rest of the object's members.
  logger->set_pattern(format == LogFormat::kJson
                          ? R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n",%v})"
                          : "%Y-%m-%dT%H:%M:%S.%eZ %l %n: %v",
                      spdlog::pattern_time_type::utc);
  logger->set_level(ToSpd(level));
  logger->flush_on(spdlog::level::trace);  // every line reaches the file at once
  return logger;
}

std::shared_ptr<spdlog::logger> Logger() {
  absl::MutexLock lock(&g_mu);
  if (g_logger == nullptr) g_logger = MakeLogger(LogFormat::kText, LogLevel::kInfo, "oft_server", nullptr);
  return g_logger;
}

// A text value as is when it is one plain word, else quoted with JSON escapes.
std::string TextValue(const std::string& v) {
  const bool plain = !v.empty() && std::none_of(v.begin(), v.end(), [](char c) {
    return c == ' ' || c == '"' || c == '=' || c == '\\' || !absl::ascii_isprint(static_cast<unsigned char>(c));
  });
  if (plain) return v;
  return nlohmann::json(v).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view text) {
  if (text == "debug") return LogLevel::kDebug;
  if (text == "info") return LogLevel::kInfo;
  if (text == "warn") return LogLevel::kWarn;
  if (text == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_level must be debug, info, warn or error, got '", text.substr(0, 80), "'"));
}

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view text) {
  if (text == "text") return LogFormat::kText;
  if (text == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_format must be text or json, got '", text.substr(0, 80), "'"));
}

void InitLogging(LogFormat format, LogLevel level, const std::string& name, std::ostream* out) {
  auto logger = MakeLogger(format, level, name, out);
  absl::MutexLock lock(&g_mu);
  g_format.store(format);
  g_level.store(static_cast<int>(level));
  g_logger = std::move(logger);
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void LogEvent(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  std::string line;
  if (g_format.load() == LogFormat::kJson) {
    nlohmann::ordered_json j;
    j["msg"] = std::string(message);
    for (const LogField& f : fields) {
      std::visit([&](const auto& v) { j[f.key] = v; }, f.value);
    }
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line = line.substr(1, line.size() - 2);  // members only: the pattern adds the braces
  } else {
    line = std::string(message);
    for (const LogField& f : fields) {
      absl::StrAppend(&line, " ", f.key, "=");
      std::visit(
          [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::string>) {
              absl::StrAppend(&line, TextValue(v));
            } else if constexpr (std::is_same_v<T, bool>) {
              absl::StrAppend(&line, v ? "true" : "false");
            } else {
              absl::StrAppend(&line, v);
            }
          },
          f.value);
    }
  }
  Logger()->log(ToSpd(level), "{}", line);
}

}  // namespace oft
