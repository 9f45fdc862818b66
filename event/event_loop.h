// EventLoop: one epoll instance, its connection pool, timer tree and posted queues, and
// process_events_and_timers() — the order of nginx's ngx_process_events_and_timers.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "event/clock.h"
#include "event/connection.h"
#include "event/event.h"
#include "event/posted_queue.h"
#include "event/syscall_util.h"
#include "event/timer_tree.h"

namespace ferry::event {

class Acceptor;
class IoBatch;

enum class EventKind { read, write };

struct LoopOptions {
  std::size_t connections = 1024;  // worker_connections: size of the connection pool
  int epoll_events = 512;          // events fetched per epoll_wait
};

class EventLoop {
 public:
  // Flags of add_event (epoll's own bits pass through).
  static constexpr std::uint32_t kEdge = EPOLLET;
  static constexpr std::uint32_t kLevel = 0;

  EventLoop() = default;
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Creates the epoll instance in the calling process and thread, which becomes the loop's
  // thread. Call after fork, never before: an inherited epoll is shared with the parent.
  std::error_code init(const LoopOptions& options);

  // nginx's ngx_epoll_add_event: EPOLL_CTL_MOD when the opposite event of the same
  // connection is already active, else EPOLL_CTL_ADD. `ev.data` must be its Connection.
  std::error_code add_event(Event& ev, EventKind kind, std::uint32_t flags = kEdge);
  // nginx's ngx_epoll_del_event. `closing`: the fd is about to be closed and owned only by us,
  // which removes it from epoll anyway, so no syscall is made.
  std::error_code del_event(Event& ev, EventKind kind, bool closing = false);
  // Both directions at once, edge-triggered (nginx's ngx_epoll_add_connection).
  std::error_code add_connection(Connection& c);
  std::error_code del_connection(Connection& c, bool closing);

  // The connection pool of this loop (worker_connections entries).
  Connection* get_connection(UniqueFd fd) noexcept { return pool_->get(std::move(fd)); }
  // Disarms timers, unposts, removes from epoll, closes the fd and frees the entry.
  void close_connection(Connection& c) noexcept;
  [[nodiscard]] ConnectionPool& pool() noexcept { return *pool_; }

  void add_timer(Event& ev, Msec delay) {
    debug_assert_in_loop_thread();
    timers_.add(ev, now_ + delay);
  }
  void del_timer(Event& ev) noexcept {
    debug_assert_in_loop_thread();
    timers_.del(ev);
  }
  [[nodiscard]] TimerTree& timers() noexcept { return timers_; }

  void post(Event& ev) noexcept {
    debug_assert_in_loop_thread();
    posted_.post(ev);
  }
  void post_accept(Event& ev) noexcept { posted_accept_.post(ev); }
  static void delete_posted(Event& ev) noexcept { PostedQueue::remove(ev); }

  // Sends queued on `batch` by this iteration's handlers are flushed at its end, and the events
  // their completions post are run; null: none.
  // `min_events`: batching pays only when the wake-up brought that many events (one bulk
  // stream or one ping-pong gains nothing from it and pays io_uring's own cost per operation).
  void set_batch(IoBatch* batch, int min_events) noexcept {
    batch_ = batch;
    min_batch_events_ = min_events;
  }
  // The batch to queue a call on now, or null for a direct call.
  [[nodiscard]] IoBatch* batch() const noexcept;

  // Accepting is driven by the acceptor (accept mutex, accept_disabled); null: none.
  void set_acceptor(Acceptor* acceptor) noexcept { acceptor_ = acceptor; }
  [[nodiscard]] Acceptor* acceptor() const noexcept { return acceptor_; }

  // One iteration: wait (bounded by the nearest timer), dispatch or post, run posted accept
  // events, release the accept mutex, expire timers, run posted events, flush the batch.
  void process_events_and_timers();
  // Iterates until stop() is called from a handler on this loop.
  void run();
  void stop() noexcept { stop_ = true; }
  [[nodiscard]] bool stopping() const noexcept { return stop_; }

  [[nodiscard]] TimePoint now() const noexcept { return now_; }
  void update_time() noexcept { now_ = monotonic_now(); }

  // In a child forked from this loop's process: closes the epoll fd and every pooled fd without
  // touching epoll (the parent still uses it). The loop is unusable afterwards.
  void abandon() noexcept;

  // The timeout (ms, -1 = none) handed to the last epoll_wait: what tests and stats read.
  [[nodiscard]] int last_wait_timeout() const noexcept { return last_wait_timeout_; }
  [[nodiscard]] int epoll_fd() const noexcept { return epoll_.get(); }
  [[nodiscard]] bool in_loop_thread() const noexcept {
    return std::this_thread::get_id() == thread_;
  }
  // Aborts with a message when called off the loop's thread (muduo's assertInLoopThread).
  void assert_in_loop_thread() const noexcept;
  // The same check, compiled only into builds with assertions (not -Dbuildtype=release).
  void debug_assert_in_loop_thread() const noexcept {
#ifndef NDEBUG
    assert_in_loop_thread();
#endif
  }

 private:
  enum : unsigned { kPostEvents = 1 };

  std::error_code ctl(int op, const Connection& c, epoll_event& ee);
  void process_events(int timeout_ms, unsigned flags);
  void dispatch(Event& ev, unsigned flags);

  UniqueFd epoll_;
  std::vector<epoll_event> events_;
  std::unique_ptr<ConnectionPool> pool_;
  Connection* entries_ = nullptr;  // the pool's, for the slots epoll reports carry
  TimerTree timers_;
  PostedQueue posted_accept_;
  PostedQueue posted_;
  Acceptor* acceptor_ = nullptr;
  IoBatch* batch_ = nullptr;
  int ready_events_ = 0;  // events the last epoll_wait returned
  int min_batch_events_ = 1;
  TimePoint now_ = monotonic_now();
  std::thread::id thread_;
  int last_wait_timeout_ = -1;
  bool stop_ = false;
};

}  // namespace ferry::event
