// Test sockets: connect from a source address, listen on v4/v6 loopback, bounded reads.
#include "tests/support/sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>

#include "event/syscall_util.h"
#include "tests/support/echo_server.h"

namespace ferry::test {
namespace {

// Fills `ss` from numeric `ip` and `port`; its length, or 0 when `ip` is not an address.
socklen_t make_address(const std::string& ip, int port, sockaddr_storage& ss) {
  std::memset(&ss, 0, sizeof ss);
  auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
  if (::inet_pton(AF_INET, ip.c_str(), &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    return sizeof(sockaddr_in);
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET6, ip.c_str(), &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    return sizeof(sockaddr_in6);
  }
  return 0;
}

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

}  // namespace

int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  if (fd == -1 || ::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == -1) {
    if (fd != -1) ::close(fd);
    return -1;
  }
  return fd;
}

int connect_from(const std::string& source, const std::string& ip, int port) {
  sockaddr_storage to{};
  const socklen_t to_len = make_address(ip, port, to);
  if (to_len == 0) return -1;
  const int fd = ::socket(to.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) return -1;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (!source.empty()) {
    sockaddr_storage from{};
    const socklen_t from_len = make_address(source, 0, from);
    if (from_len == 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&from), from_len) != 0) {
      ::close(fd);
      return -1;
    }
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), to_len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int listen_on(const std::string& ip, int& port) {
  sockaddr_storage ss{};
  socklen_t len = make_address(ip, 0, ss);
  if (len == 0) return -1;
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) return -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 128) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    ::close(fd);
    return -1;
  }
  port = ss.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port)
                                 : ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return fd;
}

int accept_within(int listener, std::chrono::milliseconds limit) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(limit.count())) != 1) return -1;
  const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd == -1) return -1;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

std::string read_exactly(int fd, std::size_t n, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::string got;
  while (got.size() < n) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) != 1) break;
    char buf[65536];
    const ssize_t r = ::recv(fd, buf, std::min(sizeof buf, n - got.size()), MSG_DONTWAIT);
    if (r <= 0) break;
    got.append(buf, static_cast<std::size_t>(r));
  }
  return got;
}

bool closed_by_peer(int fd, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) != 1) return false;
    char buf[4096];
    const ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) return true;
    if (r == -1 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
  }
}

bool send_all(int fd, const std::string& data) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

int local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return -1;
  return ss.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port)
                                 : ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

std::string read_file(const std::string& path) {
  // read(2), not ifstream: libstdc++ throws from underflow when a read fails, as one of
  // /proc/PID/ does (ESRCH) once the process is gone.
  std::string text;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buf[8192];
  for (;;) {
    const ssize_t got = ::read(fd, buf, sizeof buf);
    if (got > 0) {
      text.append(buf, static_cast<std::size_t>(got));
    } else if (got == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fd);
  return text;
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string http_get(int port, const std::string& path) {
  const event::UniqueFd fd(connect_to_port(port));
  if (!fd.valid()) return {};
  (void)send_all(fd.get(), "GET " + path + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  return read_exactly(fd.get(), 1 << 20, std::chrono::seconds(5));
}

BlackHole::BlackHole() {
  int port = 0;
  listener_ = listen_on("127.0.0.1", port);
  if (listener_ == -1 || ::listen(listener_, 0) != 0) return;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons(static_cast<uint16_t>(port));
  // A backlog of 0 still queues one connection; a few more make sure the queue is full.
  for (int i = 0; i < 4; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) return;
    fillers_.push_back(fd);
    (void)::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  }
  port_ = port;
}

BlackHole::~BlackHole() {
  for (const int fd : fillers_) ::close(fd);
  if (listener_ != -1) ::close(listener_);
}

}  // namespace ferry::test
