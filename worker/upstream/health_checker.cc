// Probes: one per address of each checked server, a small state machine driven by the loop; a
// CheckedServer holds a server's probes, their places on the board and the server's verdict in
// the statistics.
#include "worker/upstream/health_checker.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <optional>
#include <string>
#include <system_error>

#include <spdlog/spdlog.h>

#include "conf/values.h"
#include "event/connection_io.h"

namespace ferry::worker {

using event::Connection;
using event::Event;

namespace {
enum class Last : std::uint8_t { none, ok, failed };
constexpr std::size_t kNoPlace = ServerHealth::kAddresses;

// How long a probe whose address left the name's answer keeps its verdict: names answered from a
// rotating subset (multivalue DNS, service catalogues) bring a dead address back soon, and it
// must not come back as up.
event::Msec grace_of(const conf::Upstream& u) noexcept {
  return std::max(2 * u.resolve_interval, event::Msec{10'000});
}
}  // namespace

struct Probe {
  CheckedServer* target = nullptr;
  conf::Address address;
  std::uint64_t key = 0;
  std::size_t place = kNoPlace;  // its word on the board (none: the table was full)
  Connection* conn = nullptr;
  Event next;  // the interval timer
  std::string got;
  bool connected = false;
  bool down = false;
  int passes = 0;            // consecutive, while down
  int fails = 0;             // consecutive, while up
  std::uint64_t passed = 0;  // every check that passed, as the board's word counts them
  Last last = Last::none;
  bool absent = false;    // the name no longer resolves to it: kept for a grace period
  bool expired = false;   // ... which is over: its verdict is gone
  bool collided = false;  // its key is another probe's of the server (said once)

  void begin();
  // The interval timer: the next check, or the end of the grace period of an absent address.
  static void on_next(Event& ev);
  // A shortage on this side (descriptors, connections, local ports): no verdict either way.
  void no_verdict(const std::string& why);
  static void on_event(Event& ev);
  void finish(bool ok, const std::string& why);
  // The probe's word on the board, as its state now is.
  void publish() noexcept;
  void cancel() noexcept;
  // "name:port ([::1]:port)" for a host name, the address alone for a literal one.
  [[nodiscard]] std::string label() const;
};

struct CheckedServer {
  HealthChecker* owner = nullptr;
  const conf::Upstream* upstream = nullptr;
  const conf::Server* server = nullptr;
  ServerHealth* health = nullptr;
  std::optional<std::size_t> stats_index;  // the server in the shared statistics
  std::vector<std::unique_ptr<Probe>> probes;
  bool warned_full = false;
  bool paused = false;  // the operator's maint: no probes until ready again

  // Frees every place on the board none of this server's probes holds (left by a checker of
  // this generation that died, for addresses the name no longer has). Only once this worker
  // resolved the name: before, a respawned checker knows only the load-time addresses, and would
  // throw away the verdicts on those found since.
  void free_unclaimed() noexcept {
    for (std::size_t i = 0; i < ServerHealth::kAddresses; ++i) {
      const bool held =
          std::any_of(probes.begin(), probes.end(), [i](const auto& p) { return p->place == i; });
      if (!held) health->addresses[i].store(0, std::memory_order_relaxed);
    }
  }

  // A place on the board for `p`: the one that has its key already, unless another probe of
  // this server holds it (a key collision: taking it over would make two probes write one word),
  // when it gets none; else a free one. A word no probe holds is a dead checker's verdict: taken
  // over.
  void claim(Probe& p) {
    std::size_t hint = kNoPlace;
    if (const std::uint64_t w = health->find(p.key, hint); w != 0) {
      const bool taken = std::any_of(probes.begin(), probes.end(), [&](const auto& q) {
        return q.get() != &p && q->place == hint;
      });
      if (taken) {
        if (p.collided) return;
        p.collided = true;
        spdlog::warn(
            "upstream \"{}\": server {}: the key of {} on the health board collides with "
            "another address's: its verdict is not shared",
            upstream->name, server->name(), p.address.text);
        return;
      }
      p.place = hint;
      p.down = AddressVerdict::down(w);
      p.passed = AddressVerdict::passes(w);
      return;
    }
    for (std::size_t i = 0; i < ServerHealth::kAddresses; ++i) {
      if (health->addresses[i].load(std::memory_order_relaxed) != 0) continue;
      p.place = i;
      p.publish();
      return;
    }
    if (!warned_full) {
      warned_full = true;
      spdlog::warn(
          "upstream \"{}\": server {} has more than {} addresses: the health check's verdict on "
          "the others is not shared (they count as up; max_fails still applies)",
          upstream->name, server->name(), ServerHealth::kAddresses);
    }
  }

  void add(const conf::Address& a) {
    auto p = std::make_unique<Probe>();
    p->target = this;
    p->address = a;
    p->key = AddressVerdict::key_of(event::SocketAddress(a.sockaddr_ptr(), a.length));
    claim(*p);
    p->next.data = p.get();
    p->next.handler = Probe::on_next;
    // The first round at once, so an address that is down is known quickly.
    owner->loop_.add_timer(p->next, event::Msec{0});
    probes.push_back(std::move(p));
  }

  // The server's verdict in the statistics: down only when the checks found every address
  // down; the last check `ok` only when the latest check of every address passed.
  void publish_stats() const {
    if (owner->stats_ == nullptr || !stats_index) return;
    bool up = probes.empty();
    bool any_result = false;
    bool all_ok = true;
    for (const auto& p : probes) {
      if (p->absent) continue;
      up = up || !p->down;
      if (p->last == Last::none) continue;
      any_result = true;
      all_ok = all_ok && p->last == Last::ok;
    }
    if (!any_result) return;
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    owner->stats_->set_health(*stats_index, owner->generation_, up, all_ok,
                              std::chrono::duration_cast<std::chrono::seconds>(now).count());
  }
};

void Probe::begin() {
  event::EventLoop& loop = target->owner->loop_;
  event::UniqueFd fd(
      target->owner->no_socket_
          ? (errno = EMFILE, -1)
          : ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    no_verdict("socket() failed: " + event::last_error().message());
    return;
  }
  if (::connect(fd.get(), address.sockaddr_ptr(), address.length) == -1 && errno != EINPROGRESS) {
    const std::error_code e = event::last_error();
    // Out of local ports (or of the kernel's buffers) says nothing about the server.
    if (e.value() == EADDRNOTAVAIL || e.value() == EAGAIN || e.value() == ENOBUFS) {
      no_verdict("connect() failed: " + e.message());
    } else {
      finish(false, e.message());
    }
    return;
  }
  conn = loop.get_connection(std::move(fd));
  if (conn == nullptr) {
    no_verdict("no free connection (worker_connections)");
    return;
  }
  conn->data = this;
  conn->read.handler = conn->write.handler = on_event;
  connected = false;
  got.clear();
  if (const std::error_code e = loop.add_connection(*conn)) {
    loop.close_connection(*conn);
    conn = nullptr;
    no_verdict("epoll registration failed: " + e.message());
    return;
  }
  loop.add_timer(conn->write, target->upstream->health_check->timeout);
}

void Probe::on_next(Event& ev) {
  auto& p = *static_cast<Probe*>(ev.data);
  if (!p.absent && p.target->paused) {
    // In maintenance: no probe (the server may be down on purpose); the verdict stays as it was
    // until the operator makes it ready again.
    p.target->owner->loop_.add_timer(p.next, p.target->upstream->health_check->interval);
    return;
  }
  if (!p.absent) {
    p.begin();
    return;
  }
  // The grace period is over: the place is freed; the probe goes at the next set_addresses().
  if (p.place != kNoPlace) p.target->health->addresses[p.place].store(0, std::memory_order_relaxed);
  p.place = kNoPlace;
  p.expired = true;
}

void Probe::no_verdict(const std::string& why) {
  HealthChecker& owner = *target->owner;
  const event::Msec interval = target->upstream->health_check->interval;
  if (const auto held = owner.local_errors_.admit(owner.loop_.now())) {
    spdlog::warn(
        "upstream \"{}\": the health check of server {} was not made: {} (a shortage on this "
        "side: no verdict on the server; tried again in {} ms){}",
        target->upstream->name, label(), why, interval.count(),
        *held != 0 ? " (" + std::to_string(*held) + " more such failures not logged)" : "");
  }
  owner.loop_.add_timer(next, interval);
}

void Probe::on_event(Event& ev) {
  auto& p = *static_cast<Probe*>(static_cast<Connection*>(ev.data)->data);
  const conf::HealthCheck& check = *p.target->upstream->health_check;
  if (ev.timedout) {
    p.finish(false, "timed out");
    return;
  }
  if (!p.connected) {
    if (!ev.write) return;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(p.conn->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
      p.finish(false, "getsockopt(SO_ERROR) failed: " + event::last_error().message());
      return;
    }
    if (err != 0) {
      p.finish(false, std::system_category().message(err));
      return;
    }
    p.connected = true;
    if (!check.send.empty()) {
      const ssize_t n =
          ::send(p.conn->fd.get(), check.send.data(), check.send.size(), MSG_NOSIGNAL);
      if (n == -1) {
        p.finish(false, "sending the check's bytes failed: " + event::last_error().message());
        return;
      }
      // A fresh socket's buffer takes far more than a check sends: a short write is a fault.
      if (static_cast<std::size_t>(n) != check.send.size()) {
        p.finish(false, "sent only " + std::to_string(n) + " of the check's " +
                            std::to_string(check.send.size()) + " bytes");
        return;
      }
    }
    if (check.expect.empty()) {
      p.finish(true, "");
      return;
    }
  }
  if (!p.conn->read.ready) return;
  std::byte buf[512];
  for (;;) {
    const auto r = event::recv(*p.conn, buf);
    if (r.status == event::IoStatus::ok) {
      p.got.append(reinterpret_cast<const char*>(buf), r.bytes);
      if (p.got.size() >= check.expect.size()) {
        const bool match = p.got.compare(0, check.expect.size(), check.expect) == 0;
        p.finish(match, match ? "" : "unexpected reply");
        return;
      }
      continue;
    }
    if (r.status == event::IoStatus::again) return;
    p.finish(false, "closed before the expected reply");
    return;
  }
}

void Probe::finish(bool ok, const std::string& why) {
  event::EventLoop& loop = target->owner->loop_;
  const conf::HealthCheck& check = *target->upstream->health_check;
  if (conn != nullptr) {
    loop.close_connection(*conn);
    conn = nullptr;
  }
  // What changed is logged after it is on the board: a reader of the log then finds every
  // worker acting on it.
  const char* change = nullptr;
  if (ok) {
    ++passed;
    fails = 0;
    if (down && ++passes >= check.passes) {
      down = false;
      change = "up";
    }
  } else {
    passes = 0;
    if (!down && ++fails >= check.fails) {
      down = true;
      change = "down";
    }
  }
  last = ok ? Last::ok : Last::failed;
  if (place == kNoPlace) {
    target->claim(*this);  // a place freed since
  } else {
    publish();
  }
  target->publish_stats();
  if (change != nullptr && !down) {
    spdlog::info("upstream \"{}\": server {} is up (health check passed {} time(s))",
                 target->upstream->name, label(), passes);
  } else if (change != nullptr) {
    spdlog::warn("upstream \"{}\": server {} is down (health check failed {} time(s): {})",
                 target->upstream->name, label(), fails, why);
  }
  loop.add_timer(next, check.interval);
}

void Probe::publish() noexcept {
  if (place == kNoPlace) return;
  target->health->addresses[place].store(AddressVerdict::word(key, passed, down),
                                         std::memory_order_relaxed);
}

void Probe::cancel() noexcept {
  event::EventLoop& loop = target->owner->loop_;
  loop.del_timer(next);
  if (conn != nullptr) {
    loop.close_connection(*conn);
    conn = nullptr;
  }
}

std::string Probe::label() const {
  const conf::Server& s = *target->server;
  const std::string& name = s.name();
  // Beyond the board's places, a verdict no worker acts on: said, so the log does not mislead.
  const char* shared = place == kNoPlace ? " (not shared)" : "";
  const bool named = !s.service.empty() || conf::is_host_name(name);
  return (named ? name + " (" + address.text + ")" : name) + shared;
}

HealthChecker::HealthChecker(event::EventLoop& loop, const conf::Config& cfg, HealthBoard& board)
    : loop_(loop), cfg_(cfg), board_(board) {}

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::start() {
  for (std::size_t u = 0; u < cfg_.upstreams.size(); ++u) {
    const conf::Upstream& up = cfg_.upstreams[u];
    if (!up.health_check) continue;
    for (std::size_t s = 0; s < up.servers.size(); ++s) {
      if (up.servers[s].down) continue;
      // A name (or service) that did not resolve at load has no probe until it resolves
      // (set_addresses()); a service's targets are probed at their records' ports.
      auto c = std::make_unique<CheckedServer>();
      c->owner = this;
      c->upstream = &up;
      c->server = &up.servers[s];
      c->health = &board_.at(cfg_, u, s);
      if (stats_ != nullptr) c->stats_index = stats_->server_index(up.name, c->server->name());
      for (const conf::Endpoint& e : c->server->addresses) c->add(e.address);
      servers_.push_back(std::move(c));
    }
  }
}

void HealthChecker::set_addresses(const conf::Server& server,
                                  const std::vector<conf::Endpoint>& addresses) {
  const auto it = std::find_if(servers_.begin(), servers_.end(),
                               [&](const auto& c) { return c->server == &server; });
  if (it == servers_.end()) return;  // not checked
  CheckedServer& c = **it;
  const auto listed = [&](const conf::Address& a) {
    return std::any_of(addresses.begin(), addresses.end(),
                       [&](const conf::Endpoint& b) { return b.address.same_endpoint(a); });
  };
  // Expired probes were cancelled when their address left; only their objects remain.
  std::erase_if(c.probes, [&](const auto& p) { return p->expired && !listed(p->address); });
  for (auto& p : c.probes) {
    if (p->absent || listed(p->address)) continue;
    p->cancel();
    p->absent = true;
    loop_.add_timer(p->next, grace_of(*c.upstream));
  }
  for (const conf::Endpoint& e : addresses) {
    const conf::Address& a = e.address;
    const auto p = std::find_if(c.probes.begin(), c.probes.end(),
                                [&](const auto& q) { return q->address.same_endpoint(a); });
    if (p == c.probes.end()) {
      c.add(a);
      continue;
    }
    Probe& q = **p;
    if (!q.absent) continue;
    // Back within its grace period: its verdict stands, and is checked again at once.
    q.absent = false;
    if (q.expired) {
      q.expired = false;
      q.down = false;
      q.fails = q.passes = 0;
      q.last = Last::none;
      c.claim(q);
    }
    loop_.del_timer(q.next);
    loop_.add_timer(q.next, event::Msec{0});
  }
  c.free_unclaimed();
  c.publish_stats();
}

void HealthChecker::set_paused(const std::vector<const conf::Server*>& paused) noexcept {
  for (auto& c : servers_) {
    const bool now = std::find(paused.begin(), paused.end(), c->server) != paused.end();
    if (now != c->paused) {
      spdlog::info("upstream \"{}\": health checks of server {} {}", c->upstream->name,
                   c->server->name(), now ? "paused (maint)" : "resumed");
    }
    // Back from maintenance: probed at once, so that a verdict frozen since (a server rebooted
    // meanwhile) is replaced before long.
    if (c->paused && !now) {
      for (auto& p : c->probes) {
        if (!p->absent && p->conn == nullptr) loop_.add_timer(p->next, event::Msec{0});
      }
    }
    c->paused = now;
  }
}

void HealthChecker::stop() noexcept {
  for (auto& c : servers_) {
    for (auto& p : c->probes) p->cancel();
  }
  servers_.clear();
}

}  // namespace ferry::worker
