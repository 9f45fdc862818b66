// Probes: one per address of each checked server, a small state machine driven by the loop; a
// CheckedServer holds a server's probes, their places on the board and the server's verdict in
// the statistics.
#include "worker/upstream/health_checker.h"

#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

#include "conf/values.h"
#include "event/connection_io.h"

namespace ferry::worker {

using event::Connection;
using event::Event;

namespace {
enum class Last : std::uint8_t { none, ok, failed };
constexpr std::size_t kNoPlace = ServerHealth::kAddresses;
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

  void begin();
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

  // Frees every place on the board whose address is not in `addresses` (left by a checker of
  // this generation that died, or by addresses the name no longer has).
  void keep_only(const std::vector<conf::Address>& addresses) noexcept {
    for (auto& word : health->addresses) {
      const std::uint64_t key = AddressVerdict::key(word.load(std::memory_order_relaxed));
      if (key == 0) continue;
      const bool kept = std::any_of(addresses.begin(), addresses.end(), [&](const auto& a) {
        return AddressVerdict::key_of(event::SocketAddress(a.sockaddr_ptr(), a.length)) == key;
      });
      if (!kept) word.store(0, std::memory_order_relaxed);
    }
  }

  // A place on the board for `p`: the one that has its key already (a dead checker's verdict
  // is taken over), else a free one.
  void claim(Probe& p) {
    std::size_t hint = kNoPlace;
    if (const std::uint64_t w = health->find(p.key, hint); w != 0) {
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
          upstream->name, server->address.text, ServerHealth::kAddresses);
    }
  }

  void add(const conf::Address& a) {
    auto p = std::make_unique<Probe>();
    p->target = this;
    p->address = a;
    p->key = AddressVerdict::key_of(event::SocketAddress(a.sockaddr_ptr(), a.length));
    claim(*p);
    p->next.data = p.get();
    p->next.handler = [](Event& ev) { static_cast<Probe*>(ev.data)->begin(); };
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
      ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd ||
      (::connect(fd.get(), address.sockaddr_ptr(), address.length) == -1 && errno != EINPROGRESS)) {
    finish(false, fd ? event::last_error().message() : "socket() failed");
    return;
  }
  conn = loop.get_connection(std::move(fd));
  if (conn == nullptr) {
    finish(false, "no free connection");
    return;
  }
  conn->data = this;
  conn->read.handler = conn->write.handler = on_event;
  connected = false;
  got.clear();
  if (loop.add_connection(*conn)) {
    finish(false, "epoll registration failed");
    return;
  }
  loop.add_timer(conn->write, target->upstream->health_check->timeout);
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
    ::getsockopt(p.conn->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      p.finish(false, std::system_category().message(err));
      return;
    }
    p.connected = true;
    if (!check.send.empty() && ::send(p.conn->fd.get(), check.send.data(), check.send.size(),
                                      MSG_NOSIGNAL) != static_cast<ssize_t>(check.send.size())) {
      p.finish(false, "cannot send the check's bytes");
      return;
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
  if (ok) {
    ++passed;
    fails = 0;
    if (down && ++passes >= check.passes) {
      down = false;
      spdlog::info("upstream \"{}\": server {} is up (health check passed {} time(s))",
                   target->upstream->name, label(), passes);
    }
  } else {
    passes = 0;
    if (!down && ++fails >= check.fails) {
      down = true;
      spdlog::warn("upstream \"{}\": server {} is down (health check failed {} time(s): {})",
                   target->upstream->name, label(), fails, why);
    }
  }
  last = ok ? Last::ok : Last::failed;
  if (place == kNoPlace) {
    target->claim(*this);  // a place freed since
  } else {
    publish();
  }
  target->publish_stats();
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
  const std::string& name = target->server->address.text;
  return conf::is_host_name(name) ? name + " (" + address.text + ")" : name;
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
      // A name that did not resolve at load has no probe until it resolves (set_addresses()).
      auto c = std::make_unique<CheckedServer>();
      c->owner = this;
      c->upstream = &up;
      c->server = &up.servers[s];
      c->health = &board_.at(cfg_, u, s);
      if (stats_ != nullptr)
        c->stats_index = stats_->server_index(up.name, c->server->address.text);
      c->keep_only(c->server->addresses);
      for (const conf::Address& a : c->server->addresses) c->add(a);
      servers_.push_back(std::move(c));
    }
  }
}

void HealthChecker::set_addresses(const conf::Server& server,
                                  const std::vector<conf::Address>& addresses) {
  const auto it = std::find_if(servers_.begin(), servers_.end(),
                               [&](const auto& c) { return c->server == &server; });
  if (it == servers_.end()) return;  // not checked
  CheckedServer& c = **it;
  std::erase_if(c.probes, [&](const std::unique_ptr<Probe>& p) {
    const bool kept = std::any_of(addresses.begin(), addresses.end(), [&](const conf::Address& a) {
      return a.same_endpoint(p->address);
    });
    if (!kept) p->cancel();
    return !kept;
  });
  c.keep_only(addresses);
  for (const conf::Address& a : addresses) {
    const bool probed = std::any_of(c.probes.begin(), c.probes.end(),
                                    [&](const auto& p) { return p->address.same_endpoint(a); });
    if (!probed) c.add(a);
  }
  c.publish_stats();
}

void HealthChecker::stop() noexcept {
  for (auto& c : servers_) {
    for (auto& p : c->probes) p->cancel();
  }
  servers_.clear();
}

}  // namespace ferry::worker
