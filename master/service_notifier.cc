// ServiceNotifier over libsystemd's sd_notify().
#include "master/service_notifier.h"

#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

namespace ferry::master {
namespace {

std::string status_line(std::string_view status) {
  // STATUS= is one line: a newline would start another assignment.
  std::string line(status);
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  return "STATUS=" + line;
}

}  // namespace

ServiceNotifier::ServiceNotifier(bool upgraded) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && *socket != '\0';
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (!enabled_ || usec == nullptr) return;
  const char* pid = std::getenv("WATCHDOG_PID");
  if (pid != nullptr && !upgraded && std::atol(pid) != ::getpid()) return;  // meant for another
  const long long value = std::atoll(usec);
  if (value <= 0) return;
  watchdog_period_ = std::chrono::milliseconds(std::max(1LL, value / 2000));
}

void ServiceNotifier::send(const std::string& message) {
  if (!enabled_) return;
  const int r = sd_notify(0, message.c_str());
  if (r < 0 && !warned_) {
    warned_ = true;
    spdlog::warn("sd_notify(\"{}\") failed: {}", message.substr(0, message.find('\n')),
                 std::strerror(-r));
  }
}

void ServiceNotifier::ready(std::string_view status) { send("READY=1\n" + status_line(status)); }

void ServiceNotifier::reloading(std::string_view status) {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const long long usec = static_cast<long long>(now.tv_sec) * 1'000'000 + now.tv_nsec / 1'000;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\n" + status_line(status));
}

void ServiceNotifier::status(std::string_view status) { send(status_line(status)); }

void ServiceNotifier::stopping(std::string_view status) {
  send("STOPPING=1\n" + status_line(status));
}

void ServiceNotifier::watchdog() { send("WATCHDOG=1"); }

void ServiceNotifier::main_pid(pid_t pid, std::string_view status) {
  // With a ping: the incoming master's own first one is half a watchdog interval away.
  send("MAINPID=" + std::to_string(pid) + "\n" + (watchdog_period_ ? "WATCHDOG=1\n" : "") +
       status_line(status));
}

}  // namespace ferry::master
