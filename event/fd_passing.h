// Passing open descriptors between processes: one message of bytes with its fds attached
// (SCM_RIGHTS) over a unix socket, for handing established sessions to another worker.
#pragma once

#include <cstddef>
#include <span>
#include <system_error>
#include <vector>

#include "event/syscall_util.h"

namespace ferry::event {

// At most this many fds travel in one message (the kernel's SCM_MAX_FD is 253).
inline constexpr std::size_t kMaxPassedFds = 64;

// Sends `bytes` (at least one) and `fds` (at most kMaxPassedFds) as one message. Meant for a
// SOCK_SEQPACKET socket, which keeps the message whole or refuses it: EAGAIN when the peer's
// queue is full (nothing was sent), EMSGSIZE past the socket's limit. The fds stay open here:
// the receiver gets its own descriptions' copies.
std::error_code send_with_fds(int sock, std::span<const std::byte> bytes, std::span<const int> fds);

struct ReceivedMessage {
  std::size_t bytes = 0;      // how many of the buffer's bytes the message filled
  std::vector<UniqueFd> fds;  // close-on-exec, owned
};

// Receives one message into `buffer` with at most `max_fds` fds (≤ kMaxPassedFds). A message
// longer than `buffer` (MSG_TRUNC) or with more fds than `max_fds` (MSG_CTRUNC) is refused
// with EMSGSIZE, and whatever fds did arrive are closed: a half-received hand-off must not leak
// descriptors. ECONNRESET-like errors, EAGAIN and an orderly close (0 bytes, no error:
// `bytes` 0) are reported as they are.
std::error_code receive_with_fds(int sock, std::span<std::byte> buffer, std::size_t max_fds,
                                 ReceivedMessage& out);

}  // namespace ferry::event
