// NotifyListener over an AF_UNIX datagram socket with SO_PASSCRED.
#include "tests/support/notify_listener.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace ferry::test {

std::optional<std::string> NotifyMessage::get(const std::string& name) const {
  const std::string key = name + "=";
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (text.compare(pos, key.size(), key) == 0) {
      return text.substr(pos + key.size(), end - pos - key.size());
    }
    pos = end + 1;
  }
  return std::nullopt;
}

bool NotifyMessage::has(const std::string& assignment) const {
  const auto eq = assignment.find('=');
  const auto value = get(assignment.substr(0, eq));
  return value && *value == assignment.substr(eq + 1);
}

NotifyListener::NotifyListener(const std::string& path) : path_(path) {
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  const int on = 1;
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 ||
      ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0 ||
      ::setsockopt(fd_, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0) {
    throw std::runtime_error("notify socket " + path + ": " + std::strerror(errno));
  }
}

NotifyListener::~NotifyListener() {
  if (fd_ >= 0) ::close(fd_);
  ::unlink(path_.c_str());
}

std::optional<NotifyMessage> NotifyListener::receive(std::chrono::milliseconds limit) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return std::nullopt;
  char buf[4096];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(timespec))];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT);
  if (n < 0) return std::nullopt;
  NotifyMessage m;
  m.text.assign(buf, static_cast<std::size_t>(n));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
      ucred cred{};
      std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
      m.sender = cred.pid;
    } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
      timespec ts{};
      std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
      m.arrived = std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
    }
  }
  history_.push_back(m);
  return m;
}

std::optional<NotifyMessage> NotifyListener::wait_for(
    const std::function<bool(const NotifyMessage&)>& match, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto m = receive(left);
    if (m && match(*m)) return m;
  }
}

std::optional<NotifyMessage> NotifyListener::wait_for(const std::string& assignment,
                                                      std::chrono::milliseconds limit) {
  return wait_for([&](const NotifyMessage& m) { return m.has(assignment); }, limit);
}

void NotifyListener::drain() {
  while (receive(std::chrono::milliseconds(0))) {
  }
}

}  // namespace ferry::test
