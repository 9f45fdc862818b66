// SessionSet: starting sessions, the balancers per upstream, preparing the shared lookups at
// worker start, closing every session.
#include "worker/proxy/session_set.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "worker/proxy/session.h"

namespace ferry::worker {

void SessionSet::start(event::EventLoop& loop, event::Connection& client, const conf::Proxy& proxy,
                       const conf::Config& cfg) {
  // A routing proxy without a default upstream has no balancer until its route is chosen.
  Balancer* b = proxy.upstream.empty() && !proxy.upstream_address
                    ? nullptr
                    : &balancer(StatsTable::upstream_name_of(proxy), cfg);
  (new Session(loop, shared_, proxy, b, client))->start();
}

Session* SessionSet::adopt(event::EventLoop& loop, const conf::Config& cfg,
                           std::span<const event::Listening* const> listening, SessionRecord& r,
                           event::UniqueFd client_fd, event::UniqueFd upstream_fd,
                           const char*& refused) {
  const event::Listening* ls = nullptr;
  for (const event::Listening* l : listening) {
    if (!l->status && l->address == r.listen) ls = l;
  }
  if (ls == nullptr) {
    refused = "this generation does not listen on its address";
    return nullptr;
  }
  const auto& proxy = *static_cast<const conf::Proxy*>(ls->data);
  if (proxy.name != r.proxy) {
    refused = "its listen address belongs to another proxy now";
    return nullptr;
  }
  if (proxy.reload_sessions != conf::ReloadSessions::move) {
    refused = "reload_sessions is \"drain\"";
    return nullptr;
  }
  if (loop.pool().free_count() < kFdsPerSession) {
    refused = "worker_connections is full";
    return nullptr;
  }
  // A routed session's server is one of its route's upstream, which must still be one of this
  // configuration's (a reload may have renamed or removed it): else it stays in the old worker
  // rather than run here without its servers.
  const std::string_view upstream_name =
      r.upstream.empty() ? StatsTable::upstream_name_of(proxy) : std::string_view(r.upstream);
  if (std::none_of(cfg.upstreams.begin(), cfg.upstreams.end(),
                   [&](const conf::Upstream& u) { return u.name == upstream_name; })) {
    refused = "its upstream is not in this configuration";
    return nullptr;
  }
  event::Connection* client = loop.get_connection(std::move(client_fd));
  event::Connection* upstream = loop.get_connection(std::move(upstream_fd));
  client->listening = ls;
  Session* s =
      Session::adopt(loop, shared_, proxy, balancer(upstream_name, cfg), *client, *upstream, r);
  for (event::Connection* c : {client, upstream}) {
    if (auto ec = loop.add_connection(*c)) {
      spdlog::error("cannot watch a moved session's socket: {}", ec.message());
      s->forget();
      refused = "its sockets cannot be watched";
      return nullptr;
    }
  }
  return s;
}

void SessionSet::prepare_listening(const event::Listening& ls, const conf::Proxy& proxy) {
  set_socket_options(ls.fd.get(), proxy, true);
}

void SessionSet::prepare(const conf::Config& cfg) {
  for (const conf::Proxy& proxy : cfg.proxies) {
    shared_.access_log(proxy);
    shared_.rules(proxy);
    shared_.senders(proxy);
    shared_.proxy_stats(proxy);
    if (proxy.routes.empty()) continue;
    std::vector<Balancer*> targets;
    std::vector<ServerCounters*> stats;
    const std::string key = StatsTable::routes_key(proxy.name);
    for (const conf::Route& route : proxy.routes) {
      targets.push_back(&balancer(route.upstream, cfg));
      stats.push_back(shared_.server_stats(key, route.name));
    }
    Balancer* fallback = proxy.upstream.empty() ? nullptr : &balancer(proxy.upstream, cfg);
    stats.push_back(shared_.server_stats(key, RouteTable::kDefaultName));
    shared_.routes_.insert_or_assign(&proxy, RouteTable(proxy, targets, fallback, stats));
  }
}

void SessionSet::close_all() noexcept {
  auto* saved = shared_.on_empty_;
  shared_.on_empty_ = nullptr;  // the caller is tearing down already
  while (Session* s = shared_.first()) s->close(EndReason::shutdown);
  shared_.on_empty_ = saved;
}

void SessionSet::count_refused(const conf::Proxy& proxy) {
  if (ProxyCounters* c = shared_.proxy_stats(proxy)) {
    stat_add(c->accepted);
    stat_add(c->handled);
    stat_add(c->no_connections);
  }
}

Balancer& SessionSet::balancer(std::string_view name, const conf::Config& cfg) {
  // Keyed by upstream, as nginx keeps its peers' state per upstream block: proxies (and
  // routes) sharing an upstream share its rotation, connection counts and passive failures.
  auto it = balancers_.find(name);
  if (it != balancers_.end()) return it->second;
  for (std::size_t i = 0; i < cfg.upstreams.size(); ++i) {
    const conf::Upstream& u = cfg.upstreams[i];
    if (u.name != name) continue;
    ServerHealth* slots = health_ != nullptr && u.health_check && !u.servers.empty()
                              ? &health_->at(cfg, i, 0)
                              : nullptr;
    // max_conns counts every worker's sessions, on the generation's board.
    std::vector<SharedConns> shared;
    if (health_ != nullptr) {
      for (std::size_t s = 0; s < u.servers.size(); ++s) {
        shared.push_back(health_->conns(cfg, i, s, shared_.stats_slot()));
      }
    }
    Balancer& b = balancers_
                      .emplace(std::string(name),
                               Balancer(u, slots, shared.empty() ? nullptr : shared.data()))
                      .first->second;
    for (const auto& [server, addresses] : resolved_) b.set_addresses(*server, addresses);
    apply_admin_to(b, u);
    return b;
  }
  return balancers_.emplace(std::string(name), Balancer()).first->second;  // validated: not reached
}

void SessionSet::update_addresses(const conf::Server& server,
                                  const std::vector<conf::Endpoint>& addresses) {
  resolved_[&server] = addresses;
  for (auto& [upstream, balancer] : balancers_) balancer.set_addresses(server, addresses);
}

}  // namespace ferry::worker
