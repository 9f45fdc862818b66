// spdlog sinks and pattern for the error log.
#include "worker/logging.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "event/syscall_util.h"

namespace ferry::worker {
namespace {

// "2026/11/22 07:40:22 [info] 1234 master: message", close to nginx's error log.
constexpr const char* kPattern = "%Y/%m/%d %H:%M:%S [%l] %P %n: %v";
// To the journal: the priority as sd-daemon(3)'s "<N>" prefix, which journald strips and
// stores (journalctl -p err); no time stamp, journald keeps its own.
constexpr const char* kJournalPattern = "<%*>[%l] %P %n: %v";
std::string g_role = "ferry";

// %*: the syslog priority of the line's level.
class SyslogPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    dest.push_back(journal_priority(static_cast<int>(msg.level)));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriority>();
  }
};

// Lines to stderr carry their priority when stderr is the journal; a file sink never does.
void set_format(spdlog::logger& logger, bool to_stderr) {
  if (to_stderr && stderr_is_journal()) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<SyslogPriority>('*').set_pattern(kJournalPattern);
    logger.set_formatter(std::move(formatter));
  } else {
    logger.set_pattern(kPattern);
  }
}

// spdlog's file sink opens without O_CLOEXEC (its library is built without
// SPDLOG_PREVENT_CHILD_FD): this one does, and appends each line with one write(2).
class AppendFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Throws spdlog_ex, as spdlog's file sink does, when the file cannot be opened.
  explicit AppendFileSink(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ == -1) {
      throw spdlog::spdlog_ex("failed opening file " + path +
                              " for writing: " + std::strerror(errno));
    }
  }
  ~AppendFileSink() override { ::close(fd_); }
  AppendFileSink(const AppendFileSink&) = delete;
  AppendFileSink& operator=(const AppendFileSink&) = delete;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    // A failure has nowhere to be said.
    event::all_bytes(line.size(), [&](std::size_t done, std::size_t left) {
      return ::write(fd_, line.data() + done, left);
    });
  }
  void flush_() override {}

 private:
  int fd_;
};

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

// 7 debug, 6 info, 4 warning, 3 err, 2 crit.
char journal_priority(int level) {
  switch (static_cast<spdlog::level::level_enum>(level)) {
    case spdlog::level::trace:
    case spdlog::level::debug: return '7';
    case spdlog::level::info: return '6';
    case spdlog::level::warn: return '4';
    case spdlog::level::err: return '3';
    case spdlog::level::critical: return '2';
    default: return '6';
  }
}

bool stderr_is_journal() {
  // JOURNAL_STREAM is "DEVICE:INODE" of the stream systemd connected; it names stderr only if
  // stderr is still that stream (a redirection in between means it is not).
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0;
  unsigned long long ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) == -1) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

void init_early_logging() {
  auto logger =
      std::make_shared<spdlog::logger>("ferry", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  set_format(*logger, true);
  logger->set_level(spdlog::level::info);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

std::error_code apply_log_settings(const conf::LogSettings& settings, std::string& why) {
  spdlog::sink_ptr sink;
  const bool to_stderr = settings.path == "stderr";
  if (to_stderr) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    try {
      sink = std::make_shared<AppendFileSink>(settings.path);
    } catch (const spdlog::spdlog_ex& e) {
      why = e.what();
      return std::make_error_code(std::errc::io_error);
    }
  }
  auto logger = std::make_shared<spdlog::logger>(g_role, std::move(sink));
  set_format(*logger, to_stderr);
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
