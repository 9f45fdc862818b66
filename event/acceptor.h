// Acceptor: a loop's side of the listening sockets — accept events, accept4(), multi_accept,
// nginx's accept mutex and accept_disabled rule, and the pause on EMFILE/ENFILE.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

#include "event/accept_mutex.h"
#include "event/clock.h"
#include "event/connection.h"
#include "event/listening.h"
#include "event/log_throttle.h"

namespace ferry::event {

class EventLoop;

// Called on the loop thread for every accepted connection (c.listening and c.peer set);
// the handler owns `c` and must close it through the loop.
using AcceptHandler = void (*)(Connection& c, void* ctx);

struct AcceptOptions {
  bool multi_accept = false;     // accept until EAGAIN on each readiness report
  AcceptMutex* mutex = nullptr;  // set: take turns with the other workers (accept_mutex on)
  Msec delay{500};               // accept_mutex_delay; also the pause after EMFILE/ENFILE
  // Without the mutex: register shared sockets with EPOLLEXCLUSIVE so one worker, not all, is
  // woken per connection, and re-register every 4 accepts so the others get their turn.
  bool exclusive = false;
  // Called (with the handler's context) for a connection accepted and closed at once because
  // the pool had no connection for it, so that the refusal is counted.
  void (*refused)(const Listening& ls, void* ctx) = nullptr;
};

struct AcceptStats {
  std::size_t accepted = 0;
  std::size_t fd_exhausted = 0;   // pauses taken because accept4 hit EMFILE/ENFILE
  std::size_t no_connection = 0;  // accepted but refused: the pool was empty
};

class Acceptor {
 public:
  Acceptor() = default;
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // Wraps each listening socket (a dup of its fd) in a connection of its own and, without
  // the accept mutex, registers it; with the mutex, registration waits for the lock (sockets
  // with reuseport are this worker's own and always registered).
  std::error_code init(EventLoop& loop, std::span<const Listening* const> listening,
                       const AcceptOptions& options, AcceptHandler handler, void* ctx);
  // Removes every accept event from epoll and closes the duplicates. Safe from a handler in the
  // middle of an epoll batch: the entries stay allocated (their fds closed, so later reports in
  // the batch are recognised as stale) until the Acceptor is destroyed.
  void close() noexcept;
  [[nodiscard]] bool closed() const noexcept { return closed_; }

  std::error_code enable_accept_events();
  void disable_accept_events(bool all) noexcept;

  // ngx_trylock_accept_mutex: on success make sure accept events are registered; on failure
  // drop them if we registered them last time.
  void try_lock_accept_mutex();
  // Gives the lock back after the posted accept events ran; the events stay registered until
  // a later try_lock fails (nginx keeps ngx_accept_mutex_held for that).
  void unlock_accept_mutex() noexcept;
  // Called while accept_disabled > 0: stop taking connections from the shared sockets.
  void release_accept_events() noexcept;

  [[nodiscard]] bool uses_mutex() const noexcept { return options_.mutex != nullptr; }
  [[nodiscard]] bool mutex_held() const noexcept { return held_; }
  [[nodiscard]] Msec mutex_delay() const noexcept { return options_.delay; }
  [[nodiscard]] const AcceptStats& stats() const noexcept { return stats_; }

  // nginx's ngx_accept_disabled: connection_n / 8 - free_connection_n after each accept.
  // Positive: this worker skips the mutex for that many iterations.
  long accept_disabled = 0;

 private:
  // One listening socket as this loop sees it.
  struct Entry {
    Acceptor* owner = nullptr;
    Connection conn;
    std::uint64_t accepted = 0;
  };

  static void on_accept(Event& ev);
  void accept_from(Event& ev, Entry& entry);
  std::error_code register_accept(Entry& e);
  [[nodiscard]] bool exclusive(const Entry& e) const noexcept {
    return options_.exclusive && !e.conn.listening->reuseport;
  }
  void reorder(Entry& e);

  EventLoop* loop_ = nullptr;
  AcceptOptions options_;
  AcceptHandler handler_ = nullptr;
  void* ctx_ = nullptr;
  std::vector<std::unique_ptr<Entry>> listening_;
  AcceptStats stats_;
  LogThrottle pool_full_log_{Msec{5'000}};
  bool held_ = false;
  bool closed_ = false;
};

}  // namespace ferry::event
