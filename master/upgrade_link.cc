// UpgradeLink: the masters' socket pair (made before the fork, kept across exec) and its
// messages.
#include "master/upgrade_link.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "event/fd_passing.h"

namespace ferry::master {
namespace {

std::error_code send_bytes(int fd, std::string_view bytes) {
  const ssize_t n =
      event::retry_eintr([&] { return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL); });
  if (n == -1) return event::last_error();
  return {};
}

}  // namespace

std::error_code UpgradeLink::create() {
  close();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1) {
    const auto ec = event::last_error();
    spdlog::error("socketpair() for the upgrade link failed: {}; sessions will drain",
                  ec.message());
    return ec;
  }
  conn_.fd.reset(sv[0]);
  child_end_.reset(sv[1]);
  return {};
}

void UpgradeLink::pass_to_exec() noexcept {
  if (!child_end_) return;
  conn_.fd.reset();
  if (::fcntl(child_end_.get(), F_SETFD, 0) == -1) {
    spdlog::error("fcntl({}, F_SETFD, 0) for the upgrade link failed: {}", child_end_.get(),
                  event::last_error().message());
    return;
  }
  ::setenv(kVariable, std::to_string(child_end_.release()).c_str(), 1);
}

bool UpgradeLink::adopt() {
  const char* value = std::getenv(kVariable);
  if (value == nullptr) return false;
  char* end = nullptr;
  const long number = std::strtol(value, &end, 10);
  ::unsetenv(kVariable);
  // Closed only once it is known to be the link: the number might name another fd of ours.
  int type = 0;
  int domain = 0;
  socklen_t len = sizeof type;
  socklen_t dlen = sizeof domain;
  if (end == value || *end != '\0' || number <= STDERR_FILENO || number > INT32_MAX ||
      ::getsockopt(static_cast<int>(number), SOL_SOCKET, SO_TYPE, &type, &len) == -1 ||
      ::getsockopt(static_cast<int>(number), SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == -1 ||
      type != SOCK_SEQPACKET || domain != AF_UNIX) {
    spdlog::error(
        "{}={} names no upgrade link (a unix seqpacket socket): ignored; sessions "
        "will drain between the masters",
        kVariable, value);
    return false;
  }
  const int fd = static_cast<int>(number);
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags == -1 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1 ||
      ::fcntl(fd, F_SETFD, FD_CLOEXEC) == -1) {
    spdlog::error("fcntl() on the upgrade link failed: {}", event::last_error().message());
    ::close(fd);
    return false;
  }
  conn_.fd.reset(fd);
  return true;
}

std::error_code UpgradeLink::send_move_request(std::uint32_t workers) {
  char msg[1 + sizeof workers];
  msg[0] = static_cast<char>(LinkMessage::move_request);
  std::memcpy(msg + 1, &workers, sizeof workers);
  return send_bytes(conn_.fd.get(), {msg, sizeof msg});
}

std::error_code UpgradeLink::send_ends(std::span<const int> fds) {
  const char kind = static_cast<char>(LinkMessage::ends);
  return event::send_with_fds(conn_.fd.get(), std::as_bytes(std::span(&kind, 1)), fds);
}

std::error_code UpgradeLink::send_refusal(std::string_view why) {
  std::string msg(1, static_cast<char>(LinkMessage::refused));
  msg += why.substr(0, 400);
  return send_bytes(conn_.fd.get(), msg);
}

LinkRead UpgradeLink::receive(LinkReceived& out) {
  std::byte buffer[512];
  event::ReceivedMessage m;
  const auto ec = event::receive_with_fds(conn_.fd.get(), buffer, event::kMaxPassedFds, m);
  if (ec == std::errc::resource_unavailable_try_again || ec == std::errc::operation_would_block) {
    return LinkRead::empty;
  }
  if (ec == std::errc::message_size) {
    spdlog::error("the upgrade link carried a message too long or with too many fds: ignored");
    return LinkRead::garbage;
  }
  if (ec) {
    spdlog::warn("reading the upgrade link failed: {}; it is closed", ec.message());
    return LinkRead::closed;
  }
  if (m.bytes == 0) return LinkRead::closed;
  const auto* bytes = reinterpret_cast<const char*>(buffer);
  out = {};
  out.fds = std::move(m.fds);
  switch (static_cast<LinkMessage>(bytes[0])) {
    case LinkMessage::move_request:
      if (m.bytes != 1 + sizeof out.workers || !out.fds.empty()) break;
      out.kind = LinkMessage::move_request;
      std::memcpy(&out.workers, bytes + 1, sizeof out.workers);
      return LinkRead::message;
    case LinkMessage::ends:
      if (m.bytes != 1) break;
      out.kind = LinkMessage::ends;
      return LinkRead::message;
    case LinkMessage::refused:
      out.kind = LinkMessage::refused;
      out.why.assign(bytes + 1, m.bytes - 1);
      if (!out.fds.empty()) break;
      return LinkRead::message;
  }
  spdlog::error(
      "the upgrade link carried a message this binary does not know (kind {:#x}, {} "
      "bytes, {} fds): ignored",
      static_cast<unsigned char>(bytes[0]), m.bytes, out.fds.size());
  out = {};
  return LinkRead::garbage;
}

}  // namespace ferry::master
