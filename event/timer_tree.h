// The timer tree: events ordered by deadline, as nginx's ngx_event_timer_rbtree.
// Each Event carries its own tree node, so arming a timer allocates nothing after the first use.
#pragma once

#include <cstddef>
#include <map>
#include <optional>

#include "event/clock.h"

namespace ferry::event {

struct Event;

class TimerTree {
 public:
  using Map = std::multimap<TimePoint, Event*>;

  // The part of an Event the tree uses: its node while detached, its position while in the tree.
  struct Hook {
    Map::node_type spare;
    Map::iterator position;
  };

  TimerTree() = default;
  TimerTree(const TimerTree&) = delete;
  TimerTree& operator=(const TimerTree&) = delete;

  // Arms `ev` to fire at `deadline`; a timer already set is moved. Equal deadlines fire in the
  // order they were added.
  void add(Event& ev, TimePoint deadline);
  // Disarms `ev`; a no-op when no timer is set.
  void del(Event& ev) noexcept;

  // The earliest deadline, in O(1).
  [[nodiscard]] std::optional<TimePoint> nearest() const noexcept;
  // Milliseconds epoll_wait may sleep: -1 with no timer, 0 when one is already due.
  [[nodiscard]] int timeout_ms(TimePoint now) const noexcept;

  // Fires every event whose deadline is <= now: timer_set cleared, timedout set, handler called.
  void expire(TimePoint now);

  [[nodiscard]] std::size_t size() const noexcept { return map_.size(); }
  [[nodiscard]] bool empty() const noexcept { return map_.empty(); }

 private:
  Map map_;
};

}  // namespace ferry::event
