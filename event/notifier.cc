// Notifier: eventfd(EFD_NONBLOCK|EFD_CLOEXEC), edge-triggered; one read drains the counter.
#include "event/notifier.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "event/event_loop.h"

namespace ferry::event {

std::error_code Notifier::create(EventLoop& loop, Handler handler, void* data, bool start) {
  close();
  UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!fd) {
    const auto ec = last_error();
    spdlog::critical("eventfd() failed: {}", ec.message());
    return ec;
  }
  loop_ = &loop;
  handler_ = handler;
  data_ = data;
  conn_.fd = std::move(fd);
  conn_.data = this;
  conn_.read.handler = &Notifier::on_readable;
  conn_.read.data = &conn_;
  return start ? add() : std::error_code{};
}

std::error_code Notifier::add() {
  if (conn_.read.active) return {};
  return loop_->add_event(conn_.read, EventKind::read, EventLoop::kEdge);
}

std::error_code Notifier::del() {
  if (!conn_.read.active) return {};
  return loop_->del_event(conn_.read, EventKind::read, false);
}

void Notifier::notify() const noexcept {
  const int saved = errno;
  const std::uint64_t one = 1;
  // EAGAIN means the counter is near 2^64: the loop has a wake-up pending anyway.
  (void)retry_eintr([&] { return ::write(conn_.fd.get(), &one, sizeof one); });
  errno = saved;
}

void Notifier::close() noexcept {
  if (!conn_.fd) return;
  if (loop_ != nullptr) {
    EventLoop::delete_posted(conn_.read);
    // A real DEL: the eventfd may be shared (a fork), and then closing would not remove it.
    if (conn_.read.active) (void)loop_->del_event(conn_.read, EventKind::read, false);
  }
  conn_.fd.reset();
}

void Notifier::on_readable(Event& ev) {
  auto& self = *static_cast<Notifier*>(static_cast<Connection*>(ev.data)->data);
  std::uint64_t count = 0;
  // Without EFD_SEMAPHORE one read returns the whole counter and zeroes it; a notify() after
  // it makes a new edge, so nothing is lost by reading once.
  const ssize_t n = retry_eintr([&] { return ::read(self.conn_.fd.get(), &count, sizeof count); });
  if (n != static_cast<ssize_t>(sizeof count)) {
    if (n == -1 && errno != EAGAIN) {
      spdlog::error("read() of eventfd {} failed: {}", self.conn_.fd.get(), last_error().message());
    }
    ev.ready = false;
    return;
  }
  ev.ready = false;
  if (self.handler_ != nullptr) self.handler_(self, count);
}

}  // namespace ferry::event
