// BackendProcess: a TCP echo backend in a process of its own (forked), so that a test can
// SIGSTOP/SIGCONT or kill it, optionally with a small listen backlog or a reset on a marker byte.
#pragma once

#include <sys/types.h>

#include <chrono>

namespace ferry::test {

struct BackendOptions {
  int backlog = 128;
  // Echo until this byte arrives, then reset the connection (SO_LINGER 0) instead of echoing
  // it and anything after it; 0: never.
  char reset_on = 0;
};

class BackendProcess {
 public:
  BackendProcess() : BackendProcess(BackendOptions{}) {}
  // Binds 127.0.0.1 with a kernel-chosen port and listens before forking: the port is served
  // (queued) as soon as the constructor returns.
  explicit BackendProcess(const BackendOptions& options);
  // SIGKILL and reap.
  ~BackendProcess();
  BackendProcess(const BackendProcess&) = delete;
  BackendProcess& operator=(const BackendProcess&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] int port() const noexcept { return port_; }
  // SIGSTOP, and waits (bounded) until /proc shows it stopped; false when it did not stop.
  bool stop(std::chrono::milliseconds limit = std::chrono::seconds(10));
  // SIGCONT, and waits (bounded) until it runs again.
  bool resume(std::chrono::milliseconds limit = std::chrono::seconds(10));

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

// The state letter of /proc/PID/stat ('R', 'S', 'T', ...; 0 when gone).
char process_state(pid_t pid);

}  // namespace ferry::test
