// Slow start: the weight of a server that came back, ramped linearly from a small share to its
// full weight over its `slow_start` period (nginx Plus `slow_start`, HAProxy `slowstart`).
#pragma once

#include <algorithm>
#include <cstdint>

#include "event/clock.h"

namespace ferry::worker::slow_start {

// Weights are compared in 1/kScale units: a ramp in whole weights would leave a server of weight
// 1 (the default) at full weight from its first millisecond.
inline constexpr std::int64_t kScale = 100;

// The scaled weight of a server of `weight` whose ramp of `period` ends at `until`, at `now`
// (before `until`): ceil(full * elapsed / period), at least 1 so that it is never left out.
[[nodiscard]] inline std::int64_t ramped(int weight, event::Msec period, event::TimePoint until,
                                         event::TimePoint now) noexcept {
  const std::int64_t full = weight * kScale;
  const std::int64_t total = period.count();
  const std::int64_t elapsed = total - (until - now).count();
  if (total <= 0 || elapsed >= total) return full;
  if (elapsed <= 0) return 1;
  return std::clamp<std::int64_t>((full * elapsed + total - 1) / total, 1, full);
}

// How far the ramp is at `now`, in [0, 1].
[[nodiscard]] inline double progress(event::Msec period, event::TimePoint until,
                                     event::TimePoint now) noexcept {
  if (period.count() <= 0 || now >= until) return 1.0;
  const double left = static_cast<double>((until - now).count());
  return std::clamp(1.0 - left / static_cast<double>(period.count()), 0.0, 1.0);
}

}  // namespace ferry::worker::slow_start
