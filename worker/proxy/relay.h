// A minimal TCP relay, the worker's built-in handler until the full proxy (sessions, balancing,
// failover, access log) lands: connect to the proxy's first usable server, move bytes both ways
// with one buffer per direction, pass a FIN on as shutdown(SHUT_WR), close when both directions
// are done, on an error, or after idle_timeout.
#pragma once

#include <cstddef>

#include "conf/config.h"
#include "event/connection.h"
#include "event/event_loop.h"

namespace ferry::worker {

struct Session;

// The sessions of one worker, so that a graceful shutdown can wait for them and a fast one can
// close them.
class SessionSet {
 public:
  SessionSet() = default;
  ~SessionSet() { close_all(); }
  SessionSet(const SessionSet&) = delete;
  SessionSet& operator=(const SessionSet&) = delete;

  // Takes over an accepted client connection of `proxy`.
  void start(event::EventLoop& loop, event::Connection& client, const conf::Proxy& proxy,
             const conf::Config& cfg);
  void close_all() noexcept;
  [[nodiscard]] std::size_t size() const noexcept { return count_; }

  // Called with the set's context whenever a session ends (shutdown waits on it).
  void (*on_empty)(void* ctx) = nullptr;
  void* on_empty_ctx = nullptr;

 private:
  friend struct Session;
  void link(Session& s) noexcept;
  void unlink(Session& s) noexcept;

  Session* head_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace ferry::worker
