// The relay: admission (access rules, per-client limit, PROXY header in), connect with
// failover, the PROXY header out, two edge-triggered pipes, half-close, reset propagation, idle
// and connect timers, the access-log line.
#include "worker/proxy/relay.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/async.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "event/connection_io.h"
#include "event/io_batch.h"
#include "event/listening.h"
#include "worker/proxy/client_limits.h"
#include "worker/proxy/proxy_protocol.h"

namespace ferry::worker {

using event::Connection;
using event::Event;
using event::EventLoop;
using event::IoStatus;

// One direction of a session: bytes read from `from` wait in `buf` (or, while splicing, in a
// kernel pipe) until `to` takes them. Each is held only while bytes are in it.
struct Pipe {
  Connection* from = nullptr;
  Connection* to = nullptr;
  std::unique_ptr<std::byte[]> buf;
  std::size_t start = 0;
  std::size_t end = 0;
  std::uint64_t total = 0;  // bytes passed on
  bool eof = false;         // `from` sent FIN
  bool shut = false;        // FIN passed on to `to`
  // splice(2) is allowed (the proxy's `splice`, until the kernel refuses it for this pair).
  bool splice_ok = false;
  // Bulk mode: a read filled the whole buffer, so the next reads go socket → pipe → socket
  // without copying; a splice that drains the socket before filling a buffer ends it. Small
  // messages stay on recv/send, which costs less per message than the pipe's two hops.
  bool splicing = false;
  KernelPipe pipe;
  std::size_t in_pipe = 0;
  // A recv into or a send from the buffer queued on the loop's IoBatch (never both: a pipe
  // reads only when its buffer is empty): the buffer is the kernel's until the flush reports
  // `result` (bytes or -errno) and sets `done`.
  enum class Op : std::uint8_t { none, recv, send };
  Session* owner = nullptr;
  event::IoBatch::Handle queued = nullptr;
  Op in_flight = Op::none;
  Op done = Op::none;
  int result = 0;
};

// What one step of a pipe did.
enum class Step { more, wait, closed };

namespace {
void on_client_event(Event& ev);

// `set_off`: also clear what the proxy does not want (a listening socket shared with earlier
// generations); a new socket starts with both off.
void set_socket_options(int fd, const conf::Proxy& proxy, bool set_off) {
  const int nodelay = proxy.tcp_nodelay ? 1 : 0;
  if ((nodelay != 0 || set_off) &&
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay) == -1) {
    spdlog::warn("setsockopt(TCP_NODELAY) failed: {}", event::last_error().message());
  }
  const int keepalive = proxy.so_keepalive ? 1 : 0;
  if ((keepalive != 0 || set_off) &&
      ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keepalive, sizeof keepalive) == -1) {
    spdlog::warn("setsockopt(SO_KEEPALIVE) failed: {}", event::last_error().message());
  }
}
void on_upstream_event(Event& ev);
}  // namespace

struct Session {
  EventLoop* loop = nullptr;
  SessionSet* set = nullptr;
  const conf::Proxy* proxy = nullptr;
  Balancer* balancer = nullptr;
  Peer* peer = nullptr;
  TriedSet tried;
  int tries = 0;
  Connection* client = nullptr;
  Connection* upstream = nullptr;
  Pipe up;    // client → upstream
  Pipe down;  // upstream → client
  bool connected = false;
  bool reading_header = false;  // accept_proxy_protocol: the client's PROXY header is not in yet
  bool counted = false;         // holds a place in the per-client counts (limit_bucket)
  std::uint32_t limit_bucket = 0;
  std::uint32_t header_out = 0;
  ProxyCounters* stats = nullptr;  // this worker's counters of the proxy (or none)
  ServerCounters* peer_stats =
      nullptr;  // of the server it is connected to, once connected  // bytes of the PROXY header
                // sent on (not the client's bytes)
  // The destination a received PROXY header carried, to send on in ours.
  std::unique_ptr<event::SocketAddress> header_destination;
  event::TimePoint started;
  event::TimePoint last_active;  // the last time run() moved bytes or looked for them
  std::chrono::system_clock::time_point wall_start;
  Session* prev = nullptr;
  Session* next = nullptr;

  void close(EndReason status) noexcept {
    // Connected: the session got through, the server is fine. Still connecting: the client or a
    // shutdown ended it, no verdict on the server (connect failures go through failed_peer()).
    if (peer != nullptr && connected) {
      release_peer(false, peer_stats);
    } else if (peer != nullptr) {
      balancer->abandon(*peer);
    }
    count_end(status);
    if (counted) set->limits_->release(limit_bucket, set->limits_share_);
    if (AccessLog* log = set->access_log(*proxy)) {
      const std::string client_text = client->peer.to_string();
      const std::string listen_text = client->listening->address.to_string();
      AccessRecord r;
      r.start = wall_start;
      r.client = client_text;
      r.listen = listen_text;
      r.upstream = peer != nullptr ? std::string_view(peer->name) : std::string_view("-");
      r.bytes_from_client = up.total - std::min<std::uint64_t>(up.total, header_out);
      r.bytes_to_client = down.total;
      r.duration = loop->now() - started;
      r.status = status;
      log->write(r);
    }
    // A send still queued would go out on a closed (or reused) fd from a freed buffer.
    for (Pipe* p : {&up, &down}) {
      if (p->in_flight != Pipe::Op::none) event::IoBatch::cancel(p->queued);
      p->in_flight = Pipe::Op::none;
    }
    if (client != nullptr) loop->close_connection(*client);
    if (upstream != nullptr) loop->close_connection(*upstream);
    client = upstream = nullptr;
    set->buffers_.give(std::move(up.buf), proxy->buffer_size);
    set->buffers_.give(std::move(down.buf), proxy->buffer_size);
    // A pipe with bytes still in it is not reused: its fds close with it.
    if (up.in_pipe == 0) set->pipes_.give(std::move(up.pipe));
    if (down.in_pipe == 0) set->pipes_.give(std::move(down.pipe));
    SessionSet* owner = set;
    owner->unlink(*this);
    delete this;
    if (owner->size() == 0 && owner->on_empty != nullptr) owner->on_empty(owner->on_empty_ctx);
  }

  // The shared statistics of an ending session: accepted = handled + active at all times.
  void count_end(EndReason status) noexcept {
    if (stats != nullptr) {
      stat_add(stats->handled);
      stat_sub(stats->active);
      if (status == EndReason::denied || status == EndReason::untrusted_proxy)
        stat_add(stats->denied);
      if (status == EndReason::limit) stat_add(stats->limited);
      if (status == EndReason::no_connections) stat_add(stats->no_connections);
    }
    if (peer_stats != nullptr) stat_sub(peer_stats->active);
  }

  // Bytes passed on by `p`, counted as they move (a long session is seen while it lasts, and a
  // killed worker's bytes are already in the shared counters). The PROXY header ferry sends is
  // the server's, not the client's.
  void count_bytes(const Pipe& p, std::uint64_t n) noexcept {
    if (&p == &up) {
      const std::uint64_t before = p.total - n;
      const std::uint64_t header_left = before < header_out ? header_out - before : 0;
      if (stats != nullptr) stat_add(stats->bytes_from_clients, n - std::min(n, header_left));
      if (peer_stats != nullptr) stat_add(peer_stats->bytes_sent, n);
    } else {
      if (stats != nullptr) stat_add(stats->bytes_to_clients, n);
      if (peer_stats != nullptr) stat_add(peer_stats->bytes_received, n);
    }
  }

  // A reset on one side is passed on as a reset (SO_LINGER 0) on the other.
  void reset(Connection* side, int err) {
    const bool from_client = side == client;
    spdlog::debug("proxy \"{}\": {} {}: {}", proxy->name, from_client ? "client" : "upstream",
                  side->peer.to_string(), std::system_category().message(err));
    Connection* other = from_client ? upstream : client;
    if (other != nullptr) {
      const linger abort{1, 0};
      if (::setsockopt(other->fd.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort) == -1) {
        spdlog::debug("setsockopt(SO_LINGER) failed: {}", event::last_error().message());
      }
    }
    close(from_client ? EndReason::client_reset : EndReason::upstream_reset);
  }

  // Everything `from` sent has reached `to`: send its FIN on, once. When the other direction
  // is done too the session closes now, and close() sends the FIN (nothing unread is left on
  // `to`: its EOF was read), so the shutdown() call is saved.
  void pass_fin(Pipe& p) {
    if (p.shut) return;
    p.shut = true;
    const Pipe& other = &p == &up ? down : up;
    if (other.shut) return;
    if (::shutdown(p.to->fd.get(), SHUT_WR) == -1) {
      spdlog::debug("shutdown(SHUT_WR) failed: {}", event::last_error().message());
    }
  }

  // Moves what it can through one direction; false when the session had to be closed.
  bool pump(Pipe& p) {
    for (;;) {
      if (p.in_flight != Pipe::Op::none) return true;
      // A finished batched call is taken whatever the flags say: its bytes are already moved.
      if (p.in_pipe > 0 || p.end > p.start) {
        if (!p.to->write.ready && p.done != Pipe::Op::send) return true;
        const Step step = p.in_pipe > 0 ? flush_pipe(p) : flush_buffer(p);
        if (step != Step::more) return step == Step::wait;
        continue;
      }
      if (p.eof) {
        pass_fin(p);
        return true;
      }
      if (!p.from->read.ready && p.done != Pipe::Op::recv) return true;
      const Step step = p.splicing && p.done == Pipe::Op::none ? fill_pipe(p) : fill_buffer(p);
      if (step != Step::more) return step == Step::wait;
    }
  }

  // An IoBatch for this pipe's next call, if the loop has one.
  event::IoBatch* batch() const noexcept { return loop->batch(); }

  Step fill_buffer(Pipe& p) {
    const std::size_t size = proxy->buffer_size;
    if (!p.buf) p.buf = set->buffers_.take(size);
    const std::span<std::byte> space{p.buf.get(), size};
    event::IoResult r;
    if (p.done == Pipe::Op::recv) {
      p.done = Pipe::Op::none;
      r = event::recv_done(*p.from, p.result, size);
      if (r.status == IoStatus::error && r.err == ECANCELED) r = event::recv(*p.from, space);
    } else if (event::IoBatch* b = batch();
               b != nullptr && (p.queued = b->queue_recv(p.from->fd.get(), space, &p))) {
      p.in_flight = Pipe::Op::recv;
      return Step::wait;
    } else {
      r = event::recv(*p.from, space);
    }
    if (r.status == IoStatus::error) {
      reset(p.from, r.err);
      return Step::closed;
    }
    p.start = 0;
    p.end = r.bytes;
    if (r.bytes == 0) set->buffers_.give(std::move(p.buf), size);
    if (r.status == IoStatus::eof || p.from->read.eof) p.eof = true;
    if (r.status == IoStatus::again) return Step::wait;
    if (p.splice_ok && r.bytes == size) p.splicing = true;
    return Step::more;
  }

  Step flush_buffer(Pipe& p) {
    const std::span<const std::byte> data{p.buf.get() + p.start, p.end - p.start};
    event::IoResult r;
    if (p.done == Pipe::Op::send) {
      p.done = Pipe::Op::none;
      r = event::send_done(*p.to, p.result, data.size());
      if (r.status == IoStatus::error && r.err == ECANCELED) r = event::send(*p.to, data);
    } else if (event::IoBatch* b = batch();
               b != nullptr && (p.queued = b->queue_send(p.to->fd.get(), data, &p))) {
      p.in_flight = Pipe::Op::send;
      return Step::wait;
    } else {
      r = event::send(*p.to, data);
    }
    if (r.status == IoStatus::error) {
      reset(p.to, r.err);
      return Step::closed;
    }
    if (r.status == IoStatus::again) return Step::wait;
    p.start += r.bytes;
    p.total += r.bytes;
    count_bytes(p, r.bytes);
    if (p.start == p.end) {
      p.start = p.end = 0;
      set->buffers_.give(std::move(p.buf), proxy->buffer_size);
    }
    return Step::more;
  }

  static constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

  // socket → pipe. Where splice cannot serve (EINVAL: not a pair the kernel splices), the
  // direction stays on buffers.
  Step fill_pipe(Pipe& p) {
    if (!p.pipe) {
      p.pipe = set->pipes_.take();
      if (!p.pipe) {
        p.splicing = false;
        return Step::more;
      }
    }
    const std::size_t size = proxy->buffer_size;
    const ssize_t n = event::retry_eintr([&] {
      return ::splice(p.from->fd.get(), nullptr, p.pipe.write.get(), nullptr, size, kSpliceFlags);
    });
    if (n > 0) {
      p.in_pipe = static_cast<std::size_t>(n);
      if (p.in_pipe < size) p.splicing = false;  // drained: the burst is over
      return Step::more;
    }
    const int err = errno;
    // The pipe is empty here, so EAGAIN means the socket is.
    set->pipes_.give(std::move(p.pipe));
    p.splicing = false;
    if (n == 0) {
      p.from->read.ready = false;
      p.from->read.eof = true;
      p.eof = true;
      return Step::more;
    }
    if (err == EAGAIN || err == EWOULDBLOCK) {
      p.from->read.ready = false;
      return Step::wait;
    }
    if (err == EINVAL) {
      p.splice_ok = false;
      return Step::more;
    }
    reset(p.from, err);
    return Step::closed;
  }

  // pipe → socket.
  Step flush_pipe(Pipe& p) {
    const std::size_t want = p.in_pipe;
    const ssize_t n = event::retry_eintr([&] {
      return ::splice(p.pipe.read.get(), nullptr, p.to->fd.get(), nullptr, want, kSpliceFlags);
    });
    if (n > 0) {
      p.in_pipe -= static_cast<std::size_t>(n);
      p.total += static_cast<std::uint64_t>(n);
      count_bytes(p, static_cast<std::uint64_t>(n));
      if (p.in_pipe == 0) {
        set->pipes_.give(std::move(p.pipe));
      } else {
        p.to->write.ready = false;  // a short write: the socket buffer is full
      }
      return Step::more;
    }
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      p.to->write.ready = false;
      return Step::wait;
    }
    reset(p.to, n == -1 ? errno : EPIPE);
    return Step::closed;
  }

  void run() {
    if (!pump(up) || !pump(down)) return;
    if (up.shut && down.shut) {
      close(EndReason::closed);
      return;
    }
    // The idle timer is armed once and not moved on every read: when it fires, it looks at the
    // last activity and re-arms for the rest (see on_client_event).
    last_active = loop->now();
    if (proxy->idle_timeout.count() > 0 && !client->read.timer_set) {
      loop->add_timer(client->read, proxy->idle_timeout);
    }
  }

  // The idle timer fired: close the session, or re-arm for the time it has not been idle.
  void idle_timer() {
    const event::Msec idle = loop->now() - last_active;
    if (idle < proxy->idle_timeout) {
      loop->add_timer(client->read, proxy->idle_timeout - idle);
      return;
    }
    spdlog::debug("proxy \"{}\": session idle for {} ms, closing", proxy->name, idle.count());
    close(EndReason::idle_timeout);
  }

  // The access rules, and with `count` the per-client limit, for the client's address (the
  // one a PROXY header carried, once read); false when the client was refused (closed).
  bool admit(bool count) {
    if (const AccessRules& rules = set->rules(*proxy); !rules.empty()) {
      const AccessRules::Decision d = rules.check(client->peer);
      if (!d.allowed) {
        spdlog::debug("proxy \"{}\": client {} denied by rule \"{}\"", proxy->name,
                      client->peer.to_string(), proxy->access[d.rule].text);
        close(EndReason::denied);
        return false;
      }
    }
    if (!count || proxy->max_conns_per_client == 0 || set->limits_ == nullptr) return true;
    const std::uint64_t key =
        ClientLimits::key_of(*set->limits_secret_, proxy->name, client->peer,
                             {proxy->client_ipv4_prefix, proxy->client_ipv6_prefix});
    switch (set->limits_->acquire(key, static_cast<std::uint32_t>(proxy->max_conns_per_client),
                                  set->limits_share_, &limit_bucket)) {
      case ClientLimits::Admit::ok: counted = true; return true;
      case ClientLimits::Admit::limit:
        spdlog::debug("proxy \"{}\": client {} has {} sessions already", proxy->name,
                      client->peer.to_string(), proxy->max_conns_per_client);
        close(EndReason::limit);
        return false;
      case ClientLimits::Admit::full:
        if (auto held = set->table_full_log_.admit(loop->now())) {
          spdlog::warn(
              "proxy \"{}\": the per-client table is full, client {} not counted ({} "
              "more since the last message)",
              proxy->name, client->peer.to_string(), *held);
        }
        return true;
    }
    return true;
  }

  // accept_proxy_protocol_from: a sender not listed may not speak for anyone; refused before
  // it sends a byte rather than at the header it has to send (false: closed).
  bool trusted_sender() {
    const AccessRules& senders = set->senders(*proxy);
    if (senders.empty() || senders.check(client->peer).rule >= 0) return true;
    if (auto held = set->untrusted_log_.admit(loop->now())) {
      spdlog::warn(
          "proxy \"{}\": {} is not in accept_proxy_protocol_from, refused ({} more since the "
          "last message)",
          proxy->name, client->peer.to_string(), *held);
    }
    close(EndReason::untrusted_proxy);
    return false;
  }

  // accept_proxy_protocol: looks at what the client sent so far without taking it (MSG_PEEK
  // into the stack, so a client that sends nothing holds no buffer), and takes exactly the
  // header once it parses: the bytes after it stay in the socket for the relay.
  void read_header() {
    // One byte more than the longest header: a peek that fills it proves bytes after the header
    // (a peek of exactly the header's length would not tell, and under edge-triggered epoll
    // bytes already queued bring no new report).
    std::byte seen[proxy_protocol::kV2MaxLength + 1];
    const ssize_t n =
        event::retry_eintr([&] { return ::recv(client->fd.get(), seen, sizeof seen, MSG_PEEK); });
    if (n == -1) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        client->read.ready = false;
        return;
      }
      reset(client, errno);
      return;
    }
    if (n == 0) {
      bad_header("the client closed before the header ended");
      return;
    }
    const proxy_protocol::ParseResult h =
        proxy_protocol::parse({seen, static_cast<std::size_t>(n)});
    if (h.status == proxy_protocol::Status::error) {
      bad_header(h.error);
      return;
    }
    if (h.status == proxy_protocol::Status::need_more) {
      // The rest would come with the next EPOLLIN edge; after the FIN it never will.
      if (client->read.pending_eof) {
        bad_header("the client closed before the header ended");
        return;
      }
      client->read.ready = false;
      return;
    }
    const ssize_t taken =
        event::retry_eintr([&] { return ::recv(client->fd.get(), seen, h.length, 0); });
    if (taken != static_cast<ssize_t>(h.length)) {  // peeked bytes are there: not expected
      spdlog::error("recv() of a {}-byte PROXY header returned {}: {}", h.length, taken,
                    taken == -1 ? event::last_error().message() : std::string("short"));
      close(EndReason::client_reset);
      return;
    }
    // Whatever followed the header (or the FIN) is for the relay to read. Bytes that arrive
    // after the peek bring a report of their own.
    client->read.ready = static_cast<std::size_t>(n) > h.length || client->read.pending_eof;
    header_done(h);
  }

  void bad_header(std::string_view why) {
    if (auto held = set->bad_header_log_.admit(loop->now())) {
      spdlog::warn(
          "proxy \"{}\": bad PROXY protocol header from {}: {} ({} more since the "
          "last message)",
          proxy->name, client->peer.to_string(), why, *held);
    }
    close(EndReason::bad_proxy_protocol);
  }

  void header_done(const proxy_protocol::ParseResult& h) {
    loop->del_timer(client->read);
    reading_header = false;
    if (!h.header.local) {
      client->peer = h.header.source;
      if (proxy->send_proxy_protocol != conf::ProxyProtocol::off) {
        header_destination = std::make_unique<event::SocketAddress>(h.header.destination);
      }
    }
    if (!admit(true)) return;
    connect_next();
  }

  // send_proxy_protocol: the header goes in front of anything already in the up buffer (there
  // is none: the relay reads the client only once connected), so it is what the server reads
  // first.
  void prepend_header() {
    event::SocketAddress destination;
    if (header_destination) {
      destination = *header_destination;
    } else if (::getsockname(client->fd.get(), destination.get(), destination.length_ptr()) == -1) {
      spdlog::warn("getsockname() failed: {}", event::last_error().message());
      destination = event::SocketAddress();  // sent as UNKNOWN / UNSPEC
    }
    std::byte header[proxy_protocol::kMaxEncoded];
    const std::size_t n =
        proxy_protocol::encode(proxy->send_proxy_protocol, client->peer, destination, header);
    if (!up.buf) up.buf = set->buffers_.take(proxy->buffer_size);
    const std::size_t held = up.end - up.start;
    std::memmove(up.buf.get() + n, up.buf.get() + up.start, held);
    std::memcpy(up.buf.get(), header, n);
    up.start = 0;
    up.end = n + held;
    header_out = static_cast<std::uint32_t>(n);
  }

  // Connects to the next server the balancer offers; false when none is left (closed).
  bool connect_next() {
    const event::TimePoint now = loop->now();
    for (;;) {
      const bool out_of_tries =
          proxy->next_upstream_tries > 0 && tries >= proxy->next_upstream_tries;
      const bool out_of_time = proxy->next_upstream_timeout.count() > 0 && tries > 0 &&
                               now - started >= proxy->next_upstream_timeout;
      Peer* next = out_of_tries || out_of_time ? nullptr : balancer->pick(client->peer, tried, now);
      if (next == nullptr) {
        spdlog::warn("proxy \"{}\": no server could take client {} ({} tried)", proxy->name,
                     client->peer.to_string(), tries);
        close(EndReason::connect_failed);
        return false;
      }
      ++tries;
      peer = next;
      event::UniqueFd fd(
          ::socket(peer->address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      if (!fd) {
        const int err = errno;
        spdlog::error("socket() for {} failed: {}", peer->name, event::errno_code(err).message());
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
          // Short of descriptors or memory here, which is no fault of the server: marked failed
          // it would be refused to every client for fail_timeout after the shortage is over.
          // Another server would fare no better.
          balancer->abandon(*peer);
          peer = nullptr;
          close(EndReason::connect_failed);
          return false;
        }
        failed_peer();
        continue;
      }
      set_socket_options(fd.get(), *proxy, false);
      if (::connect(fd.get(), peer->address.get(), peer->address.length()) == -1 &&
          errno != EINPROGRESS) {
        spdlog::warn("proxy \"{}\": connect to {} failed: {}", proxy->name, peer->name,
                     event::last_error().message());
        failed_peer();
        continue;
      }
      upstream = loop->get_connection(std::move(fd));
      if (upstream == nullptr) {
        spdlog::warn("proxy \"{}\": worker_connections are not enough", proxy->name);
        balancer->abandon(*peer);  // no fault of the server
        peer = nullptr;
        close(EndReason::no_connections);
        return false;
      }
      upstream->peer = peer->address;
      upstream->data = this;
      upstream->read.handler = upstream->write.handler = on_upstream_event;
      if (loop->add_connection(*upstream)) {
        close(EndReason::connect_failed);
        return false;
      }
      loop->add_timer(upstream->write, proxy->connect_timeout);
      return true;
    }
  }

  void failed_peer() {
    ServerCounters* c = set->server_stats(*proxy, *peer);
    if (c != nullptr) stat_add(c->connect_failures);
    release_peer(true, c);
    peer = nullptr;
  }

  // Gives `peer` back to the balancer with the verdict on it, and publishes whether its passive
  // checks now hold the server failed on `c`, its counters (none: not published). Takes them
  // looked up already: a lookup may allocate, and this runs from close().
  void release_peer(bool failed, ServerCounters* c) noexcept {
    const event::TimePoint now = loop->now();
    balancer->release(*peer, failed, now);
    if (c == nullptr) return;
    std::uint64_t word = 0;
    const conf::Server* server = peer->server;
    if (server != nullptr && server->max_fails > 0 && peer->fails >= server->max_fails) {
      using std::chrono::duration_cast;
      const auto wall =
          duration_cast<event::Msec>(std::chrono::system_clock::now().time_since_epoch());
      const auto until = wall + (Balancer::failed_until(*peer) - now);
      word = passive_failure_word(duration_cast<std::chrono::seconds>(wall).count(),
                                  (until.count() + 999) / 1000);
    }
    if (c->failed.load(std::memory_order_relaxed) != word) {
      c->failed.store(word, std::memory_order_relaxed);
    }
  }

  // The connect to `peer` failed (refused, timed out): drop that socket, try the next server.
  void connect_failed(const char* why) {
    spdlog::warn("proxy \"{}\": connect to {} {}; trying the next server", proxy->name, peer->name,
                 why);
    loop->close_connection(*upstream);
    upstream = nullptr;
    failed_peer();
    connect_next();
  }

  void connected_now() {
    loop->del_timer(upstream->write);
    connected = true;
    up.to = upstream;
    down.from = upstream;
    if ((peer_stats = set->server_stats(*proxy, *peer)) != nullptr) {
      stat_add(peer_stats->sessions);
      stat_add(peer_stats->active);
    }
    if (proxy->send_proxy_protocol != conf::ProxyProtocol::off) prepend_header();
  }
};

namespace {

void on_client_event(Event& ev) {
  auto& s = *static_cast<Session*>(static_cast<Connection*>(ev.data)->data);
  if (ev.timedout) {
    ev.timedout = false;
    if (s.reading_header) {
      s.bad_header("timed out");
      return;
    }
    s.idle_timer();
    return;
  }
  if (s.reading_header) {
    if (!ev.write) s.read_header();
    return;
  }
  if (s.connected) s.run();
}

void on_upstream_event(Event& ev) {
  auto& s = *static_cast<Session*>(static_cast<Connection*>(ev.data)->data);
  if (!s.connected) {
    if (ev.timedout) {
      s.connect_failed("timed out");
      return;
    }
    if (!ev.write) return;  // a read report before the connect completed
    // Writable without EPOLLERR: connected. With it, SO_ERROR says why not.
    int err = 0;
    socklen_t len = sizeof err;
    if (ev.error && ::getsockopt(s.upstream->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
      err = errno;
    }
    if (ev.error && err == 0) err = ECONNREFUSED;  // reported, then taken by a read: still failed
    if (err != 0) {
      const std::string why = "failed: " + std::system_category().message(err);
      s.connect_failed(why.c_str());
      return;
    }
    s.connected_now();
  }
  s.run();
}

}  // namespace

void SessionSet::link(Session& s) noexcept {
  s.next = head_;
  if (head_ != nullptr) head_->prev = &s;
  head_ = &s;
  ++count_;
  if (counters_ != nullptr) {
    counters_->accepted.fetch_add(1, std::memory_order_relaxed);
    counters_->active.fetch_add(1, std::memory_order_relaxed);
  }
  publish_connections(*s.loop);
}

void SessionSet::unlink(Session& s) noexcept {
  if (s.prev != nullptr) s.prev->next = s.next;
  if (s.next != nullptr) s.next->prev = s.prev;
  if (head_ == &s) head_ = s.next;
  --count_;
  if (counters_ != nullptr) counters_->active.fetch_sub(1, std::memory_order_relaxed);
  publish_connections(*s.loop);
}

void SessionSet::publish_connections(EventLoop& loop) noexcept {
  if (stats_ != nullptr) {
    stats_->set_connections(stats_slot_, loop.pool().size() - loop.pool().free_count());
  }
}

void SessionSet::count_refused(const conf::Proxy& proxy) {
  if (ProxyCounters* c = proxy_stats(proxy)) {
    stat_add(c->accepted);
    stat_add(c->handled);
    stat_add(c->no_connections);
  }
}

ProxyCounters* SessionSet::proxy_stats(const conf::Proxy& proxy) {
  if (stats_ == nullptr) return nullptr;
  auto it = proxy_stats_.find(&proxy);
  if (it == proxy_stats_.end()) {
    it = proxy_stats_.emplace(&proxy, stats_->proxy_counters(stats_slot_, proxy.name)).first;
  }
  return it->second;
}

ServerCounters* SessionSet::server_stats(const conf::Proxy& proxy, const Peer& peer) {
  if (stats_ == nullptr) return nullptr;
  auto it = server_stats_.find(&peer);
  if (it == server_stats_.end()) {
    ServerCounters* c =
        stats_->server_counters(stats_slot_, StatsTable::upstream_name_of(proxy), peer.name);
    it = server_stats_.emplace(&peer, c).first;
  }
  return it->second;
}

void SessionSet::close_all() noexcept {
  auto* saved = on_empty;
  on_empty = nullptr;  // the caller is tearing down already
  while (head_ != nullptr) head_->close(EndReason::shutdown);
  on_empty = saved;
}

void SessionSet::reopen_logs() {
  for (auto& [path, log] : logs_) log->open();
}

Balancer& SessionSet::balancer(const conf::Proxy& proxy, const conf::Config& cfg) {
  // Keyed by upstream, as nginx keeps its peers' state per upstream block: proxies sharing an
  // upstream share its rotation, connection counts and passive failures.
  const std::string_view name = StatsTable::upstream_name_of(proxy);
  auto it = balancers_.find(name);
  if (it != balancers_.end()) return it->second;
  for (std::size_t i = 0; i < cfg.upstreams.size(); ++i) {
    const conf::Upstream& u = cfg.upstreams[i];
    if (u.name != proxy.upstream) continue;
    ServerHealth* slots = health_ != nullptr && u.health_check && !u.servers.empty()
                              ? &health_->at(cfg, i, 0)
                              : nullptr;
    // max_conns counts every worker's sessions, on the generation's board.
    std::vector<SharedConns> shared;
    if (health_ != nullptr) {
      for (std::size_t s = 0; s < u.servers.size(); ++s) {
        shared.push_back(health_->conns(cfg, i, s, stats_slot_));
      }
    }
    Balancer& b = balancers_
                      .emplace(std::string(name),
                               Balancer(u, slots, shared.empty() ? nullptr : shared.data()))
                      .first->second;
    for (const auto& [server, addresses] : resolved_) b.set_addresses(*server, addresses);
    return b;
  }
  return balancers_.emplace(std::string(name), Balancer()).first->second;  // validated: not reached
}

void SessionSet::update_addresses(const conf::Server& server,
                                  const std::vector<conf::Address>& addresses) {
  resolved_[&server] = addresses;
  for (auto& [upstream, balancer] : balancers_) balancer.set_addresses(server, addresses);
}

AccessLog* SessionSet::access_log(const conf::Proxy& proxy) {
  if (proxy.access_log == "off") return nullptr;
  auto& slot = logs_[proxy.access_log];
  if (!slot) {
    if (!log_writer_) log_writer_ = AccessLog::make_writer();
    if (!log_writer_) return nullptr;  // logged; tried again for the next session
    slot = std::make_unique<AccessLog>(proxy.access_log, log_writer_);
  }
  return slot.get();
}

void SessionSet::prepare(const conf::Config& cfg) {
  for (const conf::Proxy& proxy : cfg.proxies) {
    access_log(proxy);
    rules(proxy);
    senders(proxy);
    proxy_stats(proxy);
  }
}

const AccessRules& SessionSet::rules(const conf::Proxy& proxy) {
  auto it = rules_.find(&proxy);
  if (it == rules_.end()) it = rules_.emplace(&proxy, AccessRules(proxy.access)).first;
  return it->second;
}

const AccessRules& SessionSet::senders(const conf::Proxy& proxy) {
  auto it = senders_.find(&proxy);
  if (it == senders_.end()) {
    it = senders_
             .emplace(&proxy,
                      AccessRules(proxy.accept_proxy_protocol_from, AccessRules::Mapped::always_v4))
             .first;
  }
  return it->second;
}

void SessionSet::on_batch_done(void* cookie, int result) {
  auto& p = *static_cast<Pipe*>(cookie);
  p.done = p.in_flight;
  p.in_flight = Pipe::Op::none;
  p.result = result;
  // Either handler runs the session on.
  p.owner->loop->post(p.done == Pipe::Op::recv ? p.from->read : p.to->write);
}

void SessionSet::prepare_listening(const event::Listening& ls, const conf::Proxy& proxy) {
  set_socket_options(ls.fd.get(), proxy, true);
}

void SessionSet::start(EventLoop& loop, Connection& client, const conf::Proxy& proxy,
                       const conf::Config& cfg) {
  auto* s = new Session;
  s->loop = &loop;
  s->set = this;
  s->proxy = &proxy;
  s->balancer = &balancer(proxy, cfg);
  s->client = &client;
  s->started = loop.now();
  s->wall_start = std::chrono::system_clock::now();
  s->up.from = &client;
  s->down.to = &client;
  s->up.splice_ok = s->down.splice_ok = proxy.splice;
  s->up.owner = s->down.owner = s;
  if ((s->stats = proxy_stats(proxy)) != nullptr) {
    stat_add(s->stats->accepted);
    stat_add(s->stats->active);
  }
  link(*s);

  client.data = s;
  client.read.handler = client.write.handler = on_client_event;
  // The server side needs a connection too: without one, refuse now rather than after the
  // client has sent its first bytes.
  if (loop.pool().free_count() == 0) {
    if (auto held = pool_full_log_.admit(loop.now())) {
      spdlog::warn(
          "{} worker_connections are not enough, client {} on proxy \"{}\" refused ({} "
          "more since the last message)",
          loop.pool().size(), client.peer.to_string(), proxy.name, *held);
    }
    s->close(EndReason::no_connections);
    return;
  }
  // Without a PROXY header the address is final: rules and limit now. With one, the rules
  // are checked against the sender too, and everything again against the address it carries.
  if (!s->admit(!proxy.accept_proxy_protocol)) return;
  if (proxy.accept_proxy_protocol && !s->trusted_sender()) return;
  if (loop.add_connection(client)) {
    s->close(EndReason::connect_failed);
    return;
  }
  if (proxy.accept_proxy_protocol) {
    s->reading_header = true;
    loop.add_timer(client.read, proxy.connect_timeout);
    s->read_header();
    return;
  }
  s->connect_next();
}

}  // namespace ferry::worker
