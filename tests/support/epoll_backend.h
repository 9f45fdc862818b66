// EpollBackend: an echo server for tests that hold thousands of connections — one epoll loop in
// a child process of its own, so that its sockets do not count against the test's RLIMIT_NOFILE.
#pragma once

#include <sys/types.h>

namespace ferry::test {

class EpollBackend {
 public:
  // Listens on 127.0.0.1 (kernel-chosen port, backlog 4096) and forks the serving child. Fork it
  // before the test starts threads of its own: the child runs only the loop, then _exit()s.
  EpollBackend();
  ~EpollBackend();
  EpollBackend(const EpollBackend&) = delete;
  EpollBackend& operator=(const EpollBackend&) = delete;

  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // The connections the child holds now (its sockets other than the listener).
  [[nodiscard]] int connections() const;

 private:
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace ferry::test
