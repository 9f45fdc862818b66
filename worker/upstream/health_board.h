// HealthBoard: what every worker of a generation shares about its upstream servers, in shared
// memory mapped by the master before it forks the generation: the active checks' verdicts on each
// address of a server (one worker writes them, all read them) and the sessions each server has
// across the workers, for max_conns. One slot per server, in configuration order.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "conf/config.h"
#include "event/socket_address.h"
#include "worker/worker_counters.h"

namespace ferry::worker {

// The active checks' verdict on one address of a server, in one word so that no reader sees
// half an update: a key naming the address (never 0) in the high kKeyBits, the checks of it that
// passed (modulo 2^kPassBits: each clears passive failures) below, and whether the checks found
// it down in bit 0. A word of 0 is a free place. An IPv4 key is the address and port themselves
// (no two addresses share one); an IPv6 key is a 48-bit hash, with the top bit set.
struct AddressVerdict {
  static constexpr int kKeyBits = 49;
  static constexpr int kPassBits = 14;
  static constexpr std::uint64_t kPassMask = (std::uint64_t{1} << kPassBits) - 1;
  static constexpr std::uint64_t kHashed = std::uint64_t{1} << 48;
  static_assert(kKeyBits + kPassBits + 1 == 64);

  // The key of `a`: alike in every process whatever padding the sockaddr carries.
  static std::uint64_t key_of(const event::SocketAddress& a) noexcept {
    if (a.family() == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(a.get());
      const std::uint64_t key =
          std::uint64_t{ntohl(sin->sin_addr.s_addr)} << 16 | ntohs(sin->sin_port);
      return key == 0 ? kHashed : key;  // 0.0.0.0:0 is nobody's server
    }
    std::uint64_t h = 0x9e3779b97f4a7c15ULL ^ a.family();
    const auto mix = [&h](const void* data, std::size_t n) {
      const auto* p = static_cast<const unsigned char*>(data);
      for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
    };
    if (a.family() == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a.get());
      mix(&sin6->sin6_port, sizeof sin6->sin6_port);
      mix(&sin6->sin6_addr, sizeof sin6->sin6_addr);
      mix(&sin6->sin6_scope_id, sizeof sin6->sin6_scope_id);
    }
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    return kHashed | h >> (64 - 48);
  }
  static std::uint64_t word(std::uint64_t key, std::uint64_t passes, bool down) noexcept {
    return key << (kPassBits + 1) | (passes & kPassMask) << 1 | (down ? 1 : 0);
  }
  static std::uint64_t key(std::uint64_t word) noexcept { return word >> (kPassBits + 1); }
  static std::uint64_t passes(std::uint64_t word) noexcept { return (word >> 1) & kPassMask; }
  static bool down(std::uint64_t word) noexcept { return (word & 1) != 0; }
};

// A checked server's addresses, as its checker found them. The checker (one worker of the
// generation) is the only writer; an address not in the table (not probed yet, or beyond its
// kAddresses places) counts as up, and passive checks still apply to it.
struct ServerHealth {
  static constexpr std::size_t kAddresses = 16;
  std::atomic<std::uint64_t> addresses[kAddresses]{};

  // The verdict word of the address keyed `key`, or 0 when the table has none. `hint`: where it
  // was last found, looked at first (and updated).
  [[nodiscard]] std::uint64_t find(std::uint64_t key, std::size_t& hint) const noexcept {
    if (hint < kAddresses) {
      const std::uint64_t w = addresses[hint].load(std::memory_order_relaxed);
      if (AddressVerdict::key(w) == key) return w;
    }
    for (std::size_t i = 0; i < kAddresses; ++i) {
      const std::uint64_t w = addresses[i].load(std::memory_order_relaxed);
      if (AddressVerdict::key(w) != key) continue;
      hint = i;
      return w;
    }
    return 0;
  }
};

// A server's sessions across the workers of the generation, and one worker's part of them (its
// share: what the master takes back when the worker dies). Either may be null: not counted.
// The share has one writer, its worker (through share_of()), and is read by the master once that
// worker is dead.
struct SharedConns {
  std::atomic<std::uint32_t>* total = nullptr;
  std::uint32_t* mine = nullptr;
};

inline std::atomic_ref<std::uint32_t> share_of(std::uint32_t& mine) noexcept {
  return std::atomic_ref<std::uint32_t>(mine);
}
static_assert(std::atomic_ref<std::uint32_t>::is_always_lock_free);

// Takes `by` off `total`, never below 0: a share left too high by a worker killed between its
// two counts (or written with garbage) must not wrap the total and block the server for good.
// `tries` bounds the lost races: the master must not spin on a word workers keep rewriting.
inline void take_off(std::atomic<std::uint32_t>& total, std::uint32_t by,
                     std::size_t tries = std::numeric_limits<std::size_t>::max()) noexcept {
  std::uint32_t n = total.load(std::memory_order_relaxed);
  for (std::size_t i = 0; n != 0 && i < tries; ++i) {
    if (total.compare_exchange_weak(n, n - std::min(n, by), std::memory_order_relaxed)) return;
  }
}

// Layout: the ServerHealth slots, the servers' session totals, then per share (a worker's
// counters entry) one count per server. Pages no worker writes stay untouched.
class HealthBoard {
 public:
  static constexpr std::size_t kShares = CountersTable::kEntries;
  static constexpr std::size_t kNoShare = static_cast<std::size_t>(-1);

  static std::size_t servers_of(const conf::Config& cfg) noexcept {
    std::size_t n = 0;
    for (const auto& u : cfg.upstreams) n += u.servers.size();
    return n == 0 ? 1 : n;
  }
  // Bytes needed for `cfg`'s servers (at least one slot).
  static std::size_t bytes_for(const conf::Config& cfg) {
    const std::size_t n = servers_of(cfg);
    return sizeof(ServerHealth) * n + sizeof(std::atomic<std::uint32_t>) * n +
           sizeof(std::uint32_t) * n * kShares;
  }
  // Lays the slots out in `memory` (zeroed shared pages).
  static HealthBoard* create(void* memory, const conf::Config& cfg) {
    auto* slots = static_cast<ServerHealth*>(memory);
    const std::size_t n = servers_of(cfg);
    for (std::size_t i = 0; i < n; ++i) new (&slots[i]) ServerHealth;
    auto* totals = reinterpret_cast<std::atomic<std::uint32_t>*>(slots + n);
    for (std::size_t i = 0; i < n; ++i) new (&totals[i]) std::atomic<std::uint32_t>(0);
    return reinterpret_cast<HealthBoard*>(memory);
  }
  // The slot of server `server` of upstream `upstream` (indices into cfg).
  ServerHealth& at(const conf::Config& cfg, std::size_t upstream, std::size_t server) {
    return slots()[index_of(cfg, upstream, server)];
  }
  // The session counts of that server, under `share`. kNoShare (a worker that found no counters
  // entry, which is rare): still counted in the total, so the cap holds, but not recoverable:
  // killed with sessions, such a worker leaves their places taken until the next reload.
  SharedConns conns(const conf::Config& cfg, std::size_t upstream, std::size_t server,
                    std::size_t share) {
    const std::size_t i = index_of(cfg, upstream, server);
    const std::size_t n = servers_of(cfg);
    return {&totals(n)[i], share < kShares ? &shares(n)[share * n + i] : nullptr};
  }
  // Master only, once the worker that owned `share` has been reaped: its sessions ended with it.
  // `servers`: servers_of() the configuration the board was laid out for, kept by the master
  // with the board (the configuration may change the server set since).
  void recover(std::size_t servers, std::size_t share) noexcept {
    if (share >= kShares) return;
    const std::size_t n = servers;
    std::uint32_t* mine = &shares(n)[share * n];
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t held = share_of(mine[i]).load(std::memory_order_acquire);
      if (held == 0) continue;             // untouched pages stay so
      take_off(totals(n)[i], held, 1024);  // far more than honest workers make it lose
      share_of(mine[i]).store(0, std::memory_order_relaxed);
    }
  }

 private:
  static std::size_t index_of(const conf::Config& cfg, std::size_t upstream, std::size_t server) {
    std::size_t base = 0;
    for (std::size_t u = 0; u < upstream; ++u) base += cfg.upstreams[u].servers.size();
    return base + server;
  }
  ServerHealth* slots() noexcept { return reinterpret_cast<ServerHealth*>(this); }
  std::atomic<std::uint32_t>* totals(std::size_t n) noexcept {
    return reinterpret_cast<std::atomic<std::uint32_t>*>(slots() + n);
  }
  std::uint32_t* shares(std::size_t n) noexcept {
    return reinterpret_cast<std::uint32_t*>(totals(n) + n);
  }
};

}  // namespace ferry::worker
