// Reading and writing a non-blocking connection the way nginx's ngx_unix_recv/ngx_unix_send do:
// the event's ready/eof/error flags follow what the kernel said, so handlers can read until
// EAGAIN under edge-triggered epoll and know when to wait.
#pragma once

#include <cstddef>
#include <span>

#include "event/connection.h"

namespace ferry::event {

enum class IoStatus { ok, again, eof, error };

struct IoResult {
  IoStatus status;
  std::size_t bytes = 0;  // with ok: how many bytes moved
  int err = 0;            // with error: errno
};

// recv(): ok with bytes > 0 (a short read clears read.ready, and after EPOLLRDHUP also sets
// read.eof: the FIN follows those bytes; after EPOLLERR, read.error, neither: the next recv()
// reports the error); again clears read.ready; eof sets read.eof and clears ready; error sets
// read.error.
IoResult recv(Connection& c, std::span<std::byte> buffer) noexcept;
// send(): ok with bytes (a short write clears write.ready); again clears write.ready. `more`
// (MSG_MORE): the caller ends the stream next (shutdown or close), whose FIN then leaves in the
// same segment as these bytes.
IoResult send(Connection& c, std::span<const std::byte> data, bool more = false) noexcept;

// The same rules applied to a result obtained elsewhere (an io_uring completion): `result` is
// the byte count or -errno of a recv/send of `size` bytes on `c`. -ECANCELED (the batch never
// made the call) returns an error of ECANCELED and leaves every flag as it was: make the call.
IoResult recv_done(Connection& c, long result, std::size_t size) noexcept;
IoResult send_done(Connection& c, long result, std::size_t size) noexcept;

// Whether the TCP peer of `fd`, whose stream has ended, is gone altogether: its reset closed
// the connection (it closed without reading what it was sent), as opposed to a half-close after
// which it still reads. False when the kernel cannot say (not TCP; the error is logged).
bool peer_gone(int fd) noexcept;

}  // namespace ferry::event
