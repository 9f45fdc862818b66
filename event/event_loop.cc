// EventLoop: epoll registration with nginx's ADD/MOD rule, stale-event detection through
// generations, and the iteration order of ngx_process_events_and_timers.
#include "event/event_loop.h"

#include <unistd.h>

#include <cassert>
#include <cstdio>
#include <cstdlib>

#include <spdlog/spdlog.h>

#include "event/acceptor.h"
#include "event/io_batch.h"

namespace ferry::event {
namespace {

// epoll_data of a pooled entry: its generation in the high half and its slot shifted left by one
// in the low half; of any other (never reused): its address with the lowest bit set, which
// alignment leaves free. A report whose generation is not the entry's any more is stale.
std::uint64_t tag(const Connection& c) noexcept {
  if (c.index == Connection::kNoSlot) return reinterpret_cast<std::uintptr_t>(&c) | 1U;
  return (std::uint64_t{c.generation} << 32) | (std::uint64_t{c.index} << 1);
}

const char* op_name(int op) noexcept {
  switch (op) {
    case EPOLL_CTL_ADD: return "ADD";
    case EPOLL_CTL_MOD: return "MOD";
    default: return "DEL";
  }
}

}  // namespace

EventLoop::~EventLoop() = default;

std::error_code EventLoop::ctl(int op, const Connection& c, epoll_event& ee) {
  // A pooled entry is found again by its slot in this loop's pool, not by its address.
  assert(c.index == Connection::kNoSlot || &entries_[c.index] == &c);
  if (::epoll_ctl(epoll_.get(), op, c.fd.get(), &ee) == -1) {
    const auto ec = last_error();
    spdlog::error("epoll_ctl({}, {}) failed: {}", op_name(op), c.fd.get(), ec.message());
    return ec;
  }
  return {};
}

std::error_code EventLoop::init(const LoopOptions& options) {
  static_assert(alignof(Connection) >= 2, "the tag needs a free low pointer bit");
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) {
    const auto ec = last_error();
    spdlog::critical("epoll_create1() failed: {}", ec.message());
    return ec;
  }
  events_.resize(static_cast<std::size_t>(options.epoll_events > 0 ? options.epoll_events : 512));
  pool_ = std::make_unique<ConnectionPool>(options.connections);
  entries_ = pool_->entries();
  thread_ = std::this_thread::get_id();
  update_time();
  return {};
}

void EventLoop::assert_in_loop_thread() const noexcept {
  if (!in_loop_thread()) {
    std::fprintf(stderr, "ferry: event loop used off its thread\n");
    std::abort();
  }
}

std::error_code EventLoop::add_event(Event& ev, EventKind kind, std::uint32_t flags) {
  debug_assert_in_loop_thread();
  auto& c = *static_cast<Connection*>(ev.data);
  Event& other = kind == EventKind::read ? c.write : c.read;
  std::uint32_t events = kind == EventKind::read ? (EPOLLIN | EPOLLRDHUP) : EPOLLOUT;
  const std::uint32_t other_events = kind == EventKind::read ? EPOLLOUT : (EPOLLIN | EPOLLRDHUP);

  // A fd may be added to epoll once; after that only modified. Both directions share one epoll
  // entry, so the opposite event's `active` tells whether the fd is already there (as in
  // nginx's ngx_epoll_add_event).
  int op = EPOLL_CTL_ADD;
  if (other.active) {
    op = EPOLL_CTL_MOD;
    events |= other_events;
  }
  // EPOLLEXCLUSIVE admits only IN, OUT, ET and WAKEUP.
  if (flags & EPOLLEXCLUSIVE) events &= ~static_cast<std::uint32_t>(EPOLLRDHUP);
  epoll_event ee{};
  ee.events = events | flags;
  ee.data.u64 = tag(c);
  if (auto ec = ctl(op, c, ee)) return ec;
  ev.active = true;
  ev.level = (flags & EPOLLET) == 0;
  return {};
}

std::error_code EventLoop::del_event(Event& ev, EventKind kind, bool closing) {
  debug_assert_in_loop_thread();
  // A closed fd leaves epoll by itself, unless another process or fd still refers to it.
  if (closing) {
    ev.active = false;
    return {};
  }

  auto& c = *static_cast<Connection*>(ev.data);
  Event& other = kind == EventKind::read ? c.write : c.read;
  int op = EPOLL_CTL_DEL;
  epoll_event ee{};
  if (other.active) {
    op = EPOLL_CTL_MOD;
    // The remaining direction keeps the mode it was registered with.
    ee.events = (kind == EventKind::read ? EPOLLOUT : (EPOLLIN | EPOLLRDHUP)) |
                (other.level ? 0U : static_cast<std::uint32_t>(EPOLLET));
    ee.data.u64 = tag(c);
  }
  if (auto ec = ctl(op, c, ee)) return ec;
  ev.active = false;
  return {};
}

std::error_code EventLoop::add_connection(Connection& c) {
  epoll_event ee{};
  ee.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
  ee.data.u64 = tag(c);
  if (auto ec = ctl(EPOLL_CTL_ADD, c, ee)) return ec;
  c.read.active = c.write.active = true;
  return {};
}

std::error_code EventLoop::del_connection(Connection& c, bool closing) {
  c.read.active = c.write.active = false;
  if (closing) return {};
  epoll_event ee{};
  return ctl(EPOLL_CTL_DEL, c, ee);
}

void EventLoop::close_connection(Connection& c) noexcept {
  // With a batch the close() joins the iteration's other calls; the fd stays open (so its
  // number is not reused) until the flush, before the next epoll_wait. Queued first: queueing
  // may flush a full ring, and an event its completions post for this entry must be unposted
  // below with the others, not run on a freed (or reused) entry.
  if (IoBatch* b = batch(); b != nullptr && c.fd.valid() && b->queue_close(c.fd.get())) {
    (void)c.fd.release();
  }
  timers_.del(c.read);
  timers_.del(c.write);
  PostedQueue::remove(c.read);
  PostedQueue::remove(c.write);
  (void)del_connection(c, true);
  pool_->free(c);  // closes the fd (unless the batch took it)
}

void EventLoop::abandon() noexcept {
  if (pool_) {
    for (std::size_t i = 0; i < pool_->size(); ++i) pool_->at(i).fd.reset();
  }
  epoll_.reset();
}

void EventLoop::process_events_and_timers() {
  int timeout = timers_.timeout_ms(now_);
  unsigned flags = 0;

  if (acceptor_ != nullptr && acceptor_->uses_mutex()) {
    if (acceptor_->accept_disabled > 0) {
      // Too few free connections: leave the mutex to the other workers for a while.
      --acceptor_->accept_disabled;
      acceptor_->release_accept_events();
    } else {
      acceptor_->try_lock_accept_mutex();
      if (acceptor_->mutex_held()) {
        flags |= kPostEvents;
      } else {
        const int delay = static_cast<int>(acceptor_->mutex_delay().count());
        if (timeout == -1 || timeout > delay) timeout = delay;
      }
    }
  }

  process_events(timeout, flags);

  posted_accept_.run();
  if (acceptor_ != nullptr && acceptor_->mutex_held()) acceptor_->unlock_accept_mutex();

  timers_.expire(now_);
  posted_.run();

  // The iteration's sends go out in one system call; completions post the write events of
  // their connections, whose handlers may queue more.
  while (batch_ != nullptr && batch_->pending() > 0) {
    batch_->flush();
    posted_.run();
  }
}

void EventLoop::run() {
  assert_in_loop_thread();
  stop_ = false;
  while (!stop_) process_events_and_timers();
}

IoBatch* EventLoop::batch() const noexcept {
  return batch_ != nullptr && batch_->enabled() && ready_events_ >= min_batch_events_ ? batch_
                                                                                      : nullptr;
}

void EventLoop::process_events(int timeout_ms, unsigned flags) {
  last_wait_timeout_ = timeout_ms;
  const int n =
      ::epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()), timeout_ms);
  const int err = errno;
  update_time();
  ready_events_ = n > 0 ? n : 0;

  if (n == -1) {
    // A signal interrupted the wait: return so the caller can look at its flags.
    if (err != EINTR) spdlog::critical("epoll_wait() failed: {}", errno_code(err).message());
    return;
  }
  if (n == 0) {
    if (timeout_ms == -1) spdlog::critical("epoll_wait() returned no events without timeout");
    return;
  }

  for (int i = 0; i < n; ++i) {
    const std::uint64_t data = events_[i].data.u64;
    Connection* entry;
    std::uint32_t generation;
    if (data & 1U) {
      entry = reinterpret_cast<Connection*>(static_cast<std::uintptr_t>(data & ~std::uint64_t{1}));
      generation = entry->generation;
    } else {
      entry = &entries_[static_cast<std::uint32_t>(data) >> 1];
      generation = static_cast<std::uint32_t>(data >> 32);
    }
    Connection& c = *entry;

    // The entry was closed, or closed and reused (once or many times), by a handler earlier in
    // this batch.
    if (!c.fd.valid() || c.generation != generation) {
      spdlog::trace("epoll: stale event for connection #{}", c.index);
      continue;
    }

    std::uint32_t revents = events_[i].events;
    // Errors and hangups are delivered to whichever handler is registered, which then sees
    // them from recv/send.
    if (revents & (EPOLLERR | EPOLLHUP)) revents |= EPOLLIN | EPOLLOUT;
    // A pending socket error (a failed connect): without it a connect is known to have
    // succeeded and needs no getsockopt(SO_ERROR).
    if (revents & EPOLLERR) c.read.error = c.write.error = true;

    if ((revents & EPOLLIN) && c.read.active) {
      if (revents & EPOLLRDHUP) c.read.pending_eof = true;
      c.read.ready = true;
      dispatch(c.read, flags);
    }

    // The read handler may have closed (and even reused) the connection.
    if ((revents & EPOLLOUT) && c.write.active) {
      if (!c.fd.valid() || c.generation != generation) {
        spdlog::trace("epoll: stale write event for connection #{}", c.index);
        continue;
      }
      c.write.ready = true;
      dispatch(c.write, flags);
    }
  }
}

void EventLoop::dispatch(Event& ev, unsigned flags) {
  if (flags & kPostEvents) {
    (ev.accept ? posted_accept_ : posted_).post(ev);
  } else {
    ev.handler(ev);
  }
}

}  // namespace ferry::event
