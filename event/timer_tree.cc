// The timer tree's operations: node reuse through std::multimap's extract/insert.
#include "event/timer_tree.h"

#include <algorithm>
#include <limits>

#include "event/event.h"

namespace ferry::event {

void TimerTree::add(Event& ev, TimePoint deadline) {
  del(ev);
  Hook& hook = ev.timer;
  if (hook.spare.empty()) {
    hook.position = map_.emplace(deadline, &ev);  // the one allocation of this event's life
  } else {
    hook.spare.key() = deadline;
    hook.spare.mapped() = &ev;
    hook.position = map_.insert(std::move(hook.spare));
  }
  ev.timer_set = true;
}

void TimerTree::del(Event& ev) noexcept {
  if (!ev.timer_set) return;
  ev.timer.spare = map_.extract(ev.timer.position);
  ev.timer.position = {};
  ev.timer_set = false;
}

std::optional<TimePoint> TimerTree::nearest() const noexcept {
  if (map_.empty()) return std::nullopt;
  return map_.begin()->first;
}

int TimerTree::timeout_ms(TimePoint now) const noexcept {
  const auto next = nearest();
  if (!next) return -1;
  const auto left = (*next - now).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<decltype(left)>(left, std::numeric_limits<int>::max()));
}

void TimerTree::expire(TimePoint now) {
  // The handler may add or delete timers, so the minimum is taken afresh each time.
  while (!map_.empty()) {
    auto first = map_.begin();
    if (first->first > now) return;
    Event& ev = *first->second;
    del(ev);
    ev.timedout = true;
    ev.handler(ev);
  }
}

}  // namespace ferry::event
