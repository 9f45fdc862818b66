// The master ↔ worker channel: one socketpair per worker carrying one-byte messages — commands
// from the master (quit, terminate, reopen, and the sockets of a session move, each byte with
// one fd attached, and the operator's server settings changing) and reports from the worker
// (ready, settings applied, a sessions request answered).
#pragma once

#include <sys/socket.h>

#include <cerrno>

namespace ferry::worker {

enum class Command : char {
  quit = 'q',
  terminate = 't',
  reopen = 'r',
  move_to = 'm',     // with a socket to a worker of the new generation: sessions go there
  adopt_from = 'a',  // with a socket from an older worker: sessions come from there
  admin = 'u',       // the operator's server settings changed (ServerAdminTable): read them
  // With a memfd holding a request line (session_listing.h): answer into it, report `sessions`.
  list_sessions = 'l',
  kill_sessions = 'k',
};
enum class Report : char {
  ready = 'R',
  applied = 'A',   // the server settings were read: their version is in the counters entry
  sessions = 'L',  // a list_sessions / kill_sessions answer is in its memfd
};

// Exit status of a worker that must not be respawned (it cannot work at all: nginx's 2).
inline constexpr int kFatalExit = 2;

// Sends one byte; false when the peer is gone or the buffer is full (never blocks).
inline bool channel_send(int fd, char byte) noexcept {
  for (;;) {
    const ssize_t n = ::send(fd, &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == 1) return true;
    if (n == -1 && errno == EINTR) continue;
    return false;
  }
}

}  // namespace ferry::worker
