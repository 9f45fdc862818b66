// IoBatch: the recvs and sends of one loop iteration handed to the kernel together, in one
// io_uring_enter (liburing) instead of one system call each. Each carries MSG_DONTWAIT, so it
// completes inline with recv()'s or send()'s result (-EAGAIN when it would block): the batch
// only saves the per-call cost, which on a virtual machine (~1 µs here) is a large share of a
// small message's.
#pragma once

#include <liburing.h>

#include <cerrno>
#include <cstddef>
#include <memory>
#include <span>

namespace ferry::event {

class IoBatch {
  struct Entry;

 public:
  // Called at flush for every queued operation that was not cancelled: the cookie given to
  // queue_send() and send()'s result (bytes, or -errno; -ECANCELED when the batch could not be
  // submitted, and the caller should make the call by itself). It may cancel operations not
  // reported yet; it cannot queue new ones (queueing returns null meanwhile): post an event.
  using Completion = void (*)(void* cookie, int result);
  // A queued operation, until it is reported: what cancel() takes.
  using Handle = Entry*;

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
  // queued (the batch stopped after a failed submit, or a completion is being reported): make
  // the call directly.
  // `more`: MSG_MORE, as event::send()'s.
  Handle queue_send(int fd, std::span<const std::byte> data, void* cookie, bool more = false);
  // Queues a recv into `buffer` on `fd` (MSG_DONTWAIT too: -EAGAIN on an empty socket); the
  // same rules as queue_send().
  Handle queue_recv(int fd, std::span<std::byte> buffer, void* cookie);
  // Queues a close(fd) whose result nobody waits for (a failure is logged at the flush). The
  // fd is the batch's from now: it stays open until the flush, so its number cannot be reused
  // by a socket opened meanwhile. False: not queued, close it directly. (No shutdown(): io_uring
  // runs it on a worker thread, after a close queued behind it.)
  bool queue_close(int fd);
  // Withdraws a queued operation: its cookie is never reported, even when the flush fails, and
  // one not submitted yet becomes a no-op. For an owner going away (a connection closing
  // before the flush, or while the flush reports). Valid until the operation is reported.
  static void cancel(Handle h) noexcept;
  [[nodiscard]] std::size_t pending() const noexcept { return count_; }

  // Submits everything queued in one system call, waits for the (inline) completions and
  // reports each to the Completion, in queue order. When the kernel takes none or only some,
  // the batch stops (the rest is reported -ECANCELED, queued closes are done directly). When
  // waiting for operations the kernel took fails (other than EINTR), the process exits with
  // kBrokenRingExit: those operations still hold buffers and sessions the caller would free.
  void flush();

  // The exit code of a process whose ring broke with operations in flight (a worker: the master
  // respawns it, as after any crash).
  static constexpr int kBrokenRingExit = 1;

  // Test hooks. The next flush fails as if io_uring_enter() had returned -`err`.
  void fail_next_submit(int err) noexcept { fail_next_ = err; }
  // The next flush hands the kernel only its first `k` operations ("took k of n").
  void take_next_submit(unsigned k) noexcept { take_next_ = k + 1; }
  // The next flush's wait is cut short before any completion is gathered (as a signal does),
  // and the wait for the rest first fails with `err` (EINTR: waited again).
  void cut_next_wait(int err) noexcept { cut_next_ = err; }

  // Counters for tests and benchmarks.
  [[nodiscard]] std::size_t submits() const noexcept { return submits_; }
  [[nodiscard]] std::size_t completed() const noexcept { return completed_; }

 private:
  struct Entry {
    void* cookie = nullptr;       // null: cancelled, or a close
    io_uring_sqe* sqe = nullptr;  // until submitted: what cancel() turns into a no-op
    int fd = -1;                  // of a queued close
    int result = -ECANCELED;
  };

  // The next entry with its SQE, flushing a full ring first; null when the batch cannot take
  // one now.
  Entry* next_entry();
  int submit(unsigned n);
  // Gathers the results of the first `n` queued operations.
  void collect(unsigned n);
  // Waits for one more completion; a failure other than EINTR is fatal.
  void wait_more(unsigned got, unsigned n);
  // The batch stops: the ring goes, the operations the kernel did not take are cancelled.
  void stop(int rc, unsigned submitted, unsigned n);

  io_uring ring_{};
  Completion done_ = nullptr;
  std::unique_ptr<Entry[]> entries_;  // as many as the submission ring holds, in queue order
  unsigned capacity_ = 0;
  unsigned count_ = 0;
  int fail_next_ = 0;
  unsigned take_next_ = 0;  // k + 1; 0: none
  int cut_next_ = 0;        // errno for the next flush's cut wait; 0: none
  int cut_wait_ = 0;        // that errno, while the flush it cut waits
  std::size_t submits_ = 0;
  std::size_t completed_ = 0;
  bool enabled_ = false;
  bool reporting_ = false;
};

}  // namespace ferry::event
