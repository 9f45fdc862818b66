// Listening: a listening socket as the master opens it (address, backlog, SO_REUSEPORT) and
// open_listening(), the socket/setsockopt/bind/listen sequence.
#pragma once

#include <system_error>

#include "event/socket_address.h"
#include "event/syscall_util.h"

namespace ferry::event {

struct Listening {
  SocketAddress address;  // as configured; after open_listening(), as bound (port 0 resolved)
  int backlog = 511;
  bool reuseport = false;
  bool deferred_accept = false;  // TCP_DEFER_ACCEPT
  UniqueFd fd;
  void* data = nullptr;  // what the socket serves (a proxy), for the accept handler
  // The HTTP status endpoint's socket: `data` is then its conf::StatusSettings, not a proxy.
  bool status = false;
};

// Opens, binds and listens, non-blocking and close-on-exec, with SO_REUSEADDR, SO_REUSEPORT
// when asked, and IPV6_V6ONLY so "[::]:p" and "*:p" can both be listened on.
std::error_code open_listening(Listening& ls);

// TCP_DEFER_ACCEPT on `fd` as `on` says: 1 second (as nginx's `deferred`; the kernel rounds it
// to SYN-ACK retransmissions, then accepts a silent connection anyway) or off.
std::error_code set_deferred_accept(int fd, bool on);
// Whether TCP_DEFER_ACCEPT is on for `fd` (a socket kept across reloads and upgrades carries
// what any master last set).
bool deferred_accept_of(int fd) noexcept;

}  // namespace ferry::event
