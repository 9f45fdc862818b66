// IoBatch: the recvs and sends of one loop iteration handed to the kernel together, in one
// io_uring_enter (liburing) instead of one system call each. Each carries MSG_DONTWAIT, so it
// completes inline with recv()'s or send()'s result (-EAGAIN when it would block): the batch
// only saves the per-call cost, which on a virtual machine (~1 µs here) is a large share of a
// small message's.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <span>
#include <vector>

namespace ferry::event {

class IoBatch {
 public:
  // Called at flush for every queued operation that was not cancelled: the cookie given to
  // queue_send() and send()'s result (bytes, or -errno; -ECANCELED when the batch could not be
  // submitted, and the caller should make the call by itself).
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
  // cancel(). A full ring is flushed first (completions run from here then). Null: not
  // queued (the batch stopped after a failed submit): make the call directly.
  Handle queue_send(int fd, std::span<const std::byte> data, void* cookie);
  // Queues a recv into `buffer` on `fd` (MSG_DONTWAIT too: -EAGAIN on an empty socket); the
  // same rules as queue_send().
  Handle queue_recv(int fd, std::span<std::byte> buffer, void* cookie);
  // Queues a close(fd) whose result nobody waits for (a failure is logged at the flush). The
  // fd is the batch's from now: it stays open until the flush, so its number cannot be reused
  // by a socket opened meanwhile. False: not queued, close it directly. (No shutdown(): io_uring
  // runs it on a worker thread, after a close queued behind it.)
  bool queue_close(int fd);
  // Turns a queued send into a no-op without a completion: for a connection closing before
  // the flush. Only valid between queue_send() and flush().
  static void cancel(Handle h) noexcept;
  [[nodiscard]] std::size_t pending() const noexcept { return queued_.size(); }

  // Submits everything queued in one system call, waits for the (inline) completions and
  // reports each to the Completion.
  void flush();

  // Counters for tests and benchmarks.
  [[nodiscard]] std::size_t submits() const noexcept { return submits_; }
  [[nodiscard]] std::size_t completed() const noexcept { return completed_; }

 private:
  // A free entry, flushing a full ring first.
  io_uring_sqe* next_sqe();

  io_uring ring_{};
  Completion done_ = nullptr;
  std::vector<void*> queued_;  // cookies in queue order, to report failure without the CQEs
  std::vector<int> closing_;   // fds of queued closes, closed directly if the submit fails
  std::size_t submits_ = 0;
  std::size_t completed_ = 0;
  bool enabled_ = false;
};

}  // namespace ferry::event
