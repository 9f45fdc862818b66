// The loop's notion of time: a monotonic clock at millisecond resolution, as nginx's
// ngx_current_msec, read once per loop iteration and cached.
#pragma once

#include <chrono>

namespace ferry::event {

using Msec = std::chrono::milliseconds;
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Msec>;

inline TimePoint monotonic_now() noexcept {
  return std::chrono::time_point_cast<Msec>(std::chrono::steady_clock::now());
}

}  // namespace ferry::event
