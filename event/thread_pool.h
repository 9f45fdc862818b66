// ThreadPool: nginx's thread pools — fixed threads and a bounded queue of tasks that run off the
// loop; each finished task's event handler then runs on the loop thread, woken by a Notifier.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "event/event.h"
#include "event/notifier.h"

namespace ferry::event {

class EventLoop;

// Owned by the caller (no allocation per task). `work` runs on a pool thread; when it returns,
// `event.handler` runs on the loop thread with event.data as the caller set it.
struct ThreadTask {
  void (*work)(ThreadTask& task) = nullptr;
  void* ctx = nullptr;
  Event event;  // active while queued or running: a task cannot be posted twice
  ThreadTask* next = nullptr;
};

class ThreadPool {
 public:
  ThreadPool() = default;
  ~ThreadPool() { shutdown(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Starts `threads` threads (with every signal blocked: signals belong to the loop thread).
  std::error_code init(EventLoop& loop, std::string name, std::size_t threads,
                       std::size_t max_queue);
  // Queues `task` from the loop thread. A full queue returns
  // errc::resource_unavailable_try_again; a task already in flight returns
  // errc::device_or_resource_busy.
  std::error_code post(ThreadTask& task);
  // Lets running tasks finish, drops the queued ones, joins. No completion handler runs after
  // this (finished tasks just stop being in flight); later posts are refused.
  void shutdown() noexcept;
  // In a child forked from the loop's process, where its threads do not run: closes the eventfd
  // they wake the loop with. The pool is unusable afterwards (the child must _exit, not destroy
  // it).
  void abandon() noexcept { done_notifier_.abandon(); }

  [[nodiscard]] std::size_t queued() const;
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  void worker_main();
  static void on_done(Notifier& notifier, std::uint64_t drained);

  EventLoop* loop_ = nullptr;
  std::string name_;
  std::size_t max_queue_ = 0;
  std::vector<std::thread> threads_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  ThreadTask* queue_head_ = nullptr;
  ThreadTask** queue_tail_ = &queue_head_;
  std::size_t queued_ = 0;
  bool stopping_ = false;

  std::mutex done_mutex_;
  ThreadTask* done_head_ = nullptr;
  ThreadTask** done_tail_ = &done_head_;
  Notifier done_notifier_;
};

}  // namespace ferry::event
