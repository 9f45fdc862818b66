// EpollBackend: the child's loop echoes every byte back, keeps what the kernel would not take
// yet, and closes a connection when its peer does.
#include "tests/support/epoll_backend.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace ferry::test {
namespace {

void watch(int ep, int fd, std::uint32_t events, int op) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  ::epoll_ctl(ep, op, fd, &ev);
}

[[noreturn]] void serve(int listener) {
  // Thousands of sockets: as many as the hard limit allows.
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  watch(ep, listener, EPOLLIN, EPOLL_CTL_ADD);
  std::unordered_map<int, std::string> pending;  // fd → bytes the kernel did not take yet
  epoll_event events[256];
  char buf[65536];
  for (;;) {
    const int n = ::epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listener) {
        for (;;) {
          const int c = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          watch(ep, c, EPOLLIN, EPOLL_CTL_ADD);
        }
        continue;
      }
      bool done = false;
      std::string& out = pending[fd];
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
        if (got > 0) out.append(buf, static_cast<std::size_t>(got));
        done = got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
      }
      while (!done && !out.empty()) {
        const ssize_t sent = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
          done = errno != EAGAIN && errno != EWOULDBLOCK;
          break;
        }
        out.erase(0, static_cast<std::size_t>(sent));
      }
      if (done) {
        pending.erase(fd);
        ::close(fd);  // also takes it out of the epoll set
        continue;
      }
      // Wait for room only while something is left to send.
      watch(ep, fd, EPOLLIN | (out.empty() ? 0U : static_cast<std::uint32_t>(EPOLLOUT)),
            EPOLL_CTL_MOD);
      if (out.empty()) pending.erase(fd);
    }
  }
}

}  // namespace

EpollBackend::EpollBackend() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sin;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
      ::listen(fd, 4096) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len) != 0) {
    throw std::runtime_error(std::string("EpollBackend: ") + std::strerror(errno));
  }
  port_ = ntohs(sin.sin_port);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0)
    throw std::runtime_error(std::string("EpollBackend: fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    // Never outlive the test, even when it is killed.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
    serve(fd);
  }
  ::close(fd);
}

EpollBackend::~EpollBackend() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

int EpollBackend::connections() const {
  int sockets = 0;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/fd", ec)) {
    std::error_code ignored;
    if (std::filesystem::read_symlink(e.path(), ignored).string().rfind("socket:", 0) == 0) {
      ++sockets;
    }
  }
  return sockets > 0 ? sockets - 1 : 0;  // less the listener
}

}  // namespace ferry::test
