// spdlog sinks and pattern for the error log.
#include "worker/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace ferry::worker {
namespace {

// "2026/11/22 07:40:22 [info] 1234 master: message", close to nginx's error log.
constexpr const char* kPattern = "%Y/%m/%d %H:%M:%S [%l] %P %n: %v";
std::string g_role = "ferry";

spdlog::level::level_enum to_spdlog(conf::LogLevel level) {
  switch (level) {
    case conf::LogLevel::trace: return spdlog::level::trace;
    case conf::LogLevel::debug: return spdlog::level::debug;
    case conf::LogLevel::info: return spdlog::level::info;
    case conf::LogLevel::warn: return spdlog::level::warn;
    case conf::LogLevel::error: return spdlog::level::err;
    case conf::LogLevel::critical: return spdlog::level::critical;
  }
  return spdlog::level::info;
}

}  // namespace

void init_early_logging() {
  auto logger =
      std::make_shared<spdlog::logger>("ferry", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern(kPattern);
  logger->set_level(spdlog::level::info);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

std::error_code apply_log_settings(const conf::LogSettings& settings, std::string& why) {
  spdlog::sink_ptr sink;
  if (settings.path == "stderr") {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    try {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(settings.path);
    } catch (const spdlog::spdlog_ex& e) {
      why = e.what();
      return std::make_error_code(std::errc::io_error);
    }
  }
  auto logger = std::make_shared<spdlog::logger>(g_role, std::move(sink));
  logger->set_pattern(kPattern);
  logger->set_level(to_spdlog(settings.level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
  return {};
}

void set_log_role(const std::string& role) {
  g_role = role;
  auto current = spdlog::default_logger();
  auto renamed = current->clone(role);
  spdlog::set_default_logger(std::move(renamed));
}

}  // namespace ferry::worker
