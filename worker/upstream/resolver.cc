// Resolver: one Lookup per named server, alternating between a timer and a thread-pool task.
#include "worker/upstream/resolver.h"

#include <algorithm>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

#include "conf/srv.h"
#include "conf/values.h"
#include "event/log_throttle.h"

namespace ferry::worker {

struct Lookup {
  Resolver* owner = nullptr;
  const conf::Upstream* upstream = nullptr;
  const conf::Server* server = nullptr;
  std::vector<conf::Endpoint> current;
  event::ThreadTask task;
  event::Event timer;
  // Written by the pool thread, read on the loop thread after the completion handoff.
  std::vector<conf::Endpoint> result;
  std::string error;
  std::string skipped;       // a service's targets that did not resolve (the others serve)
  std::string said_skipped;  // ... as last logged: said again only when it changes
  // A name that never resolved is retried more often than resolve_interval, but said no more
  // often than that (the interval is the upstream's: set by Resolver::start()).
  event::LogThrottle unresolved_log{event::Msec{0}};
  // Whether a lookup completed: the first one is reported even when it found the load's
  // addresses (a respawned health checker waits for it to free what nobody resolves to).
  bool reported = false;
  // A server added at run time (follow_added()): `active` while the operator's records name it.
  bool added = false;
  bool active = true;
  bool in_flight = false;  // its task is on the pool: not posted again until it is back
};

namespace {

void resolve_off_loop(event::ThreadTask& task) {
  auto& l = *static_cast<Lookup*>(task.ctx);
  l.error.clear();
  l.skipped.clear();
  if (!l.server->service.empty()) {
    auto found = conf::resolve_service(l.server->service, &l.skipped);
    if (auto* why = std::get_if<std::string>(&found)) {
      l.error = *why;
    } else {
      l.result = std::get<std::vector<conf::Endpoint>>(std::move(found));
    }
    return;
  }
  auto parsed = conf::resolve_all(l.server->address);
  if (auto* why = std::get_if<std::string>(&parsed)) {
    l.error = *why;
  } else {
    l.result = l.server->endpoints_of(std::get<std::vector<conf::Address>>(std::move(parsed)));
  }
}

// The same endpoints, in any order: a service's weight, priority class or target changing is a
// change.
bool same_set(const std::vector<conf::Endpoint>& a, const std::vector<conf::Endpoint>& b) {
  if (a.size() != b.size()) return false;
  return std::all_of(a.begin(), a.end(), [&](const conf::Endpoint& x) {
    return std::any_of(b.begin(), b.end(), [&](const conf::Endpoint& y) {
      return x.address.same_endpoint(y.address) && x.weight == y.weight && x.backup == y.backup &&
             x.host == y.host;
    });
  });
}

std::string listed(const conf::Server& s, const std::vector<conf::Endpoint>& endpoints) {
  std::string out;
  for (const conf::Endpoint& e : endpoints) {
    out += (out.empty() ? "" : ", ") + e.address.text;
    // A service's records decide these: said, since they change with the records.
    if (!s.service.empty()) {
      out += " (weight " + std::to_string(e.weight) + (e.backup ? ", backup)" : ")");
    }
  }
  return out.empty() ? "nothing" : out;
}

bool wanted(const conf::Upstream& u, const conf::Server& s) {
  if (s.down || (s.service.empty() && !conf::is_host_name(s.address.text))) return false;
  return u.resolve_interval.count() != 0 || s.addresses.empty();
}

// The wait before the next lookup; none when the name resolved and re-resolving is off. A name
// with no address yet is retried at least every kUnresolvedRetry: its server serves nothing.
std::optional<event::Msec> next_wait(const Lookup& l) {
  const event::Msec interval = l.upstream->resolve_interval;
  if (l.current.empty()) {
    return interval.count() == 0 ? Resolver::kUnresolvedRetry
                                 : std::min(interval, Resolver::kUnresolvedRetry);
  }
  if (interval.count() != 0) return interval;
  return std::nullopt;
}

}  // namespace

void Resolver::on_resolved(event::Event& ev) {
  auto& l = *static_cast<Lookup*>(ev.data);
  Resolver& r = *l.owner;
  l.in_flight = false;
  if (r.stopped_ || !l.active) return;
  if (l.error.empty() && l.skipped != l.said_skipped) {
    if (!l.skipped.empty()) {
      spdlog::warn("upstream \"{}\": service {}: targets left out: {}", l.upstream->name,
                   l.server->service, l.skipped);
    }
    l.said_skipped = l.skipped;
  }
  if (!l.error.empty()) {
    if (l.current.empty()) {
      if (const auto held = l.unresolved_log.admit(r.loop_.now())) {
        spdlog::warn("upstream \"{}\": resolving {} failed: {}; the server stays unavailable{}",
                     l.upstream->name, l.server->name(), l.error,
                     *held != 0 ? " (" + std::to_string(*held) + " more failures not logged)" : "");
      }
    } else {
      spdlog::warn("upstream \"{}\": resolving {} failed: {}; keeping {}", l.upstream->name,
                   l.server->name(), l.error, listed(*l.server, l.current));
    }
  } else if (!same_set(l.result, l.current)) {
    spdlog::info("upstream \"{}\": {} now resolves to {}", l.upstream->name, l.server->name(),
                 listed(*l.server, l.result));
    l.current = l.result;
    l.reported = true;
    r.apply_(*l.server, l.current);
  } else {
    spdlog::debug("upstream \"{}\": {} resolved, unchanged", l.upstream->name, l.server->name());
    if (!l.reported) {
      l.reported = true;
      r.apply_(*l.server, l.current);
    }
  }
  if (const auto wait = next_wait(l)) r.loop_.add_timer(l.timer, *wait);
}

void Resolver::on_timer(event::Event& ev) {
  auto& l = *static_cast<Lookup*>(ev.data);
  if (l.owner->stopped_ || !l.active || l.in_flight) return;
  if (l.owner->pool_.post(l.task)) {
    // Queue full or pool stopping: try again at the next interval.
    if (const auto wait = next_wait(l)) l.owner->loop_.add_timer(l.timer, *wait);
  } else {
    l.in_flight = true;
  }
}

bool has_names_to_resolve(const conf::Config& cfg) {
  for (const conf::Upstream& u : cfg.upstreams) {
    for (const conf::Server& s : u.servers) {
      if (wanted(u, s)) return true;
    }
  }
  return false;
}

Resolver::Resolver(event::EventLoop& loop, event::ThreadPool& pool, const conf::Config& cfg,
                   Apply apply)
    : loop_(loop), pool_(pool), cfg_(cfg), apply_(std::move(apply)) {}

Resolver::~Resolver() { stop(); }

Lookup& Resolver::make_lookup(const conf::Upstream& u, const conf::Server& s) {
  auto l = std::make_unique<Lookup>();
  l->owner = this;
  l->upstream = &u;
  l->server = &s;
  l->current = s.addresses;
  l->task.work = resolve_off_loop;
  l->task.ctx = l.get();
  l->task.event.handler = &Resolver::on_resolved;
  l->task.event.data = l.get();
  l->timer.handler = &Resolver::on_timer;
  l->timer.data = l.get();
  l->unresolved_log = event::LogThrottle(std::max(u.resolve_interval, kUnresolvedRetry));
  lookups_.push_back(std::move(l));
  return *lookups_.back();
}

void Resolver::start() {
  for (const conf::Upstream& u : cfg_.upstreams) {
    for (const conf::Server& s : u.servers) {
      if (!wanted(u, s)) continue;
      Lookup& l = make_lookup(u, s);
      if (const auto wait = next_wait(l)) loop_.add_timer(l.timer, *wait);
    }
  }
}

void Resolver::follow_added(
    const std::vector<std::pair<const conf::Upstream*, const conf::Server*>>& servers) {
  if (stopped_) return;
  for (auto& l : lookups_) {
    if (!l->added) continue;
    const bool named = std::any_of(servers.begin(), servers.end(),
                                   [&](const auto& p) { return p.second == l->server; });
    if (!named && l->active) {
      l->active = false;
      loop_.del_timer(l->timer);
    }
  }
  for (const auto& [upstream, server] : servers) {
    const auto it = std::find_if(lookups_.begin(), lookups_.end(),
                                 [&](const auto& l) { return l->server == server; });
    Lookup* l = it != lookups_.end() ? it->get() : nullptr;
    if (l != nullptr && l->active) continue;
    if (l == nullptr) {
      l = &make_lookup(*upstream, *server);
      l->added = true;
    }
    l->active = true;
    // At once (from the loop): a lookup still on the pool re-arms its timer when it is back.
    if (!l->in_flight) loop_.add_timer(l->timer, event::Msec{0});
  }
}

void Resolver::stop() noexcept {
  stopped_ = true;
  for (auto& l : lookups_) loop_.del_timer(l->timer);
}

}  // namespace ferry::worker
