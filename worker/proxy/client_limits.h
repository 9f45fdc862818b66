// ClientLimits: the sessions each client address has open at each proxy, counted across every
// worker of every generation in one shared table, for max_conns_per_client.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

#include <sys/types.h>

#include "event/socket_address.h"
#include "worker/worker_counters.h"

namespace ferry::worker {

// What counts as one client: the network of an address with this prefix length.
struct ClientPrefixes {
  int ipv4 = 32;
  int ipv6 = 64;
};

// Lives in an anonymous MAP_SHARED segment the master maps once, before any fork. Each word packs
// a 48-bit key and a 16-bit count, so one CAS moves both: no lock, and a worker killed at any
// point leaves no lock held. Each worker also keeps its own per-word counts (its share) in the
// segment, so that the master can take a dead worker's sessions back out of the table.
//
// Most of the segment is never touched: 512 KiB of words and 1024 shares of 128 KiB (128.5 MiB
// in all), of which a worker writes only the pages of the words its clients land in.
//
// A binary upgrade passes the segment (a memfd) to the new master, which keeps using it: a
// client's sessions on the old workers still count against it on the new ones. Both masters of
// an upgrade hand out shares from one pool: each share names its owner (a worker's pid, or its
// master's while it is being forked), and a share is handed out again only once its owner is
// gone. So a killed master's workers, which drain on as orphans, keep theirs.
//
// The secret that keys the hash is not in the segment, which every worker can write: each
// process keeps its own copy (ClientSecret).
class ClientLimits {
 public:
  static constexpr std::size_t kBuckets = 65536;
  // How far from its home word a key may live; past that, the table is full for that key.
  static constexpr std::size_t kWindow = 32;
  // Enough for two masters' workers (an upgrade), each with every counters entry taken.
  static constexpr std::size_t kShares = 2 * CountersTable::kEntries;
  // A worker that got no counters entry: it counts, but what it holds is lost if it dies.
  static constexpr std::size_t kNoShare = std::numeric_limits<std::size_t>::max();
  // What a count can hold: a higher limit is enforced as this one.
  static constexpr std::uint32_t kMaxLimit = 0xffff;

  enum class Admit {
    ok,     // counted: give `bucket` back to release() when the session ends
    limit,  // the client has `limit` sessions already; nothing changed
    full,   // no room near the key's home: not counted (callers let the session in)
  };

  // The key of the keyed hash (SipHash) that places clients in the table. Secret, so that no
  // one can pick addresses that crowd one window; one for the table's life, so that every
  // worker of every generation places a client on the same words.
  using Secret = std::array<unsigned char, 16>;
  // A secret from getrandom(2); none (logged) when the kernel gives none.
  static std::optional<Secret> random_secret() noexcept;

  static std::size_t bytes_needed() noexcept { return sizeof(ClientLimits); }
  // `shared_memory`: bytes_needed() zeroed bytes (fresh mmap pages), page-aligned. Nothing is
  // written: zeroes are the empty table, and writing them would commit all 128.5 MiB.
  static ClientLimits* create(void* shared_memory) noexcept {
    return static_cast<ClientLimits*>(shared_memory);
  }
  // A table create() made in another process (an old master), with its counts and owners.
  static ClientLimits* adopt(void* shared_memory) noexcept {
    return static_cast<ClientLimits*>(shared_memory);
  }

  // The key of `client` (its network under `prefixes`, not its port; a v4-mapped IPv6 address
  // as the IPv4 one) at the proxy named `proxy_name`, under the table's `secret`: 48 bits,
  // never 0. The name, not the conf::Proxy, so that the count carries over reloads.
  [[nodiscard]] static std::uint64_t key_of(const Secret& secret, std::string_view proxy_name,
                                            const event::SocketAddress& client,
                                            ClientPrefixes prefixes = {}) noexcept;
  static std::size_t home_of(std::uint64_t key) noexcept { return key & (kBuckets - 1); }

  // Counts one more session of `key` unless it has `limit` (at most kMaxLimit) already, under
  // this worker's `share` (or kNoShare). `key`: from key_of(), or any 48-bit value but 0.
  Admit acquire(std::uint64_t key, std::uint32_t limit, std::size_t share,
                std::uint32_t* bucket) noexcept;
  // The session acquire() counted in `bucket` under `share` has ended.
  void release(std::uint32_t bucket, std::size_t share) noexcept;
  // A session counted in `bucket` moves between workers: the new one's `share` takes it
  // (adopt_share) before the old one's gives it up (leave_share). The word's count, the one
  // the limit reads, stays as it is.
  void adopt_share(std::uint32_t bucket, std::size_t share) noexcept;
  void leave_share(std::uint32_t bucket, std::size_t share) noexcept;
  // Master only, before a fork: a share for the worker, owned by `master` (this process) until
  // assign() names the worker. Shares whose owner is gone (a reaped worker whose master died
  // before giving its share back) are recovered first. kNoShare (logged) when all are taken.
  std::size_t claim(pid_t master) noexcept;
  // Master or worker, once forked: `worker` owns the share claim() gave `master`. False when
  // the share is no longer `master`'s (nor already `worker`'s): it was taken back because
  // `master` was seen gone.
  bool assign(std::size_t share, pid_t master, pid_t worker) noexcept;
  // Master only, once `owner` (a worker, or `master` itself when the fork failed) is reaped:
  // its sessions are taken back out of the table, and the share is free again. Nothing, when
  // another master's claim() took the share first (it recovered it then): returns false.
  bool give_back(std::size_t share, pid_t owner, pid_t master) noexcept;
  // Master only, now and then: recovers and frees the shares of owners that are gone.
  // Returns how many.
  std::size_t sweep(pid_t master) noexcept;
  // Master only, once the owner of `share` is reaped and before it is handed to another: takes
  // what the worker still held out of the table, and gives the share's pages back to the
  // system. Prefer give_back(), which first makes sure no other master has taken it.
  void recover(std::size_t share) noexcept;
  // Who owns `share` now (0: no one).
  [[nodiscard]] pid_t owner(std::size_t share) const noexcept;
  // The sessions `key` has open now.
  [[nodiscard]] std::uint32_t count(std::uint64_t key) const noexcept;

 private:
  ClientLimits() = default;  // never constructed: see create()

  std::uint64_t words_[kBuckets];
  // Page-aligned, one share after another, so that recover() can drop one share's pages.
  alignas(4096) std::uint16_t shares_[kShares][kBuckets];
  // After the shares, so that the words and the shares keep their page-aligned offsets. A pid_t
  // each, written with CAS by both masters of an upgrade.
  std::int32_t owners_[kShares];
};

}  // namespace ferry::worker
