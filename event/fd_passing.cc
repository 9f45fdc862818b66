// sendmsg/recvmsg with SCM_RIGHTS: the control buffer sized for kMaxPassedFds, fds received
// with MSG_CMSG_CLOEXEC, truncated messages refused and their fds closed.
#include "event/fd_passing.h"

#include <sys/socket.h>

#include <cstring>

namespace ferry::event {
namespace {

// A control buffer for kMaxPassedFds descriptors, aligned as cmsghdr needs.
union ControlBuffer {
  char bytes[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  cmsghdr align;
};

}  // namespace

std::error_code send_with_fds(int sock, std::span<const std::byte> bytes,
                              std::span<const int> fds) {
  if (bytes.empty() || fds.size() > kMaxPassedFds) return errno_code(EINVAL);
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ControlBuffer control{};
  if (!fds.empty()) {
    msg.msg_control = control.bytes;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const ssize_t n = retry_eintr([&] { return ::sendmsg(sock, &msg, MSG_NOSIGNAL); });
  if (n == -1) return last_error();
  // A datagram-like socket sends all or nothing; a stream socket may not, and the fds went
  // with the first byte: the rest would arrive as a message without them.
  if (static_cast<std::size_t>(n) != bytes.size()) return errno_code(EMSGSIZE);
  return {};
}

std::error_code receive_with_fds(int sock, std::span<std::byte> buffer, std::size_t max_fds,
                                 ReceivedMessage& out) {
  out = {};
  if (max_fds > kMaxPassedFds) return errno_code(EINVAL);
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ControlBuffer control{};
  msg.msg_control = control.bytes;
  // Room for exactly max_fds: more than that sets MSG_CTRUNC (the kernel closes the extra ones).
  msg.msg_controllen = max_fds > 0 ? CMSG_SPACE(sizeof(int) * max_fds) : 0;
  if (max_fds == 0) msg.msg_control = nullptr;
  const ssize_t n = retry_eintr([&] { return ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); });
  if (n == -1) return last_error();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      out.fds.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    out = {};  // closes what arrived
    return errno_code(EMSGSIZE);
  }
  out.bytes = static_cast<std::size_t>(n);
  return {};
}

}  // namespace ferry::event
