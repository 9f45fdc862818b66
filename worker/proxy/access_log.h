// The access log: one line per finished session, appended to the proxy's access_log file —
// time, client, listen address, upstream server, bytes from and to the client, duration, and
// how the session ended.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "event/syscall_util.h"

namespace ferry::worker {

struct AccessRecord {
  std::chrono::system_clock::time_point start;
  std::string_view client;
  std::string_view listen;
  std::string_view upstream;  // "-" when no server was reached
  std::uint64_t bytes_from_client = 0;
  std::uint64_t bytes_to_client = 0;
  std::chrono::milliseconds duration{0};
  std::string_view status;  // closed, idle_timeout, connect_failed, upstream_reset, ...
};

// "2026-11-22T08:55:35.123+0000 127.0.0.1:5555 127.0.0.1:8080 127.0.0.1:9001 5 5 0.003 closed"
std::string format_access_record(const AccessRecord& r);

class AccessLog {
 public:
  explicit AccessLog(std::string path) : path_(std::move(path)) {}
  // Opens (again, after logrotate) with O_APPEND; false with the error logged. After a failure
  // nothing is written (and nothing more logged) until the next open(): USR1 / -s reopen.
  bool open();
  void write(const AccessRecord& r);
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  event::UniqueFd fd_;
  bool tried_ = false;
};

}  // namespace ferry::worker
