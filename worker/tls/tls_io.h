// Reading, writing and handshaking a connection through its TLS (Connection::ssl) with the same
// rules as event/connection_io.h: the ready flags follow what OpenSSL waited for, so the relay
// reads until it must wait under edge-triggered epoll whichever side is TLS.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "event/connection.h"
#include "event/connection_io.h"

namespace ferry::worker::tls {

enum class HandshakeStatus : std::uint8_t { done, again, failed };

// Takes `ssl` (an SSL from a ServerContext or ClientContext, on c's fd) as c's TLS.
void attach(event::Connection& c, ssl_st* ssl) noexcept;
// Frees c's TLS, if any (no close_notify: the connection is closing or being given up).
void release(event::Connection& c) noexcept;

// Runs the handshake on as far as the socket allows: again clears the ready flag of what
// OpenSSL waits for; failed with `why` (OpenSSL's reason, or the system error).
HandshakeStatus handshake(event::Connection& c, std::string& why) noexcept;

// As event::recv/send, decrypting and encrypting. A read that got bytes keeps read.ready
// (OpenSSL may hold more records already read from the socket); eof is the peer's close_notify
// or its TCP FIN; error carries errno (EPROTO for a TLS error, logged at debug).
event::IoResult recv(event::Connection& c, std::span<std::byte> buffer) noexcept;
event::IoResult send(event::Connection& c, std::span<const std::byte> data) noexcept;
// Whether the stream holds data (ok: it stays OpenSSL's to read), nothing yet (again: read.ready
// cleared), or has ended (eof, error) — without taking a byte. An end stays to be read again.
event::IoResult peek(event::Connection& c) noexcept;
// Passes the FIN on: close_notify, then shutdown(SHUT_WR). again: the socket had no room for
// the close_notify (write.ready is cleared): call again when it is writable, nothing else in
// between. done also when the close_notify could not be sent (the peer is gone): the FIN goes.
enum class ShutdownStatus : std::uint8_t { done, again };
ShutdownStatus shutdown_write(event::Connection& c) noexcept;
// A session ferry ends itself (no server could be connected, a timeout, a shutdown): a
// close_notify, when the handshake is done and none went yet, so that the client can tell the end
// from a truncation. Best effort, one try: no room in the socket, or an SSL after a fatal error,
// and none goes.
void notify_close(event::Connection& c) noexcept;

// The first error in OpenSSL's queue as text (the queue is cleared), or `fallback` when empty.
std::string take_error(std::string_view fallback);

}  // namespace ferry::worker::tls
