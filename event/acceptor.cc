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
    auto e = std::make_unique<Entry>();
    e->owner = this;
    e->conn.fd = std::move(dup);
    e->conn.listening = ls;
    e->conn.data = e.get();
    e->conn.read.accept = true;
    e->conn.read.handler = &Acceptor::on_accept;
    listening_.push_back(std::move(e));
  }
  loop.set_acceptor(this);

  for (auto& e : listening_) {
    if (uses_mutex() && !e->conn.listening->reuseport) continue;
    if (auto ec = register_accept(*e)) return ec;
  }
  return {};
}

std::error_code Acceptor::register_accept(Entry& e) {
  return loop_->add_event(e.conn.read, EventKind::read,
                          EventLoop::kLevel | (exclusive(e) ? EPOLLEXCLUSIVE : 0U));
}

void Acceptor::reorder(Entry& e) {
  // Linux wakes the first waiter registered with EPOLLEXCLUSIVE; moving this worker to the end
  // of the queue every 4 connections (or when it is short of connections) spreads the load.
  // nginx uses 16; with 16, 2,000 sequential connections split up to 64/36 here, with 4 within
  // 51/49, for half a pair of epoll_ctl calls per accept.
  if (!exclusive(e) || !e.conn.read.active) return;
  if (e.accepted++ % 4 != 0 && accept_disabled <= 0) return;
  if (loop_->del_event(e.conn.read, EventKind::read, false)) return;
  if (register_accept(e)) {
    // Not registered any more: try again after the delay, as after EMFILE.
    loop_->add_timer(e.conn.read, options_.delay);
  }
}

void Acceptor::close() noexcept {
  if (loop_ == nullptr || closed_) return;
  closed_ = true;
  disable_accept_events(true);
  for (auto& e : listening_) {
    loop_->del_timer(e->conn.read);
    e->conn.fd.reset();
  }
  if (held_) options_.mutex->unlock();
  held_ = false;
  if (loop_->acceptor() == this) loop_->set_acceptor(nullptr);
}

std::error_code Acceptor::enable_accept_events() {
  for (auto& e : listening_) {
    if (e->conn.read.active) continue;
    if (auto ec = register_accept(*e)) return ec;
  }
  return {};
}

void Acceptor::disable_accept_events(bool all) noexcept {
  for (auto& e : listening_) {
    Connection& c = e->conn;
    if (!c.read.active) continue;
    // A reuseport socket is this worker's alone: the mutex does not govern it.
    if (!all && c.listening->reuseport) continue;
    // A real EPOLL_CTL_DEL: the master and the other workers still hold the socket, so
    // closing our duplicate later would not take it out of this epoll.
    (void)loop_->del_event(c.read, EventKind::read, false);
    EventLoop::delete_posted(c.read);
  }
}

void Acceptor::try_lock_accept_mutex() {
  if (options_.mutex->try_lock()) {
    if (held_) return;
    if (enable_accept_events()) {
      disable_accept_events(false);  // the ones that did get registered
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
  auto& entry = *static_cast<Entry*>(static_cast<Connection*>(ev.data)->data);
  entry.owner->accept_from(ev, entry);
}

void Acceptor::accept_from(Event& ev, Entry& entry) {
  Connection& lc = entry.conn;
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
      if (auto held = pool_full_log_.admit(loop_->now())) {
        spdlog::warn(
            "{} worker_connections are not enough, connection on {} refused ({} more "
            "since the last message)",
            pool.size(), lc.listening->address.to_string(), *held);
      }
      if (options_.refused != nullptr) options_.refused(*lc.listening, ctx_);
      // Closed at once (the client sees the FIN now, not a connect timeout); the socket is
      // level-triggered, so the rest of the queue is refused on the next iterations.
      return;
    }
    c->peer = peer;
    c->listening = lc.listening;
    ++stats_.accepted;
    reorder(entry);
    handler_(*c, ctx_);
    if (closed_) return;  // the handler shut accepting down
  } while (options_.multi_accept);
}

}  // namespace ferry::event
