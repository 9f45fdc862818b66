// Session's lifecycle: start (admission, then the PROXY header or the connect), the relay of
// both directions with half-close and reset propagation, the idle timer, and the end: counters,
// the access-log line, both connections closed.
#include "worker/proxy/session.h"

#include <sys/socket.h>

#include <algorithm>
#include <string>
#include <system_error>

#include <spdlog/spdlog.h>

#include "event/listening.h"
#include "event/syscall_util.h"
#include "worker/tls/tls_io.h"

namespace ferry::worker {

using event::Connection;
using event::Event;

Session::Session(event::EventLoop& loop, SessionShared& shared, const conf::Proxy& proxy,
                 Balancer* balancer, Connection& client)
    : loop_(loop),
      shared_(shared),
      proxy_(proxy),
      balancer_(balancer),
      client_(&client),
      up_(shared.relay(loop), proxy.buffer_size, proxy.splice),
      down_(shared.relay(loop), proxy.buffer_size, proxy.splice),
      serial_(shared.next_serial()),
      half_close_(proxy.half_close),
      started_(loop.now()),
      wall_start_(std::chrono::system_clock::now()) {
  up_.set_from(&client);
  down_.set_to(&client);
}

void Session::start() {
  if ((stats_ = shared_.proxy_stats(proxy_)) != nullptr) {
    stat_add(stats_->accepted);
    stat_add(stats_->active);
  }
  shared_.link(*this, loop_);
  Connection& client = *client_;
  client.data = this;
  client.read.handler = client.write.handler = on_client_event;
  // The server side needs a connection too: without one, refuse now rather than after the
  // client has sent its first bytes.
  if (loop_.pool().free_count() == 0) {
    if (auto held = shared_.throttles().pool_full.admit(loop_.now())) {
      spdlog::warn(
          "{} worker_connections are not enough, client {} on proxy \"{}\" refused ({} "
          "more since the last message)",
          loop_.pool().size(), client.peer.to_string(), proxy_.name, *held);
    }
    close(EndReason::no_connections);
    return;
  }
  // Without a PROXY header the address is final: rules and limit now. With one, the rules
  // are checked against the sender too, and everything again against the address it carries.
  if (!admit(!proxy_.accept_proxy_protocol)) return;
  if (proxy_.accept_proxy_protocol && !trusted_sender()) return;
  if (loop_.add_connection(client)) {
    close(EndReason::connect_failed);
    return;
  }
  if (proxy_.accept_proxy_protocol) {
    phase_ = Phase::reading_header;
    loop_.add_timer(client.read, proxy_.connect_timeout);
    read_header();
    return;
  }
  admitted();
}

void Session::admitted() {
  if (proxy_.tls) {
    start_client_tls();
    return;
  }
  if (!proxy_.routes.empty()) {
    phase_ = Phase::prereading;
    loop_.add_timer(client_->read, proxy_.preread_timeout);
    preread();
    return;
  }
  connect_next();
}

Session::Aside& Session::aside() {
  if (!aside_) aside_ = std::make_unique<Aside>();
  return *aside_;
}

std::string_view Session::upstream_name() const noexcept {
  if (aside_ && aside_->routed) return aside_->upstream;
  return StatsTable::upstream_name_of(proxy_);
}

void Session::close(EndReason status) noexcept {
  // Relaying: the session got through, the server is fine. Still connecting: the client or a
  // shutdown ended it, no verdict on the server (connect failures go through failed_peer()).
  // A Fast Open connect the server has not answered has no verdict either.
  if (peer_ != nullptr && phase_ == Phase::relaying && fastopen_ == FastOpen::none) {
    release_peer(false, peer_stats_);
  } else if (peer_ != nullptr) {
    balancer_->abandon(*peer_);
  }
  count_end(status);
  if (counted_) shared_.release_client(limit_bucket_);
  if (AccessLog* log = shared_.access_log(proxy_)) {
    const std::string client_text = client_->peer.to_string();
    const std::string listen_text = client_->listening->address.to_string();
    AccessRecord r;
    r.start = wall_start_;
    r.client = client_text;
    r.listen = listen_text;
    r.upstream = peer_ != nullptr                    ? std::string_view(peer_->name)
                 : aside_ && !aside_->server.empty() ? std::string_view(aside_->server)
                                                     : std::string_view("-");
    r.moves = moves_;
    if (aside_ && aside_->routed) {
      r.routed = true;
      r.sni = aside_->sni;
      r.route = aside_->route;
    }
    if (aside_) {
      r.tls_version = aside_->tls_version;
      r.client_subject = aside_->client_subject;
    }
    r.bytes_from_client = bytes_from_client();
    r.bytes_to_client = down_.total();
    r.duration = loop_.now() - started_;
    r.status = status;
    log->write(r);
  }
  // A terminated client is told the end is not a truncation (a close_notify; the relay's pass
  // of the server's end sent one already) only when it is none: ferry ended the session on
  // purpose with nothing for the client held back (as nginx: not after a reset, a timeout, or
  // with bytes buffered). Decided before the release drops what is held.
  const bool clean_end = (status == EndReason::connect_failed || status == EndReason::closed ||
                          status == EndReason::shutdown || status == EndReason::killed) &&
                         down_.drained();
  // Before the connections close: a batched call still queued would run on their fds.
  up_.release();
  down_.release();
  if (clean_end) tls::notify_close(*client_);
  tls::release(*client_);
  loop_.close_connection(*client_);
  if (upstream_ != nullptr) {
    tls::release(*upstream_);
    loop_.close_connection(*upstream_);
  }
  SessionShared& shared = shared_;
  event::EventLoop& loop = loop_;
  shared.unlink(*this, loop);
  delete this;
}

// The shared statistics of an ending session: accepted = handled + active at all times.
void Session::count_end(EndReason status) noexcept {
  if (stats_ != nullptr) {
    stat_add(stats_->handled);
    stat_sub(stats_->active);
    if (status == EndReason::denied || status == EndReason::untrusted_proxy) {
      stat_add(stats_->denied);
    }
    if (status == EndReason::limit) stat_add(stats_->limited);
    if (status == EndReason::no_connections) stat_add(stats_->no_connections);
  }
  if (peer_stats_ != nullptr) stat_sub(peer_stats_->active);
  if (aside_ && aside_->route_stats != nullptr) stat_sub(aside_->route_stats->active);
}

// Bytes passed on by `d`, counted as they move (a long session is seen while it lasts, and a
// killed worker's bytes are already in the shared counters). The PROXY header ferry sends is
// the server's, not the client's.
void Session::count_bytes(const RelayDirection& d, std::uint64_t n) noexcept {
  if (&d == &up_) {
    const std::uint64_t before = d.total() - n;
    const std::uint64_t header_left = before < header_out_ ? header_out_ - before : 0;
    if (stats_ != nullptr) stat_add(stats_->bytes_from_clients, n - std::min(n, header_left));
    if (peer_stats_ != nullptr) stat_add(peer_stats_->bytes_sent, n);
  } else {
    if (stats_ != nullptr) stat_add(stats_->bytes_to_clients, n);
    if (peer_stats_ != nullptr) stat_add(peer_stats_->bytes_received, n);
  }
}

// A reset on one side is passed on as a reset (SO_LINGER 0) on the other.
void Session::reset(Connection* side, int err) {
  const bool from_client = side == client_;
  spdlog::debug("proxy \"{}\": {} {}: {}", proxy_.name, from_client ? "client" : "upstream",
                side->peer.to_string(), std::system_category().message(err));
  Connection* other = from_client ? upstream_ : client_;
  if (other != nullptr) {
    const linger abort{1, 0};
    if (::setsockopt(other->fd.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort) == -1) {
      spdlog::debug("setsockopt(SO_LINGER) failed: {}", event::last_error().message());
    }
  }
  // An unanswered Fast Open connect failing: its SYN left with the client's first bytes, which
  // are spent, so no next server is tried; the server is counted failed.
  const bool refused =
      !from_client && fastopen_ != FastOpen::none && peer_ != nullptr &&
      (err == ECONNREFUSED || err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH);
  if (refused) {
    spdlog::warn("proxy \"{}\": connect to {} failed: {}", proxy_.name, peer_->name,
                 std::system_category().message(err));
    failed_peer();
  }
  close(from_client ? EndReason::client_reset
        : refused   ? EndReason::connect_failed
                    : EndReason::upstream_reset);
}

// Moves what `d` can; false when the session had to be closed.
bool Session::pump(RelayDirection& d, const RelayDirection& other) {
  const std::uint64_t before = d.total();
  // The FIN follows the direction's end at once: passed on (half_close), or sent by the close
  // once the other direction is done too. Without half_close and with the other direction
  // going on, the close may find input unread and reset: the bytes go out before it.
  const RelayDirection::Pumped r =
      d.pump(half_close_ || other.state() == RelayDirection::State::finished);
  if (d.total() != before) count_bytes(d, d.total() - before);
  switch (r) {
    case RelayDirection::Pumped::waiting: return true;
    case RelayDirection::Pumped::finished:
      // When the other direction is done too, run() closes the session now and the close
      // sends this FIN (nothing unread is left on `to`: its EOF was read): no shutdown() call.
      // A TLS side's close_notify and FIN are out already (pump()). Without half_close, run()
      // closes the session now: the close sends the FIN.
      if (half_close_ && other.state() != RelayDirection::State::finished && !d.to_tls()) {
        if (&d != &up_ || fastopen_ == FastOpen::none) {
          d.pass_fin();
        } else if (up_.total() == 0) {
          // A client gone without a byte before a Fast Open connect sent its SYN: there is no
          // connection to the server to end (a shutdown() would make one fail).
          close(EndReason::closed);
          return false;
        } else {
          fin_held_ = true;  // passed on once the server answers (fastopen_settle())
        }
      }
      return true;
    case RelayDirection::Pumped::failed: reset(d.failed_side(), d.error()); return false;
  }
  return true;
}

void Session::run() {
  const std::uint64_t before = up_.total() + down_.total();
  if (!pump(up_, down_) || !pump(down_, up_)) return;
  if (fastopen_ != FastOpen::none && !fastopen_settle(AnswerCheck::after_run)) return;
  const bool up_done = up_.state() == RelayDirection::State::finished;
  const bool down_done = down_.state() == RelayDirection::State::finished;
  if ((up_done && down_done) || (!half_close_ && (up_done || down_done))) {
    close(EndReason::closed);
    return;
  }
  // The idle timer is armed once and not moved on every read: when it fires, it looks at the
  // last activity and re-arms for the rest (idle_timer()).
  // After a move, only bytes count: the new registrations' first reports (a writable
  // socket) are no activity.
  if (up_.total() + down_.total() != before) resumed_ = false;
  if (!resumed_) last_active_ = loop_.now();
  if (proxy_.idle_timeout.count() > 0 && !client_->read.timer_set) {
    loop_.add_timer(client_->read, proxy_.idle_timeout);
  }
}

// The idle timer fired: close the session, or re-arm for the time it has not been idle.
void Session::idle_timer() {
  const event::Msec idle = loop_.now() - last_active_;
  if (idle < proxy_.idle_timeout) {
    loop_.add_timer(client_->read, proxy_.idle_timeout - idle);
    return;
  }
  spdlog::debug("proxy \"{}\": session idle for {} ms, closing", proxy_.name, idle.count());
  close(EndReason::idle_timeout);
}

void Session::on_client_event(Event& ev) {
  auto& s = *static_cast<Session*>(static_cast<Connection*>(ev.data)->data);
  if (ev.timedout) {
    // The client's read timer: the header's deadline while reading it, the idle timer after.
    ev.timedout = false;
    if (s.phase_ == Phase::reading_header) {
      s.bad_header("timed out");
    } else if (s.phase_ == Phase::prereading) {
      s.preread_timed_out();
    } else if (s.phase_ == Phase::handshaking) {
      s.close(EndReason::tls_handshake_timeout);
    } else {
      s.idle_timer();
    }
    return;
  }
  switch (s.phase_) {
    case Phase::reading_header:
      if (!ev.write) s.read_header();
      return;
    case Phase::prereading:
      if (!ev.write) s.preread();
      return;
    case Phase::handshaking: s.client_handshake(); return;
    case Phase::relaying: s.run(); return;
    // While connecting, what the client sends waits in its socket (the relay reads it once
    // connected: the PROXY header goes first); only a terminated client that ended its stream
    // with the handshake is looked at: reset since, it is gone.
    case Phase::connecting:
      if (s.client_->read.error) s.client_gone();
      return;
    // The client is not watched while admitted.
    case Phase::admitting:
    // Frozen: out of epoll; a report already posted is stale.
    case Phase::moving: return;
  }
}

}  // namespace ferry::worker
