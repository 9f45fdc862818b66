// The respawn back-off: a worker that dies soon after it started is replaced after a delay that
// doubles with each such death in a row; one that lived longer is replaced at once.
#pragma once

#include <algorithm>

#include "event/clock.h"

namespace ferry::master {

// A worker that dies this soon after starting is respawned with a growing delay.
constexpr event::Msec kQuickDeath{1'000};
constexpr event::Msec kMaxBackoff{10'000};

// One worker slot's record of quick deaths.
class RespawnBackoff {
 public:
  // The delay before replacing a worker that lived `lived`; zero means at once.
  event::Msec after_death(event::Msec lived) {
    if (lived >= kQuickDeath) {
      quick_deaths_ = 0;
      return event::Msec{0};
    }
    ++quick_deaths_;
    return std::min(kMaxBackoff, event::Msec{100 << std::min(quick_deaths_ - 1, 7)});
  }

  [[nodiscard]] int quick_deaths() const { return quick_deaths_; }

 private:
  int quick_deaths_ = 0;
};

}  // namespace ferry::master
