// Balancer: peer choice and passive health, following nginx's upstream round robin module's
// rules (smooth weights, effective_weight after failures, one trial after fail_timeout, and
// the passively failed servers tried again when every server has failed), and the slow start of
// a server that comes back.
#include "worker/upstream/balancer.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "worker/upstream/slow_start.h"

namespace ferry::worker {
namespace {

// FNV-1a, 64 bits: stable across runs and processes, so every worker builds the same ring.
std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = 1469598103934665603ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  // FNV's low bits mix poorly for short keys: finish with a 64-bit avalanche (splitmix64).
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

// The client's IP address bytes (the port changes with every connection).
std::uint64_t client_hash(const event::SocketAddress& a) {
  if (a.family() == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(a.get());
    return fnv1a(&sin->sin_addr, sizeof sin->sin_addr);
  }
  if (a.family() == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a.get());
    return fnv1a(&sin6->sin6_addr, sizeof sin6->sin6_addr);
  }
  return 0;
}

constexpr int kPointsPerWeight = 160;

}  // namespace

Balancer::Balancer(const conf::Upstream& upstream, ServerHealth* health, const SharedConns* shared)
    : method_(upstream.balance),
      check_interval_(upstream.health_check ? upstream.health_check->interval : event::Msec{0}) {
  for (bool backup : {false, true}) {
    for (std::size_t i = 0; i < upstream.servers.size(); ++i) {
      const conf::Server& s = upstream.servers[i];
      if (s.backup != backup || s.down) continue;
      ServerSlots slots;
      slots.health = health != nullptr ? &health[i] : nullptr;
      if (shared != nullptr && s.max_conns > 0) slots.shared = shared[i];
      slots.slow_start = s.slow_start.value_or(upstream.slow_start);
      if (s.addresses.empty() && s.address.length != 0) {
        add_peer(s, {s.address, s.weight, s.backup, {}},
                 slots);  // built in code (tests), not loaded
      }
      for (const conf::Endpoint& e : s.addresses) add_peer(s, e, slots);
      servers_.emplace(&s, slots);
    }
  }
  if (method_ == conf::Balance::hash) build_ring();
}

void Balancer::fill_peer(Peer& p, const conf::Server& s, const conf::Endpoint& e,
                         const ServerSlots& slots) {
  p.server = &s;
  p.address = event::SocketAddress(e.address.sockaddr_ptr(), e.address.length);
  p.name = s.name();
  p.host = e.host;
  p.gone = false;
  p.weight = p.effective_weight = slots.weight > 0 ? slots.weight : e.weight;
  p.configured_weight = e.weight;
  p.admin = slots.admin;
  p.current_weight = 0;
  p.fails = 0;
  p.checked = p.accessed = event::TimePoint{};
  p.backup = e.backup;
  p.health = slots.health;
  p.health_key = AddressVerdict::key_of(p.address);
  p.health_hint = ServerHealth::kAddresses;
  p.health_missed = false;  // the first look is a real one
  p.passes_known = false;
  // Not ramping: a server there at start or reload is not coming back. One the checks hold down
  // is, when they find it up.
  p.checks_down = false;
  p.slow_start = slots.slow_start;
  p.ramp_until = event::TimePoint{};
  if (p.health != nullptr) {
    const std::uint64_t w = p.health->find(p.health_key, p.health_hint);
    take_baseline(p, w);
    p.checks_down = AddressVerdict::down(w);
  }
  p.shared = slots.shared;
  p.tls_session.reset();  // another address (a place reused): another server's session
}

void Balancer::add_peer(const conf::Server& s, const conf::Endpoint& e, const ServerSlots& slots) {
  Peer p;
  fill_peer(p, s, e, slots);
  p.index = peers_.size();
  peers_.push_back(std::move(p));
  candidates_.push_back(false);  // a peer a re-resolution adds has its place too
}

void Balancer::set_addresses(const conf::Server& server,
                             const std::vector<conf::Address>& addresses) {
  set_addresses(server, server.endpoints_of(addresses));
}

void Balancer::set_addresses(const conf::Server& server,
                             const std::vector<conf::Endpoint>& addresses) {
  const auto slots = servers_.find(&server);
  if (slots == servers_.end()) return;  // not a server of this group (or down)
  for (Peer& p : peers_) {
    if (p.server != &server) continue;
    const auto now = std::find_if(addresses.begin(), addresses.end(), [&](const conf::Endpoint& e) {
      return p.address == event::SocketAddress(e.address.sockaddr_ptr(), e.address.length);
    });
    if (now == addresses.end()) {
      p.gone = true;
      continue;
    }
    if (p.gone) {
      // Its failures stand (within fail_timeout, as ever): a name answered from a rotating subset
      // of its addresses brings a dead one back soon, which must not come back as sound.
      p.gone = false;
    }
    // A service's record changed its weight or priority class: the peer serves with the new
    // ones at once, its failures kept (an effective weight lowered by them recovers towards
    // the new weight one per pick, as after any failure).
    // (An operator's weight for the server stays over the records'.)
    p.configured_weight = now->weight;
    // The address may come from another target now: its session was verified for the old name.
    if (p.host != now->host) p.tls_session.reset();
    p.host = now->host;
    const int wanted = slots->second.weight > 0 ? slots->second.weight : now->weight;
    if (p.weight != wanted) {
      const bool penalised = p.effective_weight < p.weight;
      p.weight = wanted;
      p.effective_weight = penalised ? std::min(p.effective_weight, p.weight) : p.weight;
    }
    if (p.backup != now->backup) {
      p.backup = now->backup;
      p.current_weight = 0;  // its rotation state was among the other tier's
    }
  }
  for (const conf::Endpoint& e : addresses) {
    const event::SocketAddress sa(e.address.sockaddr_ptr(), e.address.length);
    const bool known = std::any_of(peers_.begin(), peers_.end(), [&](const Peer& p) {
      return p.server == &server && p.address == sa;
    });
    if (known) continue;
    // The place of a gone peer no session holds (its server's: the worker's statistics of a
    // peer follow its server's name), and whose failures are over: one still failed must keep
    // them for when its address comes back (rotating answers), not lose them to a newcomer.
    const event::TimePoint now = event::monotonic_now();
    const auto free = std::find_if(peers_.begin(), peers_.end(), [&](const Peer& p) {
      return p.server == &server && p.gone && p.conns == 0 &&
             (p.fails == 0 || now - p.checked > server.fail_timeout);
    });
    if (free != peers_.end()) {
      fill_peer(*free, server, e, slots->second);
    } else {
      add_peer(server, e, slots->second);
    }
  }
  if (method_ == conf::Balance::hash) {
    ring_.clear();
    build_ring();
  }
}

void Balancer::set_admin(const conf::Server& server, AdminState state, int weight,
                         event::TimePoint ready_since) {
  const auto slots = servers_.find(&server);
  if (slots == servers_.end()) return;  // not a server of this group (or down)
  slots->second.admin = state;
  slots->second.weight = weight;
  bool reweighed = false;
  for (Peer& p : peers_) {
    if (p.server != &server) continue;
    const int w = weight > 0 ? weight : p.configured_weight;
    p.admin = state;
    if (state == AdminState::removed) p.tls_session.reset();  // not offered to it again
    // Back in service (or added) by the operator: the slow start runs from that moment.
    if (state == AdminState::ready && ready_since != event::TimePoint{} &&
        method_ != conf::Balance::hash && p.slow_start.count() > 0 &&
        ready_since + p.slow_start > p.ramp_until) {
      if (p.ramp_until <= ready_since) p.current_weight = 0;
      p.ramp_until = ready_since + p.slow_start;
    }
    if (p.weight == w) continue;
    // Failures keep their share of the drop (effective_weight recovers by one per pick).
    const bool whole = p.effective_weight >= p.weight;
    p.weight = w;
    p.effective_weight = whole ? w : std::min(p.effective_weight, w);
    p.current_weight = 0;
    reweighed = true;
  }
  if (reweighed && method_ == conf::Balance::hash) {
    ring_.clear();
    build_ring();
  }
}

void Balancer::add_server(const conf::Server& server) {
  if (servers_.contains(&server)) return;
  ServerSlots slots;
  slots.slow_start = server.slow_start.value_or(event::Msec{0});
  for (const conf::Endpoint& e : server.addresses) add_peer(server, e, slots);
  servers_.emplace(&server, slots);
  if (method_ == conf::Balance::hash) {
    ring_.clear();
    build_ring();
  }
}

void Balancer::build_ring() {
  // Points depend on the server's name and address only, so adding or removing one server
  // moves only the keys that fall next to its points (about 1/N of them).
  for (std::uint32_t i = 0; i < peers_.size(); ++i) {
    if (peers_[i].backup || peers_[i].gone) continue;
    // A name's addresses each get points of their own.
    const std::string address = peers_[i].address.to_string();
    const std::string name = address == peers_[i].name ? address : peers_[i].name + "@" + address;
    for (int k = 0; k < kPointsPerWeight * peers_[i].weight; ++k) {
      const std::string point = name + "#" + std::to_string(k);
      ring_.push_back({fnv1a(point.data(), point.size()), i});
    }
  }
  std::sort(ring_.begin(), ring_.end(),
            [](const Point& a, const Point& b) { return a.hash < b.hash; });
}

std::uint64_t Balancer::verdict_of(Peer& p, event::TimePoint now) const noexcept {
  if (p.health == nullptr) return 0;
  // An address without a word (beyond the board's places, not checked yet) would cost a scan of
  // every place on each pick: looked for again once per check interval only.
  if (p.health_missed && now - p.health_missed_at < check_interval_) return 0;
  const std::uint64_t w = p.health->find(p.health_key, p.health_hint);
  p.health_missed = w == 0;
  p.health_missed_at = now;
  // A word that comes back counts from a new start: the baseline goes, at the look that found no
  // word (so after the baseline was read: note_passes() forgets a miss when it reads one).
  if (w == 0) p.passes_known = false;
  return w;
}

bool Balancer::down_by_checks(Peer& p, event::TimePoint now) const noexcept {
  return AddressVerdict::down(verdict_of(p, now));
}

void Balancer::take_baseline(Peer& p, std::uint64_t word) noexcept {
  p.passes_known = word != 0;
  if (word != 0) p.passes_seen = AddressVerdict::passes(word);
}

void Balancer::note_passes(Peer& p, event::TimePoint now) noexcept {
  if (p.health == nullptr) return;
  const std::uint64_t w = p.health->find(p.health_key, p.health_hint);
  take_baseline(p, w);
  // A look like verdict_of()'s: a miss remembered from before would otherwise outlive the word
  // found now and drop the baseline just read, and the next pass would go unseen.
  p.health_missed = w == 0;
  p.health_missed_at = now;
}

bool Balancer::passively_failed(Peer& p, event::TimePoint now) {
  const conf::Server* s = p.server;
  if (s == nullptr || s->max_fails == 0 || p.fails < s->max_fails) return false;
  // A check of the address that passed after the failures: it is back, as HAProxy has it,
  // without waiting out fail_timeout. Known only comparing one word with another: no word (not
  // checked yet, its place freed) says nothing, and a first word may count passes from before.
  const std::uint64_t w = verdict_of(p, now);
  // (No word: verdict_of() has dropped the baseline, if the look that found none was its own.)
  if (w != 0 && !p.passes_known) {
    take_baseline(p, w);
  } else if (w != 0 && AddressVerdict::passes(w) != p.passes_seen) {
    p.passes_seen = AddressVerdict::passes(w);
    end_failures(p, now);
    p.effective_weight = p.weight;
    return false;
  }
  return now - p.checked <= s->fail_timeout;
}

event::TimePoint Balancer::failed_until(const Peer& p) noexcept {
  return p.server != nullptr ? p.checked + p.server->fail_timeout : p.checked;
}

void Balancer::end_failures(Peer& p, event::TimePoint now) noexcept {
  if (p.server != nullptr && p.server->max_fails > 0 && p.fails >= p.server->max_fails) {
    begin_slow_start(p, now);
  }
  p.fails = 0;
}

void Balancer::begin_slow_start(Peer& p, event::TimePoint now) noexcept {
  // Hashing has no weights to ramp (see conf/schema.cc).
  if (p.slow_start.count() <= 0 || method_ == conf::Balance::hash) return;
  p.ramp_until = now + p.slow_start;
  // What it gathered before it went out would give it picks the ramp means to hold back.
  p.current_weight = 0;
}

double Balancer::slow_start_progress(const Peer& p, event::TimePoint now) noexcept {
  return slow_start::progress(p.slow_start, p.ramp_until, now);
}

std::int64_t Balancer::weight_now(const Peer& p, event::TimePoint now) noexcept {
  if (now < p.ramp_until) return slow_start::ramped(p.weight, p.slow_start, p.ramp_until, now);
  return p.weight * slow_start::kScale;
}

bool Balancer::available(Peer& p, Pass pass, event::TimePoint now) {
  if (p.gone || p.admin != AdminState::ready) return false;
  // Down by the active checks: out even when nothing else is left (the checks know better).
  // Seen back up, it is coming back: known from looks at picks, so a worker that picked nothing
  // while the server was down sees no return and does not ramp it.
  if (down_by_checks(p, now)) {
    p.checks_down = true;
    return false;
  }
  if (p.checks_down) {
    p.checks_down = false;
    begin_slow_start(p, now);
  }
  const conf::Server* s = p.server;
  if (s == nullptr) return true;
  if (s->max_conns > 0) {
    const auto limit = static_cast<std::uint32_t>(s->max_conns);
    if (p.shared.total != nullptr ? p.shared.total->load(std::memory_order_relaxed) >= limit
                                  : p.conns >= s->max_conns) {
      return false;
    }
  }
  return !passively_failed(p, now) || pass == Pass::any_failed;
}

bool Balancer::take_conn(Peer& p) noexcept {
  if (p.shared.total != nullptr) {
    const auto limit = static_cast<std::uint32_t>(p.server->max_conns);
    std::uint32_t n = p.shared.total->load(std::memory_order_relaxed);
    do {
      if (n >= limit) return false;
    } while (!p.shared.total->compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    // The share after the total, as ClientLimits does: a worker killed in between leaves one
    // place taken until the next reload, where the other order would let the master take back a
    // session another worker holds, over the cap.
    if (p.shared.mine != nullptr) share_of(*p.shared.mine).fetch_add(1, std::memory_order_release);
  }
  ++p.conns;
  return true;
}

Peer* Balancer::adopt(std::string_view server, const event::SocketAddress& address) noexcept {
  for (Peer& p : peers_) {
    if (p.gone || p.name != server || !(p.address == address)) continue;
    if (p.shared.total != nullptr) {
      p.shared.total->fetch_add(1, std::memory_order_relaxed);
      if (p.shared.mine != nullptr)
        share_of(*p.shared.mine).fetch_add(1, std::memory_order_release);
    }
    ++p.conns;
    return &p;
  }
  return nullptr;
}

void Balancer::drop_conn(Peer& p) noexcept {
  if (p.conns <= 0) return;
  --p.conns;
  if (p.shared.total != nullptr) {
    // The share first, for the reason take_conn() counts it last.
    if (p.shared.mine != nullptr) {
      auto mine = share_of(*p.shared.mine);
      if (mine.load(std::memory_order_relaxed) != 0) mine.fetch_sub(1, std::memory_order_release);
    }
    take_off(*p.shared.total, 1);
  }
}

Peer* Balancer::pick(const event::SocketAddress& key, TriedSet& tried, event::TimePoint now) {
  tried.ensure(peers_.size());
  for (;;) {
    Peer* best = choose(key, tried, now);
    if (best == nullptr) return nullptr;
    tried.add(index_of(*best));
    if (!take_conn(*best)) continue;  // full by now: the next choice
    // A server past its fail window gets one trial: the window restarts now.
    if (best->server != nullptr && best->fails >= best->server->max_fails &&
        best->server->max_fails > 0) {
      best->checked = now;
    }
    return best;
  }
}

bool Balancer::every_server_failed(event::TimePoint now) {
  for (Peer& p : peers_) {
    if (p.gone) continue;                        // a re-resolution removed its address
    if (p.admin != AdminState::ready) continue;  // the operator's: no failover to it either
    if (down_by_checks(p, now)) continue;
    if (!passively_failed(p, now)) return false;
  }
  return true;
}

Peer* Balancer::choose(const event::SocketAddress& key, TriedSet& tried, event::TimePoint now) {
  // When every server has failed, a refusal would keep a server that came back unused until its
  // fail_timeout is over: the failed ones are tried instead (nginx marks them all live again).
  for (Pass pass : {Pass::fresh, Pass::any_failed}) {
    // Not in failover: a session whose healthy servers refused it is not sent to failed ones.
    if (pass == Pass::any_failed && !every_server_failed(now)) break;
    Peer* best = nullptr;
    if (method_ == conf::Balance::hash) {
      best = hash(key, pass, tried, now);
    } else {
      for (bool backup : {false, true}) {
        best = method_ == conf::Balance::least_conn ? least_conn(backup, pass, tried, now)
                                                    : round_robin(backup, pass, tried, now);
        if (best != nullptr) break;
      }
    }
    if (best != nullptr) return best;
  }
  return nullptr;
}

// What `p` adds to its current weight in a pick at `now`: its effective weight, capped by its
// ramp when it is slow-starting.
std::int64_t Balancer::step_of(Peer& p, event::TimePoint now) noexcept {
  std::int64_t w = p.effective_weight * slow_start::kScale;
  if (now < p.ramp_until) {
    w = std::min(w, slow_start::ramped(p.weight, p.slow_start, p.ramp_until, now));
  }
  if (p.effective_weight < p.weight) ++p.effective_weight;
  return w;
}

Peer* Balancer::round_robin(bool backup, Pass pass, TriedSet& tried, event::TimePoint now) {
  Peer* best = nullptr;
  std::int64_t total = 0;
  for (std::size_t i = 0; i < peers_.size(); ++i) {
    Peer& p = peers_[i];
    if (p.backup != backup || tried.has(i) || !available(p, pass, now)) continue;
    const std::int64_t step = step_of(p, now);
    p.current_weight += step;
    total += step;
    if (best == nullptr || p.current_weight > best->current_weight) best = &p;
  }
  if (best != nullptr) best->current_weight -= total;
  return best;
}

Peer* Balancer::least_conn(bool backup, Pass pass, TriedSet& tried, event::TimePoint now) {
  // The fewest connections per unit of weight; among equals, smooth round robin. Availability
  // is decided once, in the first pass: it reads counts other workers change at any moment, and
  // the second pass must find at least the server the first one chose.
  // A ramping server's weight is where it is on its ramp.
  Peer* least = nullptr;
  std::int64_t least_weight = 0;
  for (std::size_t i = 0; i < peers_.size(); ++i) {
    Peer& p = peers_[i];
    candidates_[i] = p.backup == backup && !tried.has(i) && available(p, pass, now);
    if (!candidates_[i]) continue;
    const std::int64_t w = weight_now(p, now);
    if (least == nullptr || p.conns * least_weight < least->conns * w) {
      least = &p;
      least_weight = w;
    }
  }
  if (least == nullptr) return nullptr;
  Peer* best = nullptr;
  std::int64_t total = 0;
  for (std::size_t i = 0; i < peers_.size(); ++i) {
    Peer& p = peers_[i];
    if (!candidates_[i]) continue;
    if (p.conns * least_weight != least->conns * weight_now(p, now)) continue;
    const std::int64_t step = step_of(p, now);
    p.current_weight += step;
    total += step;
    if (best == nullptr || p.current_weight > best->current_weight) best = &p;
  }
  if (best == nullptr) return nullptr;  // cannot happen: `least` is a candidate; no crash if so
  best->current_weight -= total;
  return best;
}

Peer* Balancer::hash(const event::SocketAddress& key, Pass pass, TriedSet& tried,
                     event::TimePoint now) {
  if (ring_.empty()) return nullptr;
  const std::uint64_t h = client_hash(key);
  auto it = std::lower_bound(ring_.begin(), ring_.end(), h,
                             [](const Point& p, std::uint64_t v) { return p.hash < v; });
  // Walk the ring from the key's point to the first server that can take the session.
  for (std::size_t step = 0; step < ring_.size(); ++step, ++it) {
    if (it == ring_.end()) it = ring_.begin();
    Peer& p = peers_[it->peer];
    if (!tried.has(it->peer) && available(p, pass, now)) return &p;
  }
  return nullptr;
}

void Balancer::release(Peer& peer, bool failed, event::TimePoint now) {
  drop_conn(peer);
  const conf::Server* s = peer.server;
  if (s == nullptr) return;
  if (failed) {
    ++peer.fails;
    peer.accessed = now;
    peer.checked = now;
    note_passes(peer, now);  // only a check that passes after this failure clears it
    if (s->max_fails > 0) {
      peer.effective_weight -= std::max(1, peer.weight / s->max_fails);
      if (peer.effective_weight < 0) peer.effective_weight = 0;
    }
    return;
  }
  // A session got through: the server is healthy again.
  end_failures(peer, now);
}

}  // namespace ferry::worker
