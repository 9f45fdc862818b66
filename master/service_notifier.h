// ServiceNotifier: the master's side of systemd's notify protocol (sd_notify): READY, RELOADING,
// STATUS, STOPPING, WATCHDOG and MAINPID. Every call is a no-op when NOTIFY_SOCKET is not set.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace ferry::master {

class ServiceNotifier {
 public:
  // Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID from the environment. They are left in
  // place: a new master started by a binary upgrade inherits them (`upgraded` = this master is
  // such a new master, so WATCHDOG_PID names its predecessor and is ignored).
  explicit ServiceNotifier(bool upgraded = false);

  [[nodiscard]] bool enabled() const noexcept { return enabled_; }
  // Half the watchdog interval systemd expects pings within, when it expects them.
  [[nodiscard]] std::optional<std::chrono::milliseconds> watchdog_period() const noexcept {
    return watchdog_period_;
  }

  void ready(std::string_view status);
  // A reload begins: RELOADING=1 with the monotonic time systemd wants alongside it.
  void reloading(std::string_view status);
  void status(std::string_view status);
  void stopping(std::string_view status);
  void watchdog();
  // Hands the service over to another process of ours (binary upgrade, or rolling one back).
  void main_pid(pid_t pid, std::string_view status);

  // Sends one message of newline-separated assignments; errors are logged once.
  void send(const std::string& message);

 private:
  bool enabled_ = false;
  bool warned_ = false;
  std::optional<std::chrono::milliseconds> watchdog_period_;
};

}  // namespace ferry::master
