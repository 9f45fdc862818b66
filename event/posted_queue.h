// Posted-event queues: nginx's ngx_posted_accept_events and ngx_posted_events, intrusive
// rings of events whose handlers run after epoll_wait has returned.
#pragma once

#include "event/event.h"

namespace ferry::event {

class PostedQueue {
 public:
  PostedQueue() noexcept { head_.prev = head_.next = &head_; }
  PostedQueue(const PostedQueue&) = delete;
  PostedQueue& operator=(const PostedQueue&) = delete;

  // Appends `ev` unless it is already posted (in any queue).
  void post(Event& ev) noexcept {
    if (ev.posted) return;
    PostedLink& link = ev.posted_link;
    link.prev = head_.prev;
    link.next = &head_;
    head_.prev->next = &link;
    head_.prev = &link;
    ev.posted = true;
  }

  // Unlinks `ev` from whichever queue holds it; a no-op when it is not posted.
  static void remove(Event& ev) noexcept {
    if (!ev.posted) return;
    PostedLink& link = ev.posted_link;
    link.prev->next = link.next;
    link.next->prev = link.prev;
    link.prev = link.next = nullptr;
    ev.posted = false;
  }

  [[nodiscard]] bool empty() const noexcept { return head_.next == &head_; }

  // Runs handlers front to back until the queue is empty, events posted meanwhile included.
  void run() {
    while (!empty()) {
      Event& ev = *head_.next->owner;
      remove(ev);
      ev.handler(ev);
    }
  }

 private:
  PostedLink head_;
};

}  // namespace ferry::event
