// The master's end of the control socket: opening it (mode 0600, never through a link), and
// which peers may use it (root and the master's own user, the users kill(2) lets signal it).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "event/clock.h"
#include "event/syscall_util.h"

namespace ferry::master {

// A connection that has not sent its request line within this is closed.
inline constexpr event::Msec kControlRequestTimeout{3'000};
// Connections without a request yet; past this the oldest is closed for the new one, so that a
// flood of idle connections cannot keep `-s reload` out (nor take the master's connections).
inline constexpr std::size_t kMaxUnrequestedControl = 32;

// Binds and listens at `path`, mode 0600, creating its folder when missing. A stale socket or a
// link at the path is removed (a link is never followed); anything else there is left alone and
// refused. Logs why it failed.
event::UniqueFd open_control_socket(const std::string& path);

// Why the peer of the accepted control connection `fd` may not use it (its uid is neither root
// nor the master's), or nothing when it may.
std::optional<std::string> control_peer_refused(int fd);

}  // namespace ferry::master
