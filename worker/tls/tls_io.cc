// TLS reads, writes and handshakes on non-blocking sockets: OpenSSL's WANT_READ / WANT_WRITE
// become the connection's ready flags, as EAGAIN does for plain sockets.
#include "worker/tls/tls_io.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>
#include <system_error>

#include <spdlog/spdlog.h>

namespace ferry::worker::tls {

using event::Connection;
using event::IoResult;
using event::IoStatus;

void attach(Connection& c, ssl_st* ssl) noexcept {
  // A partial write leaves the rest in the relay's buffer, which may have moved by the retry.
  SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // A peer that ends with a TCP FIN and no close_notify ends its stream as a plain one would:
  // the proxy passes the FIN on rather than calling it an error.
  SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
  c.ssl = ssl;
}

void release(Connection& c) noexcept {
  if (c.ssl == nullptr) return;
  // OpenSSL marks the session of a connection freed without a close_notify sent unresumable: a
  // relay to a server ended by a reset or a timeout is no reason to distrust the session kept
  // for it (nginx's quiet shutdown). A handshake that did not finish leaves it as it is.
  if (SSL_is_server(c.ssl) == 0 && SSL_is_init_finished(c.ssl) == 1) {
    SSL_set_shutdown(c.ssl, SSL_get_shutdown(c.ssl) | SSL_SENT_SHUTDOWN);
  }
  SSL_free(c.ssl);
  c.ssl = nullptr;
}

std::string take_error(std::string_view fallback) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return std::string(fallback);
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  return text;
}

namespace {

// What an OpenSSL call's failure means for the connection: wait for a flag, or an error.
enum class Failure : std::uint8_t { want_read, want_write, eof, error };

Failure classify(Connection& c, int ret, int& err, std::string* why) noexcept {
  const int code = SSL_get_error(c.ssl, ret);
  switch (code) {
    case SSL_ERROR_WANT_READ: c.read.ready = false; return Failure::want_read;
    case SSL_ERROR_WANT_WRITE: c.write.ready = false; return Failure::want_write;
    case SSL_ERROR_ZERO_RETURN: ERR_clear_error(); return Failure::eof;
    case SSL_ERROR_SYSCALL:
      err = errno != 0 ? errno : EPIPE;
      if (why != nullptr) *why = take_error(std::system_category().message(err));
      ERR_clear_error();
      return Failure::error;
    default: {
      err = EPROTO;
      std::string reason = take_error("TLS error");
      spdlog::debug("TLS on {}: {}", c.peer.to_string(), reason);
      if (why != nullptr) *why = std::move(reason);
      return Failure::error;
    }
  }
}

}  // namespace

HandshakeStatus handshake(Connection& c, std::string& why) noexcept {
  ERR_clear_error();
  errno = 0;
  const int r = SSL_do_handshake(c.ssl);
  if (r == 1) return HandshakeStatus::done;
  int err = 0;
  switch (classify(c, r, err, &why)) {
    case Failure::want_read:
    case Failure::want_write: return HandshakeStatus::again;
    case Failure::eof: why = "the peer closed during the handshake"; return HandshakeStatus::failed;
    case Failure::error:
      if (why.empty()) why = "the peer closed during the handshake";
      return HandshakeStatus::failed;
  }
  return HandshakeStatus::failed;
}

IoResult recv(Connection& c, std::span<std::byte> buffer) noexcept {
  ERR_clear_error();
  errno = 0;
  std::size_t n = 0;
  const int r = SSL_read_ex(c.ssl, buffer.data(), buffer.size(), &n);
  if (r == 1) return {IoStatus::ok, n, 0};
  int err = 0;
  switch (classify(c, r, err, nullptr)) {
    case Failure::want_read:
    case Failure::want_write: return {IoStatus::again, 0, 0};
    case Failure::eof:
      c.read.eof = true;
      c.read.ready = false;
      return {IoStatus::eof, 0, 0};
    case Failure::error: c.read.error = true; return {IoStatus::error, 0, err};
  }
  return {IoStatus::error, 0, EPROTO};
}

IoResult peek(Connection& c) noexcept {
  ERR_clear_error();
  errno = 0;
  std::byte first{};
  std::size_t n = 0;
  const int r = SSL_peek_ex(c.ssl, &first, 1, &n);
  if (r == 1) return {IoStatus::ok, n, 0};
  int err = 0;
  switch (classify(c, r, err, nullptr)) {
    case Failure::want_read:
    case Failure::want_write: return {IoStatus::again, 0, 0};
    case Failure::eof: return {IoStatus::eof, 0, 0};
    case Failure::error: return {IoStatus::error, 0, err};
  }
  return {IoStatus::error, 0, EPROTO};
}

IoResult send(Connection& c, std::span<const std::byte> data) noexcept {
  ERR_clear_error();
  errno = 0;
  std::size_t n = 0;
  const int r = SSL_write_ex(c.ssl, data.data(), data.size(), &n);
  if (r == 1) return {IoStatus::ok, n, 0};
  int err = 0;
  switch (classify(c, r, err, nullptr)) {
    case Failure::want_read:
    case Failure::want_write: return {IoStatus::again, 0, 0};
    case Failure::eof:  // no write ends in a close_notify: the peer reset
      return {IoStatus::error, 0, EPIPE};
    case Failure::error: c.write.error = true; return {IoStatus::error, 0, err};
  }
  return {IoStatus::error, 0, EPROTO};
}

ShutdownStatus shutdown_write(Connection& c) noexcept {
  if (c.ssl != nullptr) {
    ERR_clear_error();
    // 0 or 1: the close_notify is out (the peer's answer is not waited for). A call after
    // WANT_WRITE sends what the first could not.
    const int r = SSL_shutdown(c.ssl);
    if (r < 0 && SSL_get_error(c.ssl, r) == SSL_ERROR_WANT_WRITE) {
      ERR_clear_error();
      c.write.ready = false;
      return ShutdownStatus::again;
    }
    ERR_clear_error();
  }
  if (::shutdown(c.fd.get(), SHUT_WR) == -1) {
    spdlog::debug("shutdown(SHUT_WR) failed: {}", std::system_category().message(errno));
  }
  return ShutdownStatus::done;
}

void notify_close(Connection& c) noexcept {
  if (c.ssl == nullptr || SSL_is_init_finished(c.ssl) != 1 ||
      (SSL_get_shutdown(c.ssl) & SSL_SENT_SHUTDOWN) != 0) {
    return;
  }
  ERR_clear_error();
  (void)SSL_shutdown(c.ssl);
  ERR_clear_error();
}

}  // namespace ferry::worker::tls
