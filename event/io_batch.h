// IoBatch: the sends of one loop iteration handed to the kernel together, in one
// io_uring_enter (liburing) instead of one send() each. Each carries MSG_DONTWAIT, so it
// completes inline with send()'s result (-EAGAIN on a full socket): the batch only saves the
// per-call cost, which on a virtual machine (~1 µs here) is a large share of a small send.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <span>
#include <vector>

namespace ferry::event {

class IoBatch {
 public:
  // Called at flush for every queued send that was not cancelled: the cookie given to
  // queue_send() and send()'s result (bytes, or -errno; -ECANCELED when the batch could not be
  // submitted, and the caller should send by itself).
  using Completion = void (*)(void* cookie, int result);
  // A queued send, until flush(): what cancel() takes.
  using Handle = io_uring_sqe*;

  IoBatch() = default;
  ~IoBatch();
  IoBatch(const IoBatch&) = delete;
  IoBatch& operator=(const IoBatch&) = delete;

  // Sets up the ring. False (logged) where io_uring is unavailable (kernel, seccomp,
  // kernel.io_uring_disabled): callers then send directly.
  bool init(unsigned entries, Completion done);
  [[nodiscard]] bool enabled() const noexcept { return enabled_; }

  // Queues a send of `data` on `fd`; `data` must stay valid and `fd` open until flush() or
  // cancel(). A full ring is flushed first (completions run from here then).
  Handle queue_send(int fd, std::span<const std::byte> data, void* cookie);
  // Turns a queued send into a no-op without a completion: for a connection closing before
  // the flush. Only valid between queue_send() and flush().
  static void cancel(Handle h) noexcept;
  [[nodiscard]] std::size_t pending() const noexcept { return queued_.size(); }

  // Submits everything queued in one system call, waits for the (inline) completions and
  // reports each to the Completion.
  void flush();

  // Counters for tests and benchmarks.
  [[nodiscard]] std::size_t submits() const noexcept { return submits_; }
  [[nodiscard]] std::size_t sends() const noexcept { return sends_; }

 private:
  io_uring ring_{};
  Completion done_ = nullptr;
  std::vector<void*> queued_;  // cookies in queue order, to report failure without the CQEs
  std::size_t submits_ = 0;
  std::size_t sends_ = 0;
  bool enabled_ = false;
};

}  // namespace ferry::event
