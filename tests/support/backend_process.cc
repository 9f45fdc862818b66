// BackendProcess: a forked, single-threaded poll() echo server that stops, resumes and dies
// with its test.
#include "tests/support/backend_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "tests/support/ferry_instance.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

constexpr int kMaxConnections = 256;
constexpr std::size_t kBuffer = 16 * 1024;

struct Conn {
  int fd = -1;
  std::size_t len = 0;  // bytes in buf still to send back
  std::size_t off = 0;
  bool eof = false;    // the peer finished sending: close once buf is sent
  bool reset = false;  // the marker came: reset once buf is sent
  char buf[kBuffer];
};

void drop(Conn& c, bool abort) {
  if (abort) {
    const linger l{1, 0};
    ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  ::close(c.fd);
  c.fd = -1;
  c.len = c.off = 0;
  c.eof = c.reset = false;
}

void on_readable(Conn& c, char reset_on) {
  const ssize_t n = ::recv(c.fd, c.buf, kBuffer, 0);
  if (n == 0) {
    c.eof = true;
  } else if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) drop(c, false);
    return;
  }
  c.len = static_cast<std::size_t>(n > 0 ? n : 0);
  c.off = 0;
  if (reset_on != 0 && c.len > 0) {
    if (const void* at = std::memchr(c.buf, reset_on, c.len)) {
      c.len = static_cast<std::size_t>(static_cast<const char*>(at) - c.buf);
      c.reset = true;
    }
  }
}

void on_writable(Conn& c) {
  while (c.off < c.len) {
    const ssize_t n = ::send(c.fd, c.buf + c.off, c.len - c.off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      drop(c, false);
      return;
    }
    c.off += static_cast<std::size_t>(n);
  }
  c.len = c.off = 0;
}

// The child: no allocation (the table was made before fork), only system calls.
[[noreturn]] void serve(int listener, Conn* conns, char reset_on) {
  pollfd fds[kMaxConnections + 1];
  int index[kMaxConnections + 1];
  for (;;) {
    int n = 0;
    int open = 0;
    for (int i = 0; i < kMaxConnections; ++i) {
      Conn& c = conns[i];
      if (c.fd < 0) continue;
      ++open;
      if (c.len == 0 && (c.eof || c.reset)) {
        drop(c, c.reset);
        --open;
        continue;
      }
      fds[n] = {c.fd, static_cast<short>(c.len > 0 ? POLLOUT : POLLIN), 0};
      index[n++] = i;
    }
    if (open < kMaxConnections) {
      fds[n] = {listener, POLLIN, 0};
      index[n++] = -1;
    }
    if (::poll(fds, static_cast<nfds_t>(n), -1) < 0) continue;
    for (int k = 0; k < n; ++k) {
      if (fds[k].revents == 0) continue;
      if (index[k] < 0) {
        const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK);
        if (fd < 0) continue;
        for (int i = 0; i < kMaxConnections; ++i) {
          if (conns[i].fd < 0) {
            conns[i].fd = fd;
            break;
          }
        }
        continue;
      }
      Conn& c = conns[index[k]];
      if (c.len > 0) {
        on_writable(c);
      } else {
        on_readable(c, reset_on);
      }
    }
  }
}

}  // namespace

BackendProcess::BackendProcess(const BackendOptions& options) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sin;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
      ::listen(fd, options.backlog) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len) != 0) {
    throw std::runtime_error("BackendProcess: cannot listen on 127.0.0.1");
  }
  port_ = ntohs(sin.sin_port);
  auto conns = std::make_unique<Conn[]>(kMaxConnections);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
    // Only the listener is kept: an inherited client or listening socket of the test would
    // keep its connections open after the test closed them.
    ::dup2(fd, 3);
    ::close_range(4, ~0U, 0);
    ::fcntl(3, F_SETFL, O_NONBLOCK);
    serve(3, conns.get(), options.reset_on);
  }
  ::close(fd);
  if (pid_ < 0) throw std::runtime_error("BackendProcess: fork failed");
}

BackendProcess::~BackendProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
}

char process_state(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  // The state follows the command name in parentheses, which may itself hold ") ".
  const auto close = stat.rfind(") ");
  return close == std::string::npos || close + 2 >= stat.size() ? 0 : stat[close + 2];
}

bool BackendProcess::stop(std::chrono::milliseconds limit) {
  ::kill(pid_, SIGSTOP);
  return eventually([&] { return process_state(pid_) == 'T'; }, limit);
}

bool BackendProcess::resume(std::chrono::milliseconds limit) {
  ::kill(pid_, SIGCONT);
  return eventually([&] { return process_state(pid_) != 'T'; }, limit);
}

}  // namespace ferry::test
