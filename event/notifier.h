// Notifier: an eventfd in a loop's epoll that any thread, or a signal handler, can use to wake
// the loop and have a handler run on it, as nginx's ngx_notify() does for its thread pools.
#pragma once

#include <cstdint>
#include <system_error>

#include "event/connection.h"

namespace ferry::event {

class EventLoop;

class Notifier {
 public:
  // Runs on the loop thread; `drained` is how many notify() calls this wake-up covers.
  using Handler = void (*)(Notifier& notifier, std::uint64_t drained);

  Notifier() = default;
  ~Notifier() { close(); }
  // Registered in epoll by address: neither copied nor moved.
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // init(handler, data, startup): makes the eventfd; `start` also registers it.
  std::error_code create(EventLoop& loop, Handler handler, void* data, bool start);
  std::error_code add();
  std::error_code del();
  // Safe from any thread and from a signal handler (one write(2); errno is preserved), as long
  // as no notify() can still be running when close() is called: stop the producers first.
  void notify() const noexcept;
  void set_handler(Handler handler) noexcept { handler_ = handler; }
  // done: leaves epoll and closes the eventfd.
  void close() noexcept;
  // In a child forked from the loop's process: closes the eventfd without touching the epoll
  // the parent still uses.
  void abandon() noexcept {
    conn_.fd.reset();
    loop_ = nullptr;
  }

  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] bool active() const noexcept { return conn_.read.active; }
  [[nodiscard]] EventLoop* loop() const noexcept { return loop_; }

 private:
  static void on_readable(Event& ev);

  EventLoop* loop_ = nullptr;
  Connection conn_;
  Handler handler_ = nullptr;
  void* data_ = nullptr;
};

}  // namespace ferry::event
