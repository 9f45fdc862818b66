// LogThrottle: lets a message that can repeat thousands of times a second (a full connection
// pool, a flood of refused clients) through once per interval, with the count it held back.
#pragma once

#include <cstdint>
#include <optional>

#include "event/clock.h"

namespace ferry::event {

class LogThrottle {
 public:
  explicit LogThrottle(Msec interval) noexcept : interval_(interval) {}

  // The message happened at `now`: when it should be logged, how many were held back since the
  // last one logged; nullopt when it is to be held back.
  std::optional<std::uint64_t> admit(TimePoint now) noexcept {
    if (logged_ && now - last_ < interval_) {
      ++held_;
      return std::nullopt;
    }
    logged_ = true;
    last_ = now;
    const std::uint64_t held = held_;
    held_ = 0;
    return held;
  }

 private:
  Msec interval_;
  TimePoint last_{};
  std::uint64_t held_ = 0;
  bool logged_ = false;
};

}  // namespace ferry::event
