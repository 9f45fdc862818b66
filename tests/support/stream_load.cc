// StreamLoad: the sessions' epoll loop — send while the window has room, check what comes back
// byte by byte, count cuts and wrong bytes.
#include "tests/support/stream_load.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"

namespace ferry::test {
namespace {

int connect_nonblocking(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    ::close(fd);
    return -1;
  }
  const int on = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  const timeval none{};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
  return fd;
}

}  // namespace

std::uint8_t StreamLoad::byte_at(int i, std::uint64_t offset) noexcept {
  const std::uint64_t x =
      (offset + 1) * 0x9E3779B97F4A7C15ULL ^ static_cast<std::uint64_t>(i) * 0xBF58476D1CE4E5B9ULL;
  return static_cast<std::uint8_t>((x >> 29) ^ (x >> 47) ^ (offset >> 8));
}

StreamLoad::StreamLoad(const Options& options) : options_(options) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event we{};
  we.events = EPOLLIN;
  we.data.u64 = UINT64_MAX;
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &we);
  result_.sessions = options.sessions;
  sessions_.resize(static_cast<std::size_t>(options.sessions));
  for (int i = 0; i < options.sessions; ++i) {
    Session& s = sessions_[static_cast<std::size_t>(i)];
    s.fd = connect_nonblocking(options.port);
    const bool bulk = i < options.bulk_sessions;
    s.window = bulk ? std::size_t{1} << 20 : options.window;
    if (bulk) s.limit = options.bulk_bytes;
    if (s.fd < 0) {
      s.dead = true;
      continue;
    }
    ++result_.connected;
    ::fcntl(s.fd, F_SETFL, ::fcntl(s.fd, F_GETFL) | O_NONBLOCK);
    epoll_event ee{};
    ee.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
    ee.data.u64 = static_cast<std::uint64_t>(i);
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, s.fd, &ee);
  }
  thread_ = std::thread([this] { run(); });
}

StreamLoad::~StreamLoad() {
  quit_ = true;
  const std::uint64_t one = 1;
  (void)!::write(wake_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  for (Session& s : sessions_) {
    if (s.fd >= 0) ::close(s.fd);
  }
  ::close(epoll_);
  ::close(wake_);
}

void StreamLoad::problem(int i, const std::string& what, bool cut) {
  Session& s = sessions_[static_cast<std::size_t>(i)];
  std::lock_guard lock(mutex_);
  if (s.dead) return;
  s.dead = true;
  (cut ? result_.cut : result_.wrong) += 1;
  if (result_.first_problem.empty()) {
    result_.first_problem = "session " + std::to_string(i) + " after " + std::to_string(s.echoed) +
                            " bytes echoed: " + what;
  }
}

void StreamLoad::send_some(int i) {
  Session& s = sessions_[static_cast<std::size_t>(i)];
  char buf[65536];
  while (!s.dead && !stop_sending_.load(std::memory_order_relaxed) && s.sent < s.limit &&
         s.sent - s.echoed < s.window) {
    const std::size_t n = static_cast<std::size_t>(
        std::min<std::uint64_t>({sizeof buf, s.window - (s.sent - s.echoed), s.limit - s.sent}));
    for (std::size_t k = 0; k < n; ++k) buf[k] = static_cast<char>(byte_at(i, s.sent + k));
    const ssize_t w = ::send(s.fd, buf, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) problem(i, std::strerror(errno), true);
      return;
    }
    std::lock_guard lock(mutex_);
    s.sent += static_cast<std::uint64_t>(w);
  }
}

void StreamLoad::receive_some(int i) {
  Session& s = sessions_[static_cast<std::size_t>(i)];
  char buf[65536];
  while (!s.dead) {
    const ssize_t r = ::recv(s.fd, buf, sizeof buf, 0);
    if (r == 0) {
      problem(i, "closed by the proxy", true);
      return;
    }
    if (r < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) problem(i, std::strerror(errno), true);
      return;
    }
    for (ssize_t k = 0; k < r; ++k) {
      if (static_cast<std::uint8_t>(buf[k]) !=
          byte_at(i, s.echoed + static_cast<std::uint64_t>(k))) {
        problem(
            i, "a wrong byte at offset " + std::to_string(s.echoed + static_cast<std::uint64_t>(k)),
            false);
        return;
      }
    }
    if (s.echoed + static_cast<std::uint64_t>(r) > s.sent) {
      problem(i, "more bytes came back than were sent", false);
      return;
    }
    std::lock_guard lock(mutex_);
    s.echoed += static_cast<std::uint64_t>(r);
    result_.echoed += static_cast<std::uint64_t>(r);
  }
}

void StreamLoad::run() {
  epoll_event events[256];
  while (!quit_.load()) {
    const int n = ::epoll_wait(epoll_, events, 256, 100);
    for (int k = 0; k < n; ++k) {
      if (events[k].data.u64 == UINT64_MAX) continue;
      const int i = static_cast<int>(events[k].data.u64);
      receive_some(i);
      send_some(i);
    }
    // A window that the last echo opened: send on (edge-triggered sockets say nothing more).
    for (int i = 0; i < static_cast<int>(sessions_.size()); ++i) {
      const Session& s = sessions_[static_cast<std::size_t>(i)];
      if (!s.dead && s.sent - s.echoed < s.window / 2) send_some(i);
    }
  }
}

bool StreamLoad::progress(std::size_t bytes, std::chrono::milliseconds limit) {
  std::vector<std::uint64_t> start;
  {
    std::lock_guard lock(mutex_);
    for (const Session& s : sessions_) start.push_back(s.echoed);
  }
  return eventually(
      [&] {
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; i < sessions_.size(); ++i) {
          const Session& s = sessions_[i];
          if (s.dead || s.echoed >= s.limit) continue;
          if (s.echoed < start[i] + bytes) return false;
        }
        return true;
      },
      limit);
}

StreamLoad::Result StreamLoad::finish(std::chrono::milliseconds limit) {
  stop_sending_ = true;
  eventually(
      [&] {
        std::lock_guard lock(mutex_);
        return std::all_of(sessions_.begin(), sessions_.end(),
                           [](const Session& s) { return s.dead || s.echoed == s.sent; });
      },
      limit);
  quit_ = true;
  const std::uint64_t one = 1;
  (void)!::write(wake_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  for (std::size_t i = 0; i < sessions_.size(); ++i) {
    Session& s = sessions_[i];
    if (!s.dead && s.echoed != s.sent) {
      problem(static_cast<int>(i), "not every byte came back in time", true);
    }
    if (s.fd >= 0) ::close(s.fd);
    s.fd = -1;
  }
  return now();
}

StreamLoad::Result StreamLoad::now() const {
  std::lock_guard lock(mutex_);
  return result_;
}

}  // namespace ferry::test
