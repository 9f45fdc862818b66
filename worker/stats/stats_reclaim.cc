// StatsTable's reclaiming of names for new ones once the registry is full: which index may be
// reused, and moving its totals to the reclaimed entries before it is.
#include <algorithm>
#include <limits>

#include "worker/stats/stats_detail.h"
#include "worker/stats/stats_layout.h"
#include "worker/stats/stats_table.h"

namespace ferry::worker {
namespace {

using namespace stats_detail;

// Adds an index's totals from the master's own blocks (checked when they were written there) to
// the reclaimed entry, and zeroes them. The gauges go: nothing is open at an unused name.
template <typename Counters, typename Fields>
void move_totals(Counters& from, Counters& to, const Fields& fields) noexcept {
  for (const auto& f : fields) {
    if (!f.gauge) {
      (to.*f.counter)
          .store(ceiling_add((to.*f.counter).load(kRelaxed), (from.*f.counter).load(kRelaxed)),
                 kRelaxed);
    }
    (from.*f.counter).store(0, kRelaxed);
  }
}

// A worker forked with a later configuration than the last one that had a name never looked it
// up: it holds no counters of that index. So an index is unused when its name was last
// configured before the oldest live worker's configuration.
// The index last configured longest ago of the `count` that are neither in the latest
// published configuration nor being inherited, and that `unused` (by any live worker).
template <typename EpochOf, typename Unused>
std::optional<std::size_t> oldest_unused(std::uint32_t count, std::uint64_t published,
                                         const bool* inheriting, EpochOf epoch_of,
                                         Unused unused) noexcept {
  std::optional<std::size_t> oldest;
  std::uint64_t oldest_epoch = std::numeric_limits<std::uint64_t>::max();
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::uint64_t e = epoch_of(i);
    if (e >= published || e >= oldest_epoch || inheriting[i] || !unused(e)) continue;
    oldest = i;
    oldest_epoch = e;
  }
  return oldest;
}

template <typename Counters, typename Fields>
void zero_counters(Counters& c, const Fields& fields) noexcept {
  for (const auto& f : fields) (c.*f.counter).store(0, kRelaxed);
}

}  // namespace

std::uint64_t StatsTable::oldest_live_epoch() const noexcept {
  std::uint64_t oldest = std::numeric_limits<std::uint64_t>::max();
  for (const std::uint64_t forked_with : worker_epochs_) {
    if (forked_with != 0) oldest = std::min(oldest, forked_with);
  }
  return oldest;
}

// Both run under the caller's SeqWrite on fold_seq, which also covers the new name's writing.
std::optional<std::size_t> StatsTable::reclaim_proxy() noexcept {
  Registry& r = *writable_;
  // Not in the latest published configuration, nor in the one being registered (its known
  // names are stamped with a later epoch before any new one is registered).
  const std::uint64_t published = r.master.epoch.load(kRelaxed);
  const auto oldest = oldest_unused(
      proxy_count_, published, inheriting_proxy_,
      [&](std::size_t i) { return r.proxies[i].epoch.load(kRelaxed); },
      [live = oldest_live_epoch()](std::uint64_t e) { return e < live; });
  if (!oldest) return std::nullopt;
  const std::size_t i = *oldest;
  move_totals(r.retired.proxies[i], r.reclaimed_proxies, kProxyFields);
  move_totals(r.inherited.proxies[i], r.reclaimed_proxies, kProxyFields);
  // Every block that may have counted there: the dead were zeroed when folded.
  for (std::size_t slot = 0; slot < kSlots; ++slot) {
    if (worker_epochs_[slot] != 0) zero_counters(counters_->slots[slot].proxies[i], kProxyFields);
  }
  r.proxies[i].epoch.store(0, kRelaxed);
  return i;
}

std::optional<std::size_t> StatsTable::reclaim_server() noexcept {
  Registry& r = *writable_;
  const std::uint64_t published = r.master.epoch.load(kRelaxed);
  const auto oldest = oldest_unused(
      server_count_, published, inheriting_server_,
      [&](std::size_t i) { return r.servers[i].config.load(kRelaxed) >> kEpochShift; },
      [live = oldest_live_epoch()](std::uint64_t e) { return e < live; });
  if (!oldest) return std::nullopt;
  const std::size_t i = *oldest;
  move_totals(r.retired.servers[i], r.reclaimed_servers, kServerFields);
  move_totals(r.inherited.servers[i], r.reclaimed_servers, kServerFields);
  for (std::size_t slot = 0; slot < kSlots; ++slot) {
    if (worker_epochs_[slot] == 0) continue;
    zero_counters(counters_->slots[slot].servers[i], kServerFields);
    counters_->slots[slot].servers[i].failed.store(0, kRelaxed);
  }
  counters_->health[i].store(0, kRelaxed);
  r.servers[i].config.store(0, kRelaxed);
  return i;
}

}  // namespace ferry::worker
