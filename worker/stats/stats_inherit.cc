// StatsTable::inherit(): a new master of a binary upgrade takes the old master's totals in, by
// name, from segments it cannot trust (any old worker could have written them).
#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>
#include <vector>

#include "worker/stats/stats_detail.h"
#include "worker/stats/stats_layout.h"
#include "worker/stats/stats_table.h"

namespace ferry::worker {
namespace {

using namespace stats_detail;

// A name the configuration could have given: not empty, no control characters. Anything else in
// an old registry is garbage, and must not take a place in ours.
bool plausible(std::string_view name, std::size_t max) noexcept {
  return !name.empty() && name.size() <= max && std::none_of(name.begin(), name.end(), [](char c) {
    const auto b = static_cast<unsigned char>(c);
    return b < 0x20 || b == 0x7f;
  });
}

// Every counter of an old entry under the ceiling (a sum of blocks may reach past it: garbage),
// and at least one not zero (an entry with nothing to take takes no place).
template <typename Totals, typename Fields>
bool worth_taking(const Totals& v, const Fields& fields) noexcept {
  bool any = false;
  for (const auto& f : fields) {
    if (v.*f.total >= StatsTable::kCeiling) return false;
    any = any || v.*f.total != 0;
  }
  return any;
}

// Every counter of an old entry zero.
template <typename Totals, typename Fields>
bool all_zero(const Totals& v, const Fields& fields) noexcept {
  return std::all_of(std::begin(fields), std::end(fields),
                     [&](const auto& f) { return v.*f.total == 0; });
}

// Raises each counter of `to` to the old one (never lowers it while the old master runs: its
// live workers' blocks come and go from its snapshots); a gauge is the old one's now. When
// `final` the old totals are taken as they are, gauges dropped: by then they are what the old
// master folded and checked, and a count an old worker faked (and its master dropped at the
// fold) must not stay in ours for good.
template <typename Counters, typename Totals, typename Fields>
void raise(const Totals& from, Counters& to, const Fields& fields, bool final) noexcept {
  for (const auto& f : fields) {
    const std::uint64_t old = from.*f.total;
    auto& c = to.*f.counter;
    c.store(f.gauge ? (final ? 0 : old) : (final ? old : std::max(c.load(kRelaxed), old)),
            kRelaxed);
  }
}

// A name being taken in that the old master's snapshot no longer has: it reclaimed it (its
// totals went to its "(reclaimed)", which ours take by growth) or its entry became garbage;
// either way what was taken for it goes, or it would count twice.
template <typename Counters, typename Fields>
void forget(Counters& to, const Fields& fields) noexcept {
  for (const auto& f : fields) (to.*f.counter).store(0, kRelaxed);
}

// Adds to `to` how far each counter of `now` has grown past `last` (an old master's reclaimed
// totals, which ours add up), and remembers `now`.
template <typename Counters, typename Totals, typename Fields>
void add_growth(const Totals& now, Totals& last, Counters& to, const Fields& fields) noexcept {
  for (const auto& f : fields) {
    if (f.gauge || now.*f.total <= last.*f.total) continue;
    auto& c = to.*f.counter;
    c.store(ceiling_add(c.load(kRelaxed), now.*f.total - last.*f.total), kRelaxed);
    last.*f.total = now.*f.total;
  }
}

}  // namespace

std::optional<std::size_t> StatsTable::inherit(const StatsTable& old, bool final) {
  if (writable_ == nullptr) return 0;
  Registry& r = *writable_;
  auto taken = old.take_snapshot(0, final ? Patience::none : Patience::bounded);
  if (!taken) return std::nullopt;
  Snapshot& s = *taken;

  {
    Registry::MasterBlock& m = r.master;
    // By growth since the last pass: the old master may reload while it drains (the rollback
    // window), and those reloads count too. A count that went back, or one past the ceiling,
    // adds nothing.
    const auto growth = [](std::uint64_t now, std::uint64_t& last) {
      const std::uint64_t g = now < kCeiling && now >= last ? now - last : 0;
      if (now < kCeiling) last = now;
      return g;
    };
    SeqWrite w(m.reload_seq);
    m.reloads_ok.store(
        saturating_add(m.reloads_ok.load(kRelaxed), growth(s.reloads_ok, old_reloads_ok_)),
        kRelaxed);
    m.reloads_failed.store(saturating_add(m.reloads_failed.load(kRelaxed),
                                          growth(s.reloads_failed, old_reloads_failed_)),
                           kRelaxed);
    // The old master's last reload is the last one until this master has one of its own.
    if (!std::exchange(reloads_inherited_, true) &&
        m.last_reload.load(kRelaxed) == static_cast<std::uint8_t>(ReloadResult::none)) {
      m.last_reload.store(static_cast<std::uint8_t>(s.last_reload), kRelaxed);
      m.last_reload_at.store(s.last_reload_at, kRelaxed);
      const std::size_t n = std::min(s.last_reload_error.size(), kMaxError);
      m.error_length.store(static_cast<std::uint32_t>(n), kRelaxed);
      for (std::size_t i = 0; i * 8 < n; ++i) {
        std::uint64_t word = 0;
        std::memcpy(&word, s.last_reload_error.data() + i * 8, std::min<std::size_t>(8, n - i * 8));
        m.error[i].store(word, kRelaxed);
      }
    }
  }

  // Indexes first (registering takes no lock readers see), then every counter in one write.
  std::size_t left = 0;
  std::vector<std::pair<std::size_t, const Snapshot::Proxy*>> proxies;
  std::vector<std::pair<std::size_t, const Snapshot::Server*>> servers;
  const Snapshot::Proxy* old_reclaimed_proxies = nullptr;
  const Snapshot::Server* old_reclaimed_servers = nullptr;
  // Names the old master lists but whose totals are not taken this time (past the ceiling,
  // or nothing yet): not forgotten below, which is for names it no longer lists, and, in the
  // last pass, for those it ends with nothing for (all it had for them it dropped).
  std::vector<std::size_t> listed_proxies;
  std::vector<std::size_t> listed_servers;
  for (const Snapshot::Proxy& p : s.proxies) {
    if (!worth_taking(p, kProxyFields)) {
      const auto i = proxy_index(p.name);
      if (i && !(final && all_zero(p, kProxyFields))) listed_proxies.push_back(*i);
      continue;
    }
    if (p.name == kReclaimed) {  // the old master's reclaimed names: added to ours
      old_reclaimed_proxies = &p;
      continue;
    }
    const auto i = plausible(p.name, kMaxName) ? register_proxy(p.name) : std::nullopt;
    if (!i) {
      ++left;
      continue;
    }
    // Not reclaimed while more may come for it (nor for the next name of this same pass).
    inheriting_proxy_[*i] = true;
    proxies.emplace_back(*i, &p);
  }
  for (const Snapshot::Upstream& u : s.upstreams) {
    for (const Snapshot::Server& v : u.servers) {
      if (!worth_taking(v, kServerFields)) {
        const auto i = server_index(u.name, v.address);
        if (i && !(final && all_zero(v, kServerFields))) listed_servers.push_back(*i);
        continue;
      }
      if (u.name == kReclaimed && v.address == kReclaimed) {
        old_reclaimed_servers = &v;
        continue;
      }
      const auto i = plausible(u.name, kMaxName) && plausible(v.address, kMaxAddress)
                         ? register_server(u.name, v.address)
                         : std::nullopt;
      if (!i) {
        ++left;
        continue;
      }
      inheriting_server_[*i] = true;
      servers.emplace_back(*i, &v);
    }
  }
  std::vector<bool> seen(kMaxProxies + kMaxServers, false);  // before the write: it may throw
  for (auto [i, p] : proxies) seen[i] = true;
  for (auto [i, v] : servers) seen[kMaxProxies + i] = true;
  for (const std::size_t i : listed_proxies) seen[i] = true;
  for (const std::size_t i : listed_servers) seen[kMaxProxies + i] = true;
  SeqWrite w(r.fold_seq);
  {
    for (std::size_t i = 0; i < kMaxProxies; ++i) {
      if (inheriting_proxy_[i] && !seen[i]) {
        forget(r.inherited.proxies[i], kProxyFields);
        inheriting_proxy_[i] = false;
      }
    }
    for (std::size_t i = 0; i < kMaxServers; ++i) {
      if (inheriting_server_[i] && !seen[kMaxProxies + i]) {
        forget(r.inherited.servers[i], kServerFields);
        inheriting_server_[i] = false;
      }
    }
  }
  if (final) {  // free to be reclaimed from now on
    std::fill(std::begin(inheriting_proxy_), std::end(inheriting_proxy_), false);
    std::fill(std::begin(inheriting_server_), std::end(inheriting_server_), false);
  }
  for (auto [i, p] : proxies) {
    Snapshot::Proxy v = *p;
    // Sessions open in the old workers when their master went are over: handled, so that
    // accepted = handled + active still holds (as fold() does for one worker).
    if (final) v.handled = std::min(v.accepted, v.handled + v.active);
    raise(v, r.inherited.proxies[i], kProxyFields, final);
  }
  for (auto [i, v] : servers) raise(*v, r.inherited.servers[i], kServerFields, final);
  if (old_reclaimed_proxies != nullptr) {
    add_growth(*old_reclaimed_proxies, inherited_reclaimed_proxies_, r.reclaimed_proxies,
               kProxyFields);
  }
  if (old_reclaimed_servers != nullptr) {
    add_growth(*old_reclaimed_servers, inherited_reclaimed_servers_, r.reclaimed_servers,
               kServerFields);
  }
  return left;
}

}  // namespace ferry::worker
