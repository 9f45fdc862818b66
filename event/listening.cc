// open_listening(): every step checked and logged with the address it was for.
#include "event/listening.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

namespace ferry::event {
namespace {

std::error_code fail(const Listening& ls, const char* what) {
  const auto ec = last_error();
  spdlog::critical("{} for {} failed: {}", what, ls.address.to_string(), ec.message());
  return ec;
}

}  // namespace

std::error_code open_listening(Listening& ls) {
  UniqueFd fd(::socket(ls.address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail(ls, "socket()");

  const int on = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == -1) {
    return fail(ls, "setsockopt(SO_REUSEADDR)");
  }
  if (ls.reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) == -1) {
    return fail(ls, "setsockopt(SO_REUSEPORT)");
  }
  if (ls.address.family() == AF_INET6 &&
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) == -1) {
    return fail(ls, "setsockopt(IPV6_V6ONLY)");
  }
  if (ls.deferred_accept && set_deferred_accept(fd.get(), true)) {
    return fail(ls, "setsockopt(TCP_DEFER_ACCEPT)");
  }
  if (::bind(fd.get(), ls.address.get(), ls.address.length()) == -1) return fail(ls, "bind()");
  if (::listen(fd.get(), ls.backlog) == -1) return fail(ls, "listen()");

  SocketAddress bound;
  if (::getsockname(fd.get(), bound.get(), bound.length_ptr()) == -1) {
    return fail(ls, "getsockname()");
  }
  ls.address = bound;
  ls.fd = std::move(fd);
  return {};
}

bool deferred_accept_of(int fd) noexcept {
  int seconds = 0;
  socklen_t len = sizeof seconds;
  return ::getsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, &len) == 0 && seconds > 0;
}

std::error_code set_deferred_accept(int fd, bool on) {
  const int seconds = on ? 1 : 0;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds) == -1) {
    return last_error();
  }
  return {};
}

}  // namespace ferry::event
