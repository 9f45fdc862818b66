// AcceptMutex: nginx's ngx_accept_mutex — a lock word in shared memory that the workers take
// with try_lock() before polling the shared listening sockets; it holds the owner's pid so the
// master can free the lock of a worker that died holding it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>

namespace ferry::event {

// The shared part; place it in a SharedMemory mapped before fork.
struct AcceptMutexWord {
  std::atomic<std::uint64_t> owner{0};  // 0 = free, else the holder's pid
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
                "a lock shared across processes must be lock-free");
};

// One process's handle on the shared word.
class AcceptMutex {
 public:
  AcceptMutex(AcceptMutexWord& word, pid_t self) noexcept : word_(&word), self_(self) {}

  // Never blocks: true when this process now holds the lock.
  bool try_lock() noexcept {
    std::uint64_t expected = 0;
    return word_->owner.load(std::memory_order_relaxed) == 0 &&
           word_->owner.compare_exchange_strong(expected, static_cast<std::uint64_t>(self_),
                                                std::memory_order_acquire,
                                                std::memory_order_relaxed);
  }

  // Releases the lock if this process holds it.
  void unlock() noexcept { force_unlock(self_); }

  // Releases the lock held by `pid` (the master, for a worker that died); true if it was held.
  bool force_unlock(pid_t pid) noexcept {
    std::uint64_t expected = static_cast<std::uint64_t>(pid);
    return word_->owner.compare_exchange_strong(expected, 0, std::memory_order_release,
                                                std::memory_order_relaxed);
  }

  [[nodiscard]] pid_t holder() const noexcept {
    return static_cast<pid_t>(word_->owner.load(std::memory_order_relaxed));
  }
  [[nodiscard]] pid_t self() const noexcept { return self_; }

 private:
  AcceptMutexWord* word_;
  pid_t self_;
};

}  // namespace ferry::event
