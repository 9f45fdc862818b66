// Session's move to another worker (reload_sessions = "move"): frozen and described here,
// forgotten once the new worker holds it, or thawed when it does not; adopted there.
#include <algorithm>
#include <chrono>

#include <spdlog/spdlog.h>

#include "event/listening.h"
#include "worker/proxy/session.h"

namespace ferry::worker {

using event::Connection;

namespace {

// Out of the loop: no report, timer or posted event may run the session while another worker
// may be relaying it. EPOLL_CTL_DEL, not a close: the registration would outlive our fd while
// the other worker holds the socket open, and report its traffic here.
void take_out(event::EventLoop& loop, Connection& c) {
  loop.del_timer(c.read);
  loop.del_timer(c.write);
  event::EventLoop::delete_posted(c.read);
  event::EventLoop::delete_posted(c.write);
  if (c.read.active || c.write.active) {
    if (auto ec = loop.del_connection(c, false)) {
      spdlog::warn("epoll_ctl(DEL) of a moving session's socket failed: {}", ec.message());
    }
  }
}

}  // namespace

bool Session::freeze(std::uint32_t id, SessionRecord& r, int (&fds)[kFdsPerSession]) {
  const std::uint64_t up_before = up_.total();
  const std::uint64_t down_before = down_.total();
  const bool up_ok = up_.settle();
  const bool down_ok = up_ok && down_.settle();
  count_bytes(up_, up_.total() - up_before);
  count_bytes(down_, down_.total() - down_before);
  if (!up_ok || !down_ok) {
    RelayDirection& d = up_ok ? down_ : up_;
    reset(d.failed_side(), d.error());
    return false;
  }
  take_out(loop_, *client_);
  take_out(loop_, *upstream_);
  phase_ = Phase::moving;

  r.id = id;
  r.proxy = proxy_.name;
  r.listen = client_->listening->address;
  r.client = client_->peer;
  r.server = peer_ != nullptr ? peer_->name : aside_ ? aside_->server : std::string();
  if (aside_ && aside_->routed) {
    r.upstream = aside_->upstream;
    r.route = aside_->route;
    r.sni = aside_->sni;
  }
  r.server_address = upstream_->peer;
  r.started_ms = started_.time_since_epoch().count();
  r.wall_start_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(wall_start_.time_since_epoch()).count();
  r.idle_ms = std::max<std::int64_t>(0, (loop_.now() - last_active_).count());
  r.header_out = header_out_;
  r.moves = moves_;
  r.counted = counted_;
  r.limit_bucket = limit_bucket_;
  r.up = {};
  r.down = {};
  up_.export_to(r.up);
  down_.export_to(r.down);
  fds[0] = client_->fd.get();
  fds[1] = upstream_->fd.get();
  return true;
}

bool Session::thaw() {
  phase_ = Phase::relaying;
  for (Connection* c : {client_, upstream_}) {
    if (auto ec = loop_.add_connection(*c)) {
      spdlog::error("proxy \"{}\": a session that could not move cannot watch its socket again: {}",
                    proxy_.name, ec.message());
      close(EndReason::shutdown);
      return false;
    }
  }
  resume();
  return true;
}

void Session::resume() {
  phase_ = Phase::relaying;
  // What arrived meanwhile (edge-triggered reports came while the session did not look, or
  // before the sockets were in this loop): run() tries both directions, and a socket with
  // nothing for it says EAGAIN.
  client_->read.ready = client_->write.ready = true;
  upstream_->read.ready = upstream_->write.ready = true;
  // The idle time goes on where it was (the record carried it): the timer fires when the rest
  // of idle_timeout is up, and runs are no activity until one moves bytes.
  resumed_ = true;
  if (proxy_.idle_timeout.count() > 0) {
    const event::Msec idle = loop_.now() - last_active_;
    // 1 ms at least: a timer due now would run before the posted read below (timers come
    // first in an iteration) and close a session whose bytes came while it was frozen.
    loop_.add_timer(client_->read, std::max(event::Msec{1}, proxy_.idle_timeout - idle));
  }
  loop_.post(client_->read);
}

void Session::forget() noexcept {
  // Its counts go with it: here it was never accepted (the new worker counts it accepted), so
  // totals neither double nor drop.
  if (stats_ != nullptr) {
    stat_sub(stats_->accepted);
    stat_sub(stats_->active);
  }
  if (peer_stats_ != nullptr) {
    stat_sub(peer_stats_->sessions);
    stat_sub(peer_stats_->active);
  }
  if (aside_ && aside_->route_stats != nullptr) {
    stat_sub(aside_->route_stats->sessions);
    stat_sub(aside_->route_stats->active);
  }
  if (peer_ != nullptr) balancer_->abandon(*peer_);
  if (counted_) shared_.leave_client(limit_bucket_);
  // Out of epoll first (an adopted session given back is in it): the close below would not
  // end a registration while the other worker keeps the socket open.
  take_out(loop_, *client_);
  take_out(loop_, *upstream_);
  up_.release();
  down_.release();
  // Closing our descriptors sends nothing: the new worker's keep both sockets open.
  loop_.close_connection(*client_);
  loop_.close_connection(*upstream_);
  SessionShared& shared = shared_;
  event::EventLoop& loop = loop_;
  shared.unlink(*this, loop, true);
  delete this;
}

Session* Session::adopt(event::EventLoop& loop, SessionShared& shared, const conf::Proxy& proxy,
                        Balancer& balancer, Connection& client, Connection& upstream,
                        SessionRecord& r) {
  auto* s = new Session(loop, shared, proxy, &balancer, client);
  s->upstream_ = &upstream;
  s->phase_ = Phase::moving;  // until resume(): the old worker must have the answer first
  s->started_ = event::TimePoint(event::Msec(r.started_ms));
  s->wall_start_ = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(r.wall_start_ns)));
  s->last_active_ = loop.now() - event::Msec(r.idle_ms);
  s->header_out_ = r.header_out;
  s->moves_ = static_cast<std::uint16_t>(std::min<std::uint32_t>(r.moves + 1, UINT16_MAX));
  s->counted_ = r.counted;
  s->limit_bucket_ = r.limit_bucket;
  client.peer = r.client;
  upstream.peer = r.server_address;
  s->up_.set_to(&upstream);
  s->down_.set_from(&upstream);
  s->up_.import_from(r.up);
  s->down_.import_from(r.down);
  if (s->up_.state() != RelayDirection::State::open ||
      s->down_.state() != RelayDirection::State::open) {
    s->half_close_ = true;  // half-closed already: its other direction goes on
  }
  s->peer_ = balancer.adopt(r.server, r.server_address);
  if (s->peer_ == nullptr && !r.server.empty()) s->aside().server = r.server;
  if (!r.upstream.empty()) {
    Aside& a = s->aside();
    a.routed = true;
    a.upstream = r.upstream;
    a.route = r.route;
    a.sni = r.sni;
    a.route_stats = shared.server_stats(StatsTable::routes_key(proxy.name), r.route);
    if (a.route_stats != nullptr) {
      stat_add(a.route_stats->sessions);
      stat_add(a.route_stats->active);
    }
  }
  if ((s->stats_ = shared.proxy_stats(proxy)) != nullptr) {
    stat_add(s->stats_->accepted);
    stat_add(s->stats_->active);
  }
  s->peer_stats_ = s->peer_ != nullptr ? shared.server_stats(s->upstream_name(), *s->peer_)
                                       : shared.server_stats(s->upstream_name(), r.server);
  if (s->peer_stats_ != nullptr) {
    stat_add(s->peer_stats_->sessions);
    stat_add(s->peer_stats_->active);
  }
  if (s->counted_) shared.adopt_client(s->limit_bucket_);
  shared.link(*s, loop);
  client.data = upstream.data = s;
  client.read.handler = client.write.handler = on_client_event;
  upstream.read.handler = upstream.write.handler = on_upstream_event;
  return s;
}

}  // namespace ferry::worker
