// The Event: nginx's ngx_event_t in C++ — a handler, its data, the state flags the loop and
// the I/O code keep, and the hooks that put it in the timer tree and the posted queues.
#pragma once

#include "event/timer_tree.h"

namespace ferry::event {

struct Event;
using EventHandler = void (*)(Event& ev);

// A node of a PostedQueue's intrusive ring; `owner` is the event it belongs to.
struct PostedLink {
  PostedLink* prev = nullptr;
  PostedLink* next = nullptr;
  Event* owner = nullptr;
};

struct Event {
  EventHandler handler = nullptr;
  void* data = nullptr;  // the owner: a Connection for socket events, else what the user set

  bool active : 1 = false;       // registered in epoll
  bool ready : 1 = false;        // readiness reported and not yet used up (EAGAIN clears it)
  bool posted : 1 = false;       // in a posted queue
  bool timer_set : 1 = false;    // in the timer tree
  bool timedout : 1 = false;     // the timer fired; the handler clears it
  bool eof : 1 = false;          // the peer closed (recv returned 0)
  bool pending_eof : 1 = false;  // EPOLLRDHUP seen: data may remain, then eof
  bool error : 1 = false;        // a socket error was reported
  bool accept : 1 = false;       // a listening socket: posted to the accept queue
  bool write : 1 = false;        // the write half of a connection
  bool level : 1 = false;        // registered level-triggered (no EPOLLET)

  TimerTree::Hook timer;
  PostedLink posted_link{nullptr, nullptr, this};

  Event() = default;
  // Events are linked into intrusive structures by address: never copied or moved.
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // Clears handler, data and flags for reuse; keeps the timer node. The event must not be
  // armed or posted.
  void reset() noexcept {
    handler = nullptr;
    data = nullptr;
    active = ready = posted = timer_set = timedout = eof = pending_eof = error = false;
    accept = write = level = false;
  }
};

}  // namespace ferry::event
