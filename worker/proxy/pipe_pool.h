// PipePool: kernel pipes for splice(), taken by a session direction while bytes sit in them and
// given back empty, so idle sessions hold no pipe (two fds each) and busy ones reuse them.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <vector>

#include <spdlog/spdlog.h>

#include "event/syscall_util.h"

namespace ferry::worker {

struct KernelPipe {
  event::UniqueFd read;
  event::UniqueFd write;
  explicit operator bool() const noexcept { return read.valid(); }
};

class PipePool {
 public:
  explicit PipePool(std::size_t keep = 64) : keep_(keep) {}

  // An empty pipe, or an invalid one (logged) when pipe2 fails: the caller falls back to
  // buffers.
  KernelPipe take() {
    if (!free_.empty()) {
      KernelPipe p = std::move(free_.back());
      free_.pop_back();
      return p;
    }
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1) {
      spdlog::warn("pipe2() for splice failed: {}; using buffers", event::last_error().message());
      return {};
    }
    return {event::UniqueFd(fds[0]), event::UniqueFd(fds[1])};
  }

  // Takes back an empty pipe.
  void give(KernelPipe p) {
    if (p && free_.size() < keep_) free_.push_back(std::move(p));
  }

 private:
  std::size_t keep_;
  std::vector<KernelPipe> free_;
};

}  // namespace ferry::worker
