// Acceptor: ngx_event_accept, ngx_trylock_accept_mutex and ngx_enable/disable_accept_events.
#include "event/acceptor.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include "event/event_loop.h"

namespace ferry::event {

Acceptor::~Acceptor() { close(); }

std::error_code Acceptor::init(EventLoop& loop, std::span<const Listening* const> listening,
                               const AcceptOptions& options, AcceptHandler handler, void* ctx) {
  loop_ = &loop;
  options_ = options;
  handler_ = handler;
  ctx_ = ctx;
  for (const Listening* ls : listening) {
    // A duplicate of its own: the loop's connection closes it without touching the master's.
    UniqueFd dup(::fcntl(ls->fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!dup) {
      const auto ec = last_error();
      spdlog::critical("fcntl(F_DUPFD_CLOEXEC) of listening {} failed: {}", ls->address.to_string(),
                       ec.message());
      return ec;
    }
    auto c = std::make_unique<Connection>();
    c->fd = std::move(dup);
    c->listening = ls;
    c->data = this;
    c->read.accept = true;
    c->read.handler = &Acceptor::on_accept;
    listening_.push_back(std::move(c));
  }
  loop.set_acceptor(this);

  for (auto& c : listening_) {
    if (uses_mutex() && !c->listening->reuseport) continue;
    if (auto ec = loop.add_event(c->read, EventKind::read, EventLoop::kLevel)) return ec;
  }
  return {};
}

void Acceptor::close() noexcept {
  if (loop_ == nullptr) return;
  disable_accept_events(true);
  for (auto& c : listening_) loop_->del_timer(c->read);
  if (held_) options_.mutex->unlock();
  held_ = false;
  listening_.clear();
  if (loop_->acceptor() == this) loop_->set_acceptor(nullptr);
  loop_ = nullptr;
}

std::error_code Acceptor::enable_accept_events() {
  for (auto& c : listening_) {
    if (c->read.active) continue;
    if (auto ec = loop_->add_event(c->read, EventKind::read, EventLoop::kLevel)) return ec;
  }
  return {};
}

void Acceptor::disable_accept_events(bool all) noexcept {
  for (auto& c : listening_) {
    if (!c->read.active) continue;
    // A reuseport socket is this worker's alone: the mutex does not govern it.
    if (!all && c->listening->reuseport) continue;
    // A real EPOLL_CTL_DEL: the master and the other workers still hold the socket, so
    // closing our duplicate later would not take it out of this epoll.
    (void)loop_->del_event(c->read, EventKind::read, false);
    EventLoop::delete_posted(c->read);
  }
}

void Acceptor::try_lock_accept_mutex() {
  if (options_.mutex->try_lock()) {
    if (held_) return;
    if (enable_accept_events()) {
      options_.mutex->unlock();
      return;
    }
    held_ = true;
    return;
  }
  if (held_) disable_accept_events(false);
  held_ = false;
}

void Acceptor::unlock_accept_mutex() noexcept { options_.mutex->unlock(); }

void Acceptor::release_accept_events() noexcept {
  if (!held_) return;
  disable_accept_events(false);
  held_ = false;
}

void Acceptor::on_accept(Event& ev) {
  auto& lc = *static_cast<Connection*>(ev.data);
  static_cast<Acceptor*>(lc.data)->accept_from(ev, lc);
}

void Acceptor::accept_from(Event& ev, Connection& lc) {
  if (ev.timedout) {
    // The pause after EMFILE/ENFILE is over.
    ev.timedout = false;
    if (enable_accept_events()) return;
  }

  do {
    SocketAddress peer;
    UniqueFd fd(retry_eintr([&] {
      return ::accept4(lc.fd.get(), peer.get(), peer.length_ptr(), SOCK_NONBLOCK | SOCK_CLOEXEC);
    }));
    if (!fd) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        ev.ready = false;
        return;
      }
      if (err == ECONNABORTED) continue;  // the client gave up while queued: try the next
      spdlog::error("accept4() on {} failed: {}", lc.listening->address.to_string(),
                    errno_code(err).message());
      if (err == EMFILE || err == ENFILE) {
        // Out of descriptors: stop polling instead of spinning on a socket that stays
        // readable, and look again after the delay.
        ++stats_.fd_exhausted;
        disable_accept_events(true);
        if (uses_mutex()) {
          if (held_) options_.mutex->unlock();
          held_ = false;
          accept_disabled = 1;
        } else {
          loop_->add_timer(ev, options_.delay);
        }
      }
      return;
    }

    ConnectionPool& pool = loop_->pool();
    accept_disabled = static_cast<long>(pool.size() / 8) - static_cast<long>(pool.free_count());

    Connection* c = loop_->get_connection(std::move(fd));
    if (c == nullptr) {
      ++stats_.no_connection;
      spdlog::warn("{} worker_connections are not enough, connection on {} refused", pool.size(),
                   lc.listening->address.to_string());
      return;
    }
    c->peer = peer;
    c->listening = lc.listening;
    ++stats_.accepted;
    handler_(*c, ctx_);
  } while (options_.multi_accept);
}

}  // namespace ferry::event
