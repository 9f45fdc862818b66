// UniqueFd's close path.
#include "event/syscall_util.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

namespace ferry::event {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0 && ::close(fd_) == -1 && errno != EINTR) {
    spdlog::error("close({}) failed: {}", fd_, last_error().message());
  }
  fd_ = fd;
}

}  // namespace ferry::event
