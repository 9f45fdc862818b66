// recv()/send() on a connection with EINTR retried and the event flags kept current.
#include "event/connection_io.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>

#include "event/syscall_util.h"

namespace ferry::event {

IoResult recv_done(Connection& c, long result, std::size_t size) noexcept {
  // -ECANCELED: the batch never made the call, so nothing was learnt about the socket; the
  // caller makes it directly, and flags cleared here would stay cleared if that call filled the
  // buffer (under EPOLLET no new report would come for the bytes still queued).
  if (result == -ECANCELED) return {IoStatus::error, 0, ECANCELED};
  if (result > 0) {
    // A short read drained the socket: under EPOLLET the next arrival reports again, so the
    // recv() that would only say EAGAIN is saved (nginx's rule).
    if (static_cast<std::size_t>(result) < size) {
      // EPOLLERR came with these bytes (a reset behind them): the next recv() must report it,
      // or the reset would pass for the FIN of a complete stream.
      if (c.read.error) return {IoStatus::ok, static_cast<std::size_t>(result)};
      if (c.read.pending_eof) {
        // After EPOLLRDHUP a short read took every byte before the FIN: the EOF is known
        // without the recv() that would return 0 (HAProxy's rule).
        c.read.eof = true;
      }
      c.read.ready = false;
    }
    return {IoStatus::ok, static_cast<std::size_t>(result)};
  }
  c.read.ready = false;
  if (result == 0) {
    c.read.eof = true;
    return {IoStatus::eof};
  }
  const int err = static_cast<int>(-result);
  if (err == EAGAIN || err == EWOULDBLOCK) return {IoStatus::again};
  c.read.error = true;
  return {IoStatus::error, 0, err};
}

IoResult send_done(Connection& c, long result, std::size_t size) noexcept {
  // As in recv_done(): a send that was never made leaves write.ready and write.error alone.
  if (result == -ECANCELED) return {IoStatus::error, 0, ECANCELED};
  if (result >= 0) {
    if (static_cast<std::size_t>(result) < size) c.write.ready = false;
    return {IoStatus::ok, static_cast<std::size_t>(result)};
  }
  c.write.ready = false;
  const int err = static_cast<int>(-result);
  // EINPROGRESS: a Fast Open connect whose cookie went away since connect() sent a plain SYN
  // instead of the bytes; the socket turns writable once connected.
  if (err == EAGAIN || err == EWOULDBLOCK || err == EINPROGRESS) return {IoStatus::again};
  c.write.error = true;
  return {IoStatus::error, 0, err};
}

IoResult recv(Connection& c, std::span<std::byte> buffer) noexcept {
  // recv() of 0 bytes returns 0, which would read as EOF on a live connection.
  if (buffer.empty()) return {IoStatus::ok, 0};
  const ssize_t n =
      retry_eintr([&] { return ::recv(c.fd.get(), buffer.data(), buffer.size(), 0); });
  return recv_done(c, n >= 0 ? n : -errno, buffer.size());
}

IoResult send(Connection& c, std::span<const std::byte> data, bool more) noexcept {
  const int flags = MSG_NOSIGNAL | (more ? MSG_MORE : 0);
  const ssize_t n =
      retry_eintr([&] { return ::send(c.fd.get(), data.data(), data.size(), flags); });
  return send_done(c, n >= 0 ? n : -errno, data.size());
}

bool peer_gone(int fd) noexcept {
  // A FIN leaves the socket in CLOSE_WAIT; a reset (after the FIN or instead of it) in CLOSE.
  tcp_info info{};
  socklen_t size = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0) {
    spdlog::debug("getsockopt(TCP_INFO) on fd {}: {}", fd, last_error().message());
    return false;
  }
  return info.tcpi_state == TCP_CLOSE;
}

}  // namespace ferry::event
