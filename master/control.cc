// `ferry -s`: pid file lookup, kill(2) for reopen/quit/stop, the control socket for reload.
#include "master/control.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "conf/loader.h"
#include "event/syscall_util.h"
#include "master/console.h"
#include "master/pid_file.h"

namespace ferry::master {
namespace {

// The pid file of the configuration; when the file does not load, the pid_file setting if it
// can still be read, else the default — so that a broken configuration still reaches the master
// (which then rejects it and says why).
std::string find_pid_file(const std::string& conf_file) {
  const conf::LoadResult r = conf::load_file(conf_file);
  if (r.config) return r.config->pid_file;
  return conf::read_pid_file_setting(conf_file).value_or(conf::Config{}.pid_file);
}

int reload(const std::string& pid_file, pid_t pid) {
  const std::string path = control_socket_path(pid_file);
  event::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) == -1) {
    print_error(fmt::format("ferry: the master (pid {}) does not answer on {}: {}", pid, path,
                            std::strerror(errno)));
    return 1;
  }
  const char request[] = "reload\n";
  if (::send(fd.get(), request, sizeof request - 1, MSG_NOSIGNAL) != sizeof request - 1) {
    print_error(fmt::format("ferry: cannot send to {}: {}", path, std::strerror(errno)));
    return 1;
  }
  std::string answer;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      print_error(fmt::format("ferry: no answer from the master (pid {}) within 30 s", pid));
      return 1;
    }
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    const ssize_t n = event::retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
    if (n <= 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
  }
  if (answer.rfind("ok\n", 0) == 0) return 0;
  if (answer.rfind("error\n", 0) == 0) {
    print_error(answer.substr(6));
    print_error("ferry: reload rejected; the master keeps the previous configuration");
    return 1;
  }
  print_error("ferry: the master closed the control connection without a verdict");
  return 1;
}

}  // namespace

std::string control_socket_path(const std::string& pid_file) {
  constexpr std::string_view kSuffix = ".pid";
  if (pid_file.size() > kSuffix.size() &&
      pid_file.compare(pid_file.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
    return pid_file.substr(0, pid_file.size() - kSuffix.size()) + ".ctl";
  }
  return pid_file + ".ctl";
}

int send_signal_command(const std::string& signal, const std::string& conf_file) {
  const std::string pid_file = find_pid_file(conf_file);
  std::string why;
  const auto pid = read_pid_file(pid_file, why);
  if (!pid) {
    print_error(fmt::format("ferry: no running master found: {}", why));
    return 1;
  }
  if (::kill(*pid, 0) == -1) {
    print_error(fmt::format("ferry: no running master found: process {} from {}: {}", *pid,
                            pid_file, std::strerror(errno)));
    return 1;
  }
  if (signal == "reload") return reload(pid_file, *pid);
  const int sig = signal == "reopen" ? SIGUSR1 : signal == "quit" ? SIGQUIT : SIGTERM;
  if (::kill(*pid, sig) == -1) {
    print_error(fmt::format("ferry: kill({}, {}) failed: {}", *pid, sigabbrev_np(sig),
                            std::strerror(errno)));
    return 1;
  }
  return 0;
}

}  // namespace ferry::master
