// StatsTable: the registry, the per-worker blocks and their folding (checked: the blocks are
// the workers'), the master block's seqlocked reload record, and the snapshot that sums them.
#include "worker/stats/stats_table.h"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <iterator>

#include "worker/stats/stats_detail.h"
#include "worker/stats/stats_layout.h"

namespace ferry::worker {
namespace {

using namespace stats_detail;

// A server's configuration word: the epoch of the latest configuration that has it, and flags.
constexpr std::uint64_t kBackup = 1;
constexpr std::uint64_t kDown = 2;
constexpr std::uint64_t kChecked = 4;  // its upstream has an active health check

// A server's health word, one store so that no reader sees half a check: the time in the low
// 48 bits, then whether there is a result, whether it passed, whether the server is down.
constexpr std::uint64_t kTimeMask = (std::uint64_t{1} << 48) - 1;
constexpr std::uint64_t kHasResult = std::uint64_t{1} << 48;
constexpr std::uint64_t kLastOk = std::uint64_t{1} << 49;
constexpr std::uint64_t kHealthDown = std::uint64_t{1} << 50;

// A block's entry copied out of memory a worker writes: returns how many of its counters are
// past the ceiling (garbage).
template <typename Counters, typename Totals, typename Fields>
std::size_t read_entry(const Counters& from, Totals& values, const Fields& fields) noexcept {
  std::size_t wrong = 0;
  for (const auto& f : fields) {
    values.*f.total = (from.*f.counter).load(kRelaxed);
    if (values.*f.total >= StatsTable::kCeiling) ++wrong;
  }
  return wrong;
}
// Clamps the relations a live worker keeps only between two stores: a session being closed is
// handled a moment before it is no longer active, and a reader of a live block may see a later
// `handled` than `accepted`. Returns how many relations are broken beyond that, when `final`
// (the worker is dead and its block still: off by at most the one session it died amid).
std::size_t check_proxy(Snapshot::Proxy& v, bool final) noexcept {
  std::size_t wrong = 0;
  if (final && v.handled > v.accepted + 1) ++wrong;
  v.handled = std::min(v.handled, v.accepted);
  if (final && v.active > v.accepted - v.handled + 1) ++wrong;
  v.active = std::min(v.active, v.accepted - v.handled);
  return wrong;
}
std::size_t check_server(Snapshot::Server& v, bool final) noexcept {
  std::size_t wrong = 0;
  if (final && v.active > v.sessions) ++wrong;
  v.active = std::min(v.active, v.sessions);
  return wrong;
}

template <typename Totals, typename Fields>
void add_values(const Totals& from, Totals& to, const Fields& fields) noexcept {
  for (const auto& f : fields) to.*f.total = saturating_add(to.*f.total, from.*f.total);
}

// The retired block is the master's: only values it checked go there.
template <typename Counters, typename Totals, typename Fields>
void retire_values(const Totals& from, Counters& to, const Fields& fields) noexcept {
  for (const auto& f : fields) {
    if (f.gauge) continue;
    (to.*f.counter).store(ceiling_add((to.*f.counter).load(kRelaxed), from.*f.total), kRelaxed);
  }
}

template <typename Counters, typename Fields>
void zero(Counters& c, const Fields& fields) noexcept {
  for (const auto& f : fields) (c.*f.counter).store(0, kRelaxed);
}

bool same(const char* stored, std::size_t length, std::string_view name) noexcept {
  return length == name.size() && std::memcmp(stored, name.data(), length) == 0;
}

std::int64_t wall_clock() noexcept { return static_cast<std::int64_t>(::time(nullptr)); }

}  // namespace

std::string_view to_string(ServerState s) noexcept {
  constexpr std::string_view kNames[] = {"up", "down", "backup", "draining", "removed", "failed"};
  const auto i = static_cast<std::size_t>(s);
  return i < std::size(kNames) ? kNames[i] : "up";
}

// The two share their names: nothing yet, then how the last one went.
std::string_view to_string(CheckResult r) noexcept {
  constexpr std::string_view kNames[] = {"none", "ok", "failed"};
  const auto i = static_cast<std::size_t>(r);
  return i < std::size(kNames) ? kNames[i] : "none";
}

std::string_view to_string(ReloadResult r) noexcept {
  return to_string(static_cast<CheckResult>(r));
}

// ---- the master ------------------------------------------------------------------------------

// The master reads its own counts; a worker the registry's, bounded all the same.
std::uint32_t StatsTable::proxies_known() const noexcept {
  if (writable_ != nullptr) return proxy_count_;
  return std::min<std::uint32_t>(registry_->proxy_count.load(std::memory_order_acquire),
                                 kMaxProxies);
}

std::uint32_t StatsTable::servers_known() const noexcept {
  if (writable_ != nullptr) return server_count_;
  return std::min<std::uint32_t>(registry_->server_count.load(std::memory_order_acquire),
                                 kMaxServers);
}

std::optional<std::size_t> StatsTable::register_proxy(std::string_view name) noexcept {
  if (writable_ == nullptr) return std::nullopt;
  if (auto i = proxy_index(name)) return i;
  const std::uint32_t n = proxy_count_;
  if (name.size() > kMaxName) return std::nullopt;
  if (n >= max_proxies_) {
    SeqWrite w(writable_->fold_seq);  // the old name and totals go, the new name comes, at once
    const auto i = reclaim_proxy();
    if (!i) return std::nullopt;
    Registry::ProxyEntry& e = writable_->proxies[*i];
    e.length = static_cast<std::uint16_t>(name.size());
    std::memcpy(e.name, name.data(), name.size());
    return i;
  }
  // A live worker cannot have counted at an index not registered yet: whatever is there is
  // garbage that a worker wrote, and would be blamed on that block's worker.
  for (std::size_t slot = 0; slot < kSlots; ++slot) {
    if (worker_epochs_[slot] != 0) zero(counters_->slots[slot].proxies[n], kProxyFields);
  }
  Registry::ProxyEntry& e = writable_->proxies[n];
  e.length = static_cast<std::uint16_t>(name.size());
  std::memcpy(e.name, name.data(), name.size());
  proxy_count_ = n + 1;
  writable_->proxy_count.store(n + 1, std::memory_order_release);  // the entry is complete before
  return n;
}

std::optional<std::size_t> StatsTable::register_server(std::string_view upstream,
                                                       std::string_view address) noexcept {
  if (writable_ == nullptr) return std::nullopt;
  if (auto i = server_index(upstream, address)) return i;
  const std::uint32_t n = server_count_;
  if (upstream.size() > kMaxName || address.size() > kMaxAddress) return std::nullopt;
  const auto write = [&](Registry::ServerEntry& e) {
    e.upstream_length = static_cast<std::uint16_t>(upstream.size());
    std::memcpy(e.upstream, upstream.data(), upstream.size());
    e.address_length = static_cast<std::uint16_t>(address.size());
    std::memcpy(e.address, address.data(), address.size());
  };
  if (n >= max_servers_) {
    SeqWrite w(writable_->fold_seq);
    const auto i = reclaim_server();
    if (!i) return std::nullopt;
    write(writable_->servers[*i]);
    return i;
  }
  for (std::size_t slot = 0; slot < kSlots; ++slot) {
    if (worker_epochs_[slot] == 0) continue;
    zero(counters_->slots[slot].servers[n], kServerFields);
    counters_->slots[slot].servers[n].failed.store(0, kRelaxed);
  }
  // Its health word too (workers may write it): garbage there would show the server down until
  // its checker first writes.
  counters_->health[n].store(0, kRelaxed);
  write(writable_->servers[n]);
  server_count_ = n + 1;
  writable_->server_count.store(n + 1, std::memory_order_release);
  return n;
}

std::size_t StatsTable::register_config(const conf::Config& cfg) noexcept {
  if (writable_ == nullptr) return 0;
  Registry& r = *writable_;
  // Every entry of this configuration is stamped with its epoch before the epoch is published:
  // a reader that already sees the new epoch sees every entry it covers.
  const std::uint64_t epoch = r.master.epoch.load(kRelaxed) + 1;
  std::size_t missed = 0;
  // Known names first, then new ones: a name this configuration has is stamped before any is
  // reclaimed for a new one.
  for (const bool known : {true, false}) {
    const auto server = [&](std::string_view upstream, std::string_view address,
                            std::uint64_t flags) {
      const auto i = known ? server_index(upstream, address) : register_server(upstream, address);
      if (i) {
        r.servers[*i].config.store(epoch << kEpochShift | flags, kRelaxed);
      } else if (!known) {
        ++missed;
      }
    };
    for (const auto& u : cfg.upstreams) {
      const std::uint64_t checked = u.health_check ? kChecked : 0;
      for (const auto& s : u.servers) {
        server(u.name, s.name(), (s.backup ? kBackup : 0) | (s.down ? kDown : 0) | checked);
      }
    }
    for (const auto& p : cfg.proxies) {
      if (const auto i = known ? proxy_index(p.name) : register_proxy(p.name)) {
        r.proxies[*i].epoch.store(epoch, kRelaxed);
      } else if (!known) {
        ++missed;
      }
      if (p.upstream.empty() && p.upstream_address) {
        server(upstream_name_of(p), p.upstream_address->text, 0);
      }
      // (The key built on the stack: this allocates nothing.) A name too long for it is one
      // the registry would refuse too.
      char key[kRoutesPrefix.size() + kMaxName];
      if (!p.routes.empty() && p.name.size() <= kMaxName) {
        std::memcpy(key, kRoutesPrefix.data(), kRoutesPrefix.size());
        std::memcpy(key + kRoutesPrefix.size(), p.name.data(), p.name.size());
        const std::string_view k(key, kRoutesPrefix.size() + p.name.size());
        for (const conf::Route& route : p.routes) server(k, route.name, 0);
        if (!p.upstream.empty()) server(k, "default", 0);
      }
    }
  }
  r.master.epoch.store(epoch, std::memory_order_release);
  return missed;
}

void StatsTable::set_generation(int generation) noexcept {
  if (writable_ != nullptr) writable_->master.generation.store(generation, kRelaxed);
}

void StatsTable::reload_succeeded(std::int64_t at) noexcept {
  if (writable_ == nullptr) return;
  Registry::MasterBlock& m = writable_->master;
  SeqWrite w(m.reload_seq);
  m.reloads_ok.store(m.reloads_ok.load(kRelaxed) + 1, kRelaxed);
  m.last_reload.store(static_cast<std::uint8_t>(ReloadResult::ok), kRelaxed);
  m.last_reload_at.store(at, kRelaxed);
}

void StatsTable::reload_failed(std::string_view error, std::int64_t at) noexcept {
  if (writable_ == nullptr) return;
  Registry::MasterBlock& m = writable_->master;
  std::size_t n = std::min(error.size(), kMaxError);
  // Cut at a character's start, not inside a UTF-8 sequence.
  if (n < error.size()) {
    while (n > 0 && (static_cast<unsigned char>(error[n]) & 0xc0) == 0x80) --n;
  }
  SeqWrite w(m.reload_seq);
  m.reloads_failed.store(m.reloads_failed.load(kRelaxed) + 1, kRelaxed);
  m.last_reload.store(static_cast<std::uint8_t>(ReloadResult::failed), kRelaxed);
  m.last_reload_at.store(at, kRelaxed);
  m.error_length.store(static_cast<std::uint32_t>(n), kRelaxed);
  for (std::size_t i = 0; i * 8 < n; ++i) {
    std::uint64_t word = 0;
    std::memcpy(&word, error.data() + i * 8, std::min<std::size_t>(8, n - i * 8));
    m.error[i].store(word, kRelaxed);
  }
}

void StatsTable::worker_started(std::size_t slot, pid_t pid, int generation,
                                std::int64_t started) noexcept {
  if (slot >= kSlots || writable_ == nullptr) return;
  // Forked with the latest configuration registered (the master registers each before forking).
  worker_epochs_[slot] = std::max<std::uint64_t>(writable_->master.epoch.load(kRelaxed), 1);
  SeqWrite w(writable_->fold_seq);
  // Every entry, not only the registered ones: a worker may have written garbage at an index
  // not registered yet into this free slot, which would be blamed on the next worker.
  wipe(counters_->slots[slot]);
  counters_->gauges[slot].connections.store(0, kRelaxed);
  Registry::WorkerEntry& e = writable_->workers[slot];
  e.generation.store(generation, kRelaxed);
  e.started.store(started, kRelaxed);
  e.pid.store(pid, kRelaxed);
}

void StatsTable::worker_forked(std::size_t slot, pid_t pid) noexcept {
  if (slot >= kSlots || writable_ == nullptr) return;
  SeqWrite w(writable_->fold_seq);
  writable_->workers[slot].pid.store(pid, kRelaxed);
}

std::size_t StatsTable::fold(std::size_t slot) noexcept {
  if (slot >= kSlots || writable_ == nullptr) return 0;
  worker_epochs_[slot] = 0;
  Registry& r = *writable_;
  StatsBlock& b = counters_->slots[slot];
  // Checked before any is kept: a worker's garbage is left out whole, not in part.
  Snapshot::Proxy* proxies = fold_proxies_.get();
  Snapshot::Server* servers = fold_servers_.get();
  std::size_t wrong = 0;
  for (std::uint32_t p = 0; p < proxy_count_; ++p) {
    wrong += read_entry(b.proxies[p], proxies[p], kProxyFields);
    wrong += check_proxy(proxies[p], true);
  }
  for (std::uint32_t s = 0; s < server_count_; ++s) {
    wrong += read_entry(b.servers[s], servers[s], kServerFields);
    wrong += check_server(servers[s], true);
  }
  {
    SeqWrite w(r.fold_seq);
    for (std::uint32_t p = 0; p < proxy_count_; ++p) {
      if (wrong == 0) {
        // The dead worker's open sessions ended with it: handled, so that accepted = handled +
        // active still holds.
        proxies[p].handled += proxies[p].active;
        retire_values(proxies[p], r.retired.proxies[p], kProxyFields);
      }
      zero(b.proxies[p], kProxyFields);
    }
    for (std::uint32_t s = 0; s < server_count_; ++s) {
      if (wrong == 0) retire_values(servers[s], r.retired.servers[s], kServerFields);
      zero(b.servers[s], kServerFields);
      b.servers[s].failed.store(0, kRelaxed);  // the dead worker's verdict goes with it
    }
    r.workers[slot].pid.store(0, kRelaxed);
    counters_->gauges[slot].connections.store(0, kRelaxed);
  }
  return wrong;
}

// ---- a worker --------------------------------------------------------------------------------

// A worker looks names up under fold_seq: the master may be writing a reclaimed index's name.
template <typename Scan>
void StatsTable::scan_names(Scan&& scan) const noexcept {
  if (writable_ != nullptr) {
    scan();
  } else {
    read_consistent(registry_->fold_seq, scan);
  }
}

std::optional<std::size_t> StatsTable::proxy_index(std::string_view name) const noexcept {
  const std::uint32_t n = proxies_known();
  std::optional<std::size_t> found;
  scan_names([&] {
    found.reset();
    for (std::uint32_t i = 0; i < n; ++i) {
      const Registry::ProxyEntry& e = registry_->proxies[i];
      if (same(e.name, std::min<std::size_t>(e.length, kMaxName), name)) {
        found = i;
        return;
      }
    }
  });
  return found;
}

std::optional<std::size_t> StatsTable::server_index(std::string_view upstream,
                                                    std::string_view address) const noexcept {
  const std::uint32_t n = servers_known();
  std::optional<std::size_t> found;
  scan_names([&] {
    found.reset();
    for (std::uint32_t i = 0; i < n; ++i) {
      const Registry::ServerEntry& e = registry_->servers[i];
      if (same(e.upstream, std::min<std::size_t>(e.upstream_length, kMaxName), upstream) &&
          same(e.address, std::min<std::size_t>(e.address_length, kMaxAddress), address)) {
        found = i;
        return;
      }
    }
  });
  return found;
}

ProxyCounters* StatsTable::proxy_counters(std::size_t slot, std::string_view proxy_name) noexcept {
  if (slot >= kSlots) return nullptr;
  const auto i = proxy_index(proxy_name);
  return i ? &counters_->slots[slot].proxies[*i] : nullptr;
}

ServerCounters* StatsTable::server_counters(std::size_t slot, std::string_view upstream,
                                            std::string_view server_address) noexcept {
  if (slot >= kSlots) return nullptr;
  const auto i = server_index(upstream, server_address);
  return i ? &counters_->slots[slot].servers[*i] : nullptr;
}

void StatsTable::set_connections(std::size_t slot, std::uint64_t connections) noexcept {
  if (slot < kSlots) counters_->gauges[slot].connections.store(connections, kRelaxed);
}

void StatsTable::set_health(std::size_t server, int generation, bool up, bool last_check_ok,
                            std::int64_t at) noexcept {
  if (server >= servers_known()) return;
  if (generation != registry_->master.generation.load(kRelaxed)) return;
  const std::uint64_t word =
      (static_cast<std::uint64_t>(std::max<std::int64_t>(at, 0)) & kTimeMask) | kHasResult |
      (last_check_ok ? kLastOk : 0) | (up ? 0 : kHealthDown);
  counters_->health[server].store(word, kRelaxed);
}

// ---- anyone ----------------------------------------------------------------------------------

Snapshot StatsTable::snapshot() const { return snapshot(wall_clock()); }

Snapshot StatsTable::snapshot(std::int64_t now) const {
  Snapshot s = std::move(*take_snapshot(now, Patience::wait));
  const auto is_routes = [](const Snapshot::Upstream& u) {
    return u.name.starts_with(kRoutesPrefix);
  };
  for (Snapshot::Upstream& u : s.upstreams) {
    if (is_routes(u))
      s.routes.push_back({u.name.substr(kRoutesPrefix.size()), std::move(u.servers)});
  }
  std::erase_if(s.upstreams, is_routes);
  return s;
}

std::optional<Snapshot> StatsTable::take_snapshot(std::int64_t now, Patience patience) const {
  // Enough for an honest writer's few stores; a segment that never settles is given up on.
  constexpr std::uint32_t kBoundedTries = 256;
  const auto consistent = [patience](const std::atomic<std::uint64_t>& seq, auto&& read) {
    if (patience == Patience::none) {
      read();
      return true;
    }
    return read_consistent(seq, read, patience == Patience::bounded ? kBoundedTries : 0);
  };
  const Registry& r = *registry_;
  const Registry::MasterBlock& m = r.master;
  Snapshot s;
  s.version.assign(m.version, strnlen(m.version, kMaxVersion));
  s.pid = m.pid.load(kRelaxed);
  s.started = m.started.load(kRelaxed);
  s.now = now;
  s.generation = m.generation.load(kRelaxed);

  char error[kMaxError];
  std::size_t error_length = 0;
  const bool reloads_read = consistent(m.reload_seq, [&] {
    s.reloads_ok = m.reloads_ok.load(kRelaxed);
    s.reloads_failed = m.reloads_failed.load(kRelaxed);
    s.last_reload =
        static_cast<ReloadResult>(std::min<std::uint8_t>(m.last_reload.load(kRelaxed), 2));
    s.last_reload_at = m.last_reload_at.load(kRelaxed);
    error_length = std::min<std::size_t>(m.error_length.load(kRelaxed), kMaxError);
    for (std::size_t i = 0; i * 8 < error_length; ++i) {
      const std::uint64_t word = m.error[i].load(kRelaxed);
      std::memcpy(error + i * 8, &word, 8);
    }
  });
  if (!reloads_read) return std::nullopt;
  s.last_reload_error.assign(error, error_length);

  const std::uint64_t epoch = m.epoch.load(std::memory_order_acquire);
  const std::uint32_t proxies = proxies_known();
  const std::uint32_t servers = servers_known();
  std::vector<Snapshot::Proxy> proxy_totals;
  std::vector<Snapshot::Server> server_totals;
  std::vector<std::uint64_t> failed;  // the latest passive failure a live worker publishes
  // Names and their configuration words are read with the totals: an index reclaimed for a new
  // name (under fold_seq) pairs the new name with the new totals.
  std::vector<std::uint64_t> configs;  // a proxy's epoch, a server's configuration word
  std::vector<std::string> upstream_names;
  Snapshot::Proxy reclaimed_proxies;
  Snapshot::Server reclaimed_servers;
  const bool totals_read = consistent(r.fold_seq, [&] {
    proxy_totals.assign(proxies, {});
    server_totals.assign(servers, {});
    failed.assign(servers, 0);
    configs.assign(proxies + servers, 0);
    upstream_names.assign(servers, {});
    s.workers.clear();
    for (std::uint32_t p = 0; p < proxies; ++p) {
      const Registry::ProxyEntry& e = r.proxies[p];
      proxy_totals[p].name.assign(e.name, std::min<std::size_t>(e.length, kMaxName));
      configs[p] = e.epoch.load(kRelaxed);
    }
    for (std::uint32_t v = 0; v < servers; ++v) {
      const Registry::ServerEntry& e = r.servers[v];
      server_totals[v].address.assign(e.address,
                                      std::min<std::size_t>(e.address_length, kMaxAddress));
      upstream_names[v].assign(e.upstream, std::min<std::size_t>(e.upstream_length, kMaxName));
      configs[proxies + v] = e.config.load(kRelaxed);
    }
    reclaimed_proxies = {};
    reclaimed_servers = {};
    if (read_entry(r.reclaimed_proxies, reclaimed_proxies, kProxyFields) != 0) {
      reclaimed_proxies = {};
    }
    if (read_entry(r.reclaimed_servers, reclaimed_servers, kServerFields) != 0) {
      reclaimed_servers = {};
    }
    // An entry of a worker's block with a counter past the ceiling is left out: garbage. The
    // retired block is the master's (sealed, and only checked values go there): taken whole.
    const auto add_block = [&](const StatsBlock& b, bool trusted) {
      for (std::uint32_t p = 0; p < proxies; ++p) {
        Snapshot::Proxy v;
        if (read_entry(b.proxies[p], v, kProxyFields) != 0 && !trusted) continue;
        check_proxy(v, false);
        add_values(v, proxy_totals[p], kProxyFields);
      }
      for (std::uint32_t i = 0; i < servers; ++i) {
        Snapshot::Server v;
        if (read_entry(b.servers[i], v, kServerFields) != 0 && !trusted) continue;
        check_server(v, false);
        add_values(v, server_totals[i], kServerFields);
      }
    };
    add_block(r.retired, true);
    add_block(r.inherited, true);
    for (std::size_t slot = 0; slot < kSlots; ++slot) {
      const Registry::WorkerEntry& e = r.workers[slot];
      const pid_t pid = e.pid.load(kRelaxed);
      if (pid == 0) continue;  // nothing counted there: its pages stay untouched
      add_block(counters_->slots[slot], false);
      for (std::uint32_t v = 0; v < servers; ++v) {
        const std::uint64_t f = counters_->slots[slot].servers[v].failed.load(kRelaxed);
        if (static_cast<std::uint32_t>(f) > static_cast<std::uint32_t>(failed[v])) failed[v] = f;
      }
      const std::uint64_t connections = counters_->gauges[slot].connections.load(kRelaxed);
      s.workers.push_back({pid, e.generation.load(kRelaxed), e.started.load(kRelaxed),
                           connections < kCeiling ? connections : 0});
    }
  });
  if (!totals_read) return std::nullopt;

  for (std::uint32_t p = 0; p < proxies; ++p) {
    Snapshot::Proxy& t = proxy_totals[p];
    t.configured = configs[p] >= epoch;
    s.proxies.push_back(std::move(t));
  }
  if (reclaimed_proxies != Snapshot::Proxy{}) {
    reclaimed_proxies.name = kReclaimed;
    reclaimed_proxies.configured = false;
    s.proxies.push_back(std::move(reclaimed_proxies));
  }
  for (std::uint32_t v = 0; v < servers; ++v) {
    Snapshot::Server& t = server_totals[v];
    const std::uint64_t config = configs[proxies + v];
    const std::uint64_t health = counters_->health[v].load(kRelaxed);
    const bool checked = (config & kChecked) != 0;
    // An entry stamped with a newer epoch than the one read belongs to a configuration being
    // published right now: configured.
    // A check that passed after the failure cleared it (the balancer's rule, in seconds).
    const auto failed_since = static_cast<std::int64_t>(failed[v] >> 32);
    const bool cleared = checked && (health & kHasResult) != 0 && (health & kLastOk) != 0 &&
                         static_cast<std::int64_t>(health & kTimeMask) > failed_since;
    if ((config >> kEpochShift) < epoch) {
      t.state = t.active > 0 ? ServerState::draining : ServerState::removed;
    } else if ((config & kDown) != 0 || (checked && (health & kHealthDown) != 0)) {
      t.state = ServerState::down;
    } else if (static_cast<std::uint32_t>(failed[v]) > now && !cleared) {
      t.state = ServerState::failed;
    } else if ((config & kBackup) != 0) {
      t.state = ServerState::backup;
    } else {
      t.state = ServerState::up;
    }
    if (checked && (health & kHasResult) != 0) {
      t.health = (health & kLastOk) != 0 ? CheckResult::ok : CheckResult::failed;
      t.health_at = static_cast<std::int64_t>(health & kTimeMask);
    }
    const std::string_view upstream = upstream_names[v];
    auto u = std::find_if(s.upstreams.begin(), s.upstreams.end(),
                          [&](const Snapshot::Upstream& x) { return x.name == upstream; });
    if (u == s.upstreams.end()) {
      s.upstreams.push_back({std::string(upstream), {}});
      u = s.upstreams.end() - 1;
    }
    u->servers.push_back(std::move(t));
  }
  if (reclaimed_servers != Snapshot::Server{}) {
    reclaimed_servers.address = kReclaimed;
    reclaimed_servers.state = ServerState::removed;
    s.upstreams.push_back({std::string(kReclaimed), {std::move(reclaimed_servers)}});
  }
  return s;
}

}  // namespace ferry::worker
