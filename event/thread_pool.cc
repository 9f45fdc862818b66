// ThreadPool: a mutex-guarded intrusive task queue, and a done list handed to the loop through
// an eventfd (nginx's ngx_thread_pool_handler).
#include "event/thread_pool.h"

#include <pthread.h>
#include <signal.h>

#include <spdlog/spdlog.h>

#include "event/event_loop.h"

namespace ferry::event {

std::error_code ThreadPool::init(EventLoop& loop, std::string name, std::size_t threads,
                                 std::size_t max_queue) {
  loop_ = &loop;
  name_ = std::move(name);
  max_queue_ = max_queue;
  if (auto ec = done_notifier_.create(loop, &ThreadPool::on_done, this, true)) return ec;

  // Threads inherit the creating thread's signal mask: block everything while creating them.
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  if (const int err = pthread_sigmask(SIG_SETMASK, &all, &previous); err != 0) {
    spdlog::critical("pthread_sigmask() failed: {}", errno_code(err).message());
    return errno_code(err);
  }
  std::error_code result;
  try {
    for (std::size_t i = 0; i < threads; ++i) {
      threads_.emplace_back([this] { worker_main(); });
      pthread_setname_np(threads_.back().native_handle(), name_.substr(0, 15).c_str());
    }
  } catch (const std::system_error& e) {
    spdlog::critical("thread pool \"{}\": creating a thread failed: {}", name_, e.what());
    result = e.code();
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (result) shutdown();
  return result;
}

std::error_code ThreadPool::post(ThreadTask& task) {
  if (task.event.active) {
    spdlog::error("thread pool \"{}\": task already queued", name_);
    return std::make_error_code(std::errc::device_or_resource_busy);
  }
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      spdlog::error("thread pool \"{}\" is shut down: task refused", name_);
      return std::make_error_code(std::errc::operation_canceled);
    }
    if (queued_ >= max_queue_) {
      spdlog::error("thread pool \"{}\" queue overflow: {} tasks waiting", name_, queued_);
      return std::make_error_code(std::errc::resource_unavailable_try_again);
    }
    task.event.active = true;
    task.next = nullptr;
    *queue_tail_ = &task;
    queue_tail_ = &task.next;
    ++queued_;
  }
  wake_.notify_one();
  return {};
}

std::size_t ThreadPool::queued() const {
  std::lock_guard lock(mutex_);
  return queued_;
}

void ThreadPool::worker_main() {
  for (;;) {
    ThreadTask* task = nullptr;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || queue_head_ != nullptr; });
      if (stopping_) return;
      task = queue_head_;
      queue_head_ = task->next;
      if (queue_head_ == nullptr) queue_tail_ = &queue_head_;
      --queued_;
    }

    task->work(*task);

    {
      std::lock_guard lock(done_mutex_);
      task->next = nullptr;
      *done_tail_ = task;
      done_tail_ = &task->next;
    }
    done_notifier_.notify();
  }
}

void ThreadPool::on_done(Notifier& notifier, std::uint64_t /*drained*/) {
  auto& self = *static_cast<ThreadPool*>(notifier.data());
  ThreadTask* task = nullptr;
  {
    std::lock_guard lock(self.done_mutex_);
    task = self.done_head_;
    self.done_head_ = nullptr;
    self.done_tail_ = &self.done_head_;
  }
  while (task != nullptr) {
    ThreadTask* next = task->next;
    task->event.active = false;
    task->event.handler(task->event);
    task = next;
  }
}

void ThreadPool::shutdown() noexcept {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (ThreadTask* t = queue_head_; t != nullptr; t = t->next) t->event.active = false;
    queue_head_ = nullptr;
    queue_tail_ = &queue_head_;
    queued_ = 0;
  }
  wake_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  done_notifier_.close();
  // Finished tasks whose completion was not delivered yet: they are no longer in flight.
  std::lock_guard lock(done_mutex_);
  for (ThreadTask* t = done_head_; t != nullptr; t = t->next) t->event.active = false;
  done_head_ = nullptr;
  done_tail_ = &done_head_;
}

}  // namespace ferry::event
