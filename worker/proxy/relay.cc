// The relay: non-blocking connect, two edge-triggered pipes, half-close, idle and connect timers.
#include "worker/proxy/relay.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <memory>
#include <optional>

#include <spdlog/spdlog.h>

#include "event/connection_io.h"

namespace ferry::worker {

using event::Connection;
using event::Event;
using event::EventLoop;
using event::IoStatus;

namespace {

// The address the relay connects to: the proxy's own "host:port", or the first server of its
// upstream that is not marked down (primary before backup).
std::optional<conf::Address> pick_server(const conf::Proxy& proxy, const conf::Config& cfg) {
  if (proxy.upstream_address) return proxy.upstream_address;
  for (const conf::Upstream& u : cfg.upstreams) {
    if (u.name != proxy.upstream) continue;
    for (bool backup : {false, true}) {
      for (const conf::Server& s : u.servers) {
        if (!s.down && s.backup == backup) return s.address;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

// One direction of a session: bytes read from `from` wait in `buf` until `to` takes them.
struct Pipe {
  Connection* from = nullptr;
  Connection* to = nullptr;
  std::unique_ptr<std::byte[]> buf;
  std::size_t start = 0;
  std::size_t end = 0;
  bool eof = false;   // `from` sent FIN
  bool shut = false;  // FIN passed on to `to`
};

struct Session {
  EventLoop* loop = nullptr;
  SessionSet* set = nullptr;
  const conf::Proxy* proxy = nullptr;
  Connection* client = nullptr;
  Connection* upstream = nullptr;
  Pipe up;    // client → upstream
  Pipe down;  // upstream → client
  std::size_t capacity = 0;
  bool connected = false;
  Session* prev = nullptr;
  Session* next = nullptr;

  void close() noexcept {
    if (client != nullptr) loop->close_connection(*client);
    if (upstream != nullptr) loop->close_connection(*upstream);
    client = upstream = nullptr;
    SessionSet* owner = set;
    owner->unlink(*this);
    delete this;
    if (owner->size() == 0 && owner->on_empty != nullptr) owner->on_empty(owner->on_empty_ctx);
  }

  // Moves what it can through one pipe; false when the session had to be closed.
  bool pump(Pipe& p) {
    for (;;) {
      if (p.end > p.start) {
        if (!p.to->write.ready) return true;
        const auto r = event::send(*p.to, {p.buf.get() + p.start, p.end - p.start});
        if (r.status == IoStatus::error) return fail(p.to, r.err);
        if (r.status == IoStatus::again) return true;
        p.start += r.bytes;
        if (p.start == p.end) p.start = p.end = 0;
        continue;
      }
      if (p.eof) {
        if (!p.shut) {
          ::shutdown(p.to->fd.get(), SHUT_WR);
          p.shut = true;
        }
        return true;
      }
      if (!p.from->read.ready) return true;
      const auto r = event::recv(*p.from, {p.buf.get() + p.end, capacity - p.end});
      if (r.status == IoStatus::error) return fail(p.from, r.err);
      if (r.status == IoStatus::eof) p.eof = true;
      if (r.status == IoStatus::again) return true;
      p.end += r.bytes;
    }
  }

  bool fail(Connection* c, int err) {
    spdlog::debug("proxy \"{}\": {} {} failed: {}", proxy->name,
                  c == client ? "client" : "upstream", c->peer.to_string(),
                  std::system_category().message(err));
    close();
    return false;
  }

  void run() {
    if (!pump(up) || !pump(down)) return;
    if (up.shut && down.shut) {
      close();
      return;
    }
    if (proxy->idle_timeout.count() > 0) loop->add_timer(client->read, proxy->idle_timeout);
  }
};

namespace {

void on_client_event(Event& ev) {
  auto& s = *static_cast<Session*>(static_cast<Connection*>(ev.data)->data);
  if (ev.timedout) {
    spdlog::debug("proxy \"{}\": session idle for {} ms, closing", s.proxy->name,
                  s.proxy->idle_timeout.count());
    s.close();
    return;
  }
  if (s.connected) s.run();
}

void on_upstream_event(Event& ev) {
  auto& s = *static_cast<Session*>(static_cast<Connection*>(ev.data)->data);
  if (!s.connected) {
    if (ev.timedout) {
      spdlog::warn("proxy \"{}\": connect to {} timed out", s.proxy->name,
                   s.upstream->peer.to_string());
      s.close();
      return;
    }
    if (!ev.write) return;  // a read report before the connect completed
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(s.upstream->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) == -1) err = errno;
    if (err != 0) {
      spdlog::warn("proxy \"{}\": connect to {} failed: {}", s.proxy->name,
                   s.upstream->peer.to_string(), std::system_category().message(err));
      s.close();
      return;
    }
    s.loop->del_timer(s.upstream->write);
    s.connected = true;
  }
  s.run();
}

}  // namespace

void SessionSet::link(Session& s) noexcept {
  s.next = head_;
  if (head_ != nullptr) head_->prev = &s;
  head_ = &s;
  ++count_;
}

void SessionSet::unlink(Session& s) noexcept {
  if (s.prev != nullptr) s.prev->next = s.next;
  if (s.next != nullptr) s.next->prev = s.prev;
  if (head_ == &s) head_ = s.next;
  --count_;
}

void SessionSet::close_all() noexcept {
  auto* saved = on_empty;
  on_empty = nullptr;  // the caller is tearing down already
  while (head_ != nullptr) head_->close();
  on_empty = saved;
}

void SessionSet::start(EventLoop& loop, Connection& client, const conf::Proxy& proxy,
                       const conf::Config& cfg) {
  const auto server = pick_server(proxy, cfg);
  if (!server) {
    spdlog::error("proxy \"{}\": no usable server", proxy.name);
    loop.close_connection(client);
    return;
  }
  event::UniqueFd fd(
      ::socket(server->storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    spdlog::error("socket() for upstream {} failed: {}", server->text,
                  event::last_error().message());
    loop.close_connection(client);
    return;
  }
  const int on = 1;
  if (proxy.tcp_nodelay) {
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    ::setsockopt(client.fd.get(), IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  }
  if (::connect(fd.get(), server->sockaddr_ptr(), server->length) == -1 && errno != EINPROGRESS) {
    spdlog::warn("proxy \"{}\": connect to {} failed: {}", proxy.name, server->text,
                 event::last_error().message());
    loop.close_connection(client);
    return;
  }
  Connection* upstream = loop.get_connection(std::move(fd));
  if (upstream == nullptr) {
    spdlog::warn("proxy \"{}\": worker_connections are not enough", proxy.name);
    loop.close_connection(client);
    return;
  }
  upstream->peer = event::SocketAddress(server->sockaddr_ptr(), server->length);

  auto* s = new Session;
  s->loop = &loop;
  s->set = this;
  s->proxy = &proxy;
  s->client = &client;
  s->upstream = upstream;
  s->capacity = proxy.buffer_size;
  s->up = {&client, upstream, std::make_unique<std::byte[]>(proxy.buffer_size)};
  s->down = {upstream, &client, std::make_unique<std::byte[]>(proxy.buffer_size)};
  link(*s);

  client.data = s;
  upstream->data = s;
  client.read.handler = client.write.handler = on_client_event;
  upstream->read.handler = upstream->write.handler = on_upstream_event;
  if (loop.add_connection(client) || loop.add_connection(*upstream)) {
    s->close();
    return;
  }
  loop.add_timer(upstream->write, proxy.connect_timeout);
}

}  // namespace ferry::worker
