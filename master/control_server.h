// The master's end of the control socket: opening it (mode 0600 from the moment it appears, never
// through a link), the listener the loop polls, and which peers may use it (root and the master's
// own user, the users kill(2) lets signal it).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "event/clock.h"
#include "event/connection.h"
#include "event/event_loop.h"
#include "event/syscall_util.h"

namespace ferry::master {

// A connection that has not sent its request line within this is closed.
inline constexpr event::Msec kControlRequestTimeout{3'000};
// Connections without a request yet; past this the oldest is closed for the new one, so that a
// flood of idle connections cannot keep `-s reload` out (nor take the master's connections).
inline constexpr std::size_t kMaxUnrequestedControl = 32;
// A request line's bytes at most, its '\n' included.
inline constexpr std::size_t kMaxControlLine = 1024;

// Why `path` cannot be a control socket's (longer than a unix socket address holds), or nothing.
[[nodiscard]] std::optional<std::string> control_path_too_long(const std::string& path);

// Which file a socket was bound to: the path may be taken over by another master's socket.
struct SocketFileId {
  dev_t dev = 0;
  ino_t ino = 0;
  [[nodiscard]] bool known() const noexcept { return ino != 0; }
};

// Binds and listens at `path`, mode 0600, creating its folder when missing. The socket is bound
// in a private folder made beside it and renamed into place, so it never shows at another mode.
// A stale socket or a link at the path is replaced (a link is never followed); anything else
// there is left alone and refused. Logs why it failed. `file`, if given, says which file it is.
event::UniqueFd open_control_socket(const std::string& path, SocketFileId* file = nullptr);

// Removes the socket file at `path` if nothing listens on it any more (connect() is refused): a
// leaving new master's, left for an old master that was stopping too and took nothing back.
void remove_dead_socket(const std::string& path) noexcept;

// The listening control socket as the master's loop polls it (level-triggered; an accept error
// may pause it on its read event's timer).
class ControlServer {
 public:
  // `accept` runs on the listener's read event; the listener's `data` is `owner`.
  ControlServer(event::EventLoop& loop, event::EventHandler accept, void* owner) noexcept
      : loop_(loop) {
    listener_.read.handler = accept;
    listener_.data = owner;
  }
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Opens the socket at `path` in place of the one open now, if any, which is closed once the
  // new one is polled. False (logged): nothing changed, and nothing is left at `path`.
  bool open(const std::string& path);
  // Stops polling (and an accept pause) and closes the socket; its file stays, for whoever owns
  // the path to remove.
  void close() noexcept;
  // Removes the socket file at `path` if it is still the one this server bound last: a master
  // that took the path over meanwhile (the old master of a rolled-back upgrade) keeps its own.
  void remove_file(const std::string& path) const noexcept;
  // In a forked worker: the fd goes; the loop is the master's, not to be touched.
  void drop() noexcept { listener_.fd.reset(); }
  [[nodiscard]] bool is_open() const noexcept { return static_cast<bool>(listener_.fd); }
  [[nodiscard]] int fd() const noexcept { return listener_.fd.get(); }

 private:
  void stop_polling() noexcept;

  event::EventLoop& loop_;
  event::Connection listener_;
  SocketFileId file_;  // kept after close(): the file stays until remove_file()
};

// Why the peer of the accepted control connection `fd` may not use it (its uid is neither root
// nor the master's), or nothing when it may.
std::optional<std::string> control_peer_refused(int fd);

}  // namespace ferry::master
