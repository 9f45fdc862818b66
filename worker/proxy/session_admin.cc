// SessionSet and the operator's runtime settings of servers: admin states and weights on the
// balancers, servers added at run time, and the sessions an operator kills.
#include <spdlog/spdlog.h>

#include "conf/values.h"
#include "worker/proxy/session.h"
#include "worker/proxy/session_set.h"

namespace ferry::worker {
namespace {

// When the operator made `r` ready, on the balancers' clock (the steady clock, as the master's).
event::TimePoint since(const AdminRecord& r) {
  return r.ready_since_ms > 0 ? event::TimePoint(event::Msec(r.ready_since_ms))
                              : event::TimePoint{};
}

}  // namespace

const conf::Server* SessionSet::server_of(const conf::Config& cfg, const AdminRecord& r) const {
  if (r.added) {
    for (const AddedServer& a : added_) {
      if (a.upstream == r.upstream && a.server.name() == r.server) return &a.server;
    }
    return nullptr;
  }
  for (const conf::Upstream& u : cfg.upstreams) {
    if (u.name != r.upstream) continue;
    for (const conf::Server& s : u.servers) {
      if (s.name() == r.server) return &s;
    }
  }
  return nullptr;
}

void SessionSet::apply_admin_to(Balancer& b, const conf::Upstream& u) {
  for (const AdminRecord& r : admin_) {
    if (r.upstream != u.name) continue;
    const conf::Server* s = nullptr;
    if (r.added) {
      for (const AddedServer& a : added_) {
        if (a.upstream == r.upstream && a.server.name() == r.server) s = &a.server;
      }
      if (s != nullptr && !b.has_server(*s)) {
        b.add_server(*s);
        // A name's addresses, when the resolver found them before this balancer was made.
        if (const auto it = resolved_.find(s); it != resolved_.end())
          b.set_addresses(*s, it->second);
      }
    } else {
      for (const conf::Server& cs : u.servers) {
        if (cs.name() == r.server) s = &cs;
      }
    }
    if (s != nullptr) b.set_admin(*s, r.state, r.weight, since(r));
  }
  // A server whose record went (the operator set it back, a reload dropped it) is as configured.
  for (const conf::Server& cs : u.servers) {
    const bool named = std::any_of(admin_.begin(), admin_.end(), [&](const AdminRecord& r) {
      return !r.added && r.upstream == u.name && r.server == cs.name();
    });
    if (!named) b.set_admin(cs, AdminState::ready, 0);
  }
  for (const AddedServer& a : added_) {
    if (a.upstream != u.name) continue;
    const bool named = std::any_of(admin_.begin(), admin_.end(), [&](const AdminRecord& r) {
      return r.added && r.upstream == a.upstream && r.server == a.server.name();
    });
    if (!named && b.has_server(a.server)) b.set_admin(a.server, AdminState::removed, 0);
  }
}

std::vector<std::pair<std::string_view, const conf::Server*>> SessionSet::added_names() const {
  std::vector<std::pair<std::string_view, const conf::Server*>> out;
  for (const AddedServer& a : added_) {
    if (a.server.address.length != 0) continue;
    const bool named = std::any_of(admin_.begin(), admin_.end(), [&](const AdminRecord& r) {
      return r.added && r.upstream == a.upstream && r.server == a.server.name();
    });
    if (named) out.emplace_back(a.upstream, &a.server);
  }
  return out;
}

std::vector<const conf::Server*> SessionSet::in_maintenance(const conf::Config& cfg) const {
  std::vector<const conf::Server*> out;
  for (const AdminRecord& r : admin_) {
    if (r.added || r.state != AdminState::maint) continue;
    if (const conf::Server* s = server_of(cfg, r)) out.push_back(s);
  }
  return out;
}

bool SessionSet::apply_admin(const conf::Config& cfg, std::vector<AdminRecord> records,
                             bool first) {
  admin_ = std::move(records);
  // Servers added at run time: made once, kept (peers and sessions point at them).
  for (const AdminRecord& r : admin_) {
    if (!r.added || server_of(cfg, r) != nullptr) continue;
    auto parsed = conf::parse_address(r.server, false);
    auto* address = std::get_if<conf::Address>(&parsed);
    if (address == nullptr || (address->length == 0 && !conf::is_host_name(r.server))) {
      spdlog::warn("runtime server {}/{}: not an address; left out", r.upstream, r.server);
      continue;
    }
    AddedServer& a = added_.emplace_back();
    a.upstream = r.upstream;
    a.server.address = *address;
    a.server.weight = r.weight > 0 ? r.weight : 1;
    a.server.backup = r.backup;
    // A host name has no address until the resolver finds its own (added_names()).
    if (address->length != 0) {
      a.server.addresses = {conf::Endpoint{*address, a.server.weight, r.backup, {}}};
    }
    for (const conf::Upstream& u : cfg.upstreams) {
      if (u.name == r.upstream) a.server.slow_start = event::Msec(r.slow_start_ms);
      if (u.name == r.upstream && r.slow_start_ms == 0) a.server.slow_start = u.slow_start;
    }
  }
  for (auto& [name, b] : balancers_) {
    for (const conf::Upstream& u : cfg.upstreams) {
      if (u.name == name) apply_admin_to(b, u);
    }
  }
  // Kills: servers whose epoch grew since the last look. The master numbers every kill above the
  // last (one count for all servers), so a kill is new when its epoch is above the highest this
  // worker has seen: a record that comes back with an older or no epoch (a server deleted and
  // added again) kills nothing. Only the sessions there are now: a later one is not the kill's.
  const std::uint32_t seen = kills_seen_;
  bool doomed = false;
  for (const AdminRecord& r : admin_) {
    kills_seen_ = std::max(kills_seen_, r.kill_epoch);
    if (first || r.kill_epoch <= seen) continue;
    if (const conf::Server* s = server_of(cfg, r)) {
      doomed_.push_back({s, shared_.last_serial()});
      doomed = true;
    }
  }
  return doomed;
}

bool SessionSet::kill_some(std::size_t max, std::size_t& killed) {
  for (Session* s = shared_.first(); s != nullptr;) {
    Session* next = s->next;  // close() unlinks and frees `s`
    const Peer* p = s->peer();
    const auto doomed = std::find_if(doomed_.begin(), doomed_.end(), [&](const Doomed& d) {
      return p != nullptr && d.server == p->server && s->serial() <= d.up_to_serial;
    });
    if (doomed != doomed_.end() && s->phase() != Session::Phase::moving) {
      if (killed_now_ == max) {
        killed_now_ = 0;
        return true;  // the rest at the next turn of the loop
      }
      s->close(EndReason::killed);
      ++killed_now_;
      ++killed;
    }
    s = next;
  }
  killed_now_ = 0;
  doomed_.clear();
  return false;
}

}  // namespace ferry::worker
