// EchoServer: one poll()-driven thread, non-blocking sockets, per-connection buffers.
#include "tests/support/echo_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/ferry_instance.h"
#include "tests/support/sockets.h"

namespace ferry::test {

EchoServer::EchoServer(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int on = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof sin;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 || ::listen(fd_, 4096) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sin), &len) != 0 ||
      ::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::runtime_error(std::string("EchoServer: ") + std::strerror(errno));
  }
  port_ = ntohs(sin.sin_port);
  thread_ = std::thread([this] { serve(); });
}

EchoServer::~EchoServer() {
  stop_ = true;
  (void)::write(wake_[1], "x", 1);
  thread_.join();
  ::close(fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void EchoServer::serve() {
  std::map<int, std::string> pending;  // fd → bytes not yet echoed back
  std::map<int, bool> finished;        // fd → the client sent FIN: close once flushed
  std::map<int, bool> spoke;           // fd → it sent a byte (counted in spoke_)
  while (!stop_) {
    std::vector<pollfd> fds{{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    for (const auto& [fd, out] : pending) {
      const short in = finished[fd] ? 0 : POLLIN;
      fds.push_back({fd, static_cast<short>(in | (out.empty() ? 0 : POLLOUT)), 0});
    }
    if (::poll(fds.data(), fds.size(), 1000) <= 0) continue;
    if (fds[0].revents & POLLIN) {
      for (;;) {
        const int c = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) break;
        ++accepted_;
        pending[c];
      }
    }
    for (std::size_t i = 2; i < fds.size(); ++i) {
      const int fd = fds[i].fd;
      std::string& out = pending[fd];
      bool closed = false;
      bool failed = false;
      if (!finished[fd] && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        char buf[65536];
        for (;;) {
          const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
          if (n > 0) {
            if (!spoke[fd]) {
              spoke[fd] = true;
              ++spoke_;
            }
            out.append(buf, static_cast<std::size_t>(n));
            continue;
          }
          if (n == 0) finished[fd] = true;
          if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) failed = true;
          break;
        }
      }
      while (!out.empty()) {
        const ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
        if (n <= 0) {
          if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) failed = true;
          break;
        }
        out.erase(0, static_cast<std::size_t>(n));
      }
      // Half-close, as a real server does: answer everything, then close.
      closed = failed || (finished[fd] && out.empty());
      if (closed) {
        ::close(fd);
        pending.erase(fd);
        finished.erase(fd);
        spoke.erase(fd);
      }
    }
  }
  for (const auto& [fd, out] : pending) ::close(fd);
}

int connect_to_port(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool accepts_connections(int port, std::chrono::milliseconds limit) {
  return eventually(
      [&] {
        const int fd = connect_to_port(port);
        if (fd != -1) ::close(fd);
        return fd != -1;
      },
      limit);
}

bool echo_round_trip(int fd, const std::string& text) {
  if (::send(fd, text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size())) {
    return false;
  }
  std::string got;
  while (got.size() < text.size()) {
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, std::min(sizeof buf, text.size() - got.size()), 0);
    if (n <= 0) return false;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got == text;
}

bool served_through(int port, const std::string& text) {
  const int fd = connect_to_port(port);
  if (fd < 0) return false;
  const bool ok = echo_round_trip(fd, text);
  ::close(fd);
  return ok;
}

bool open_served(const std::string& source, int port, int n, std::vector<int>& held) {
  bool all = true;
  for (int i = 0; i < n && all; ++i) {
    held.push_back(connect_from(source, "127.0.0.1", port));
    all = held.back() >= 0 && echo_round_trip(held.back(), "ping");
  }
  if (all) return true;
  for (const int fd : held) {
    if (fd >= 0) ::close(fd);
  }
  held.clear();
  return false;
}

}  // namespace ferry::test
