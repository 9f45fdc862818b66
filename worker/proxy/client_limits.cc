// ClientLimits: the shared table's keyed hash, its lock-free acquire/release, and the master's
// recovery of a dead worker's share.
#include "worker/proxy/client_limits.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>

#include <sodium/crypto_shorthash.h>
#include <spdlog/spdlog.h>

#include "event/syscall_util.h"

namespace ferry::worker {
namespace {

constexpr int kCountBits = 16;
constexpr std::uint64_t kCountMask = (std::uint64_t{1} << kCountBits) - 1;
constexpr std::uint64_t kKeyMask = (std::uint64_t{1} << 48) - 1;

std::uint64_t key_in(std::uint64_t word) noexcept { return word >> kCountBits; }
std::uint32_t count_in(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>(word & kCountMask);
}
std::uint64_t make_word(std::uint64_t key, std::uint32_t count) noexcept {
  return key << kCountBits | count;
}

// The table's words are read and written by every worker at once. Sequentially consistent: an
// acquire reads the other words of its window after its own CAS, and must not miss a CAS
// another worker made before reading ours (on x86 the CAS is a full barrier anyway).
std::atomic_ref<std::uint64_t> word_at(std::uint64_t& w) noexcept {
  return std::atomic_ref<std::uint64_t>(w);
}
std::uint64_t load(const std::uint64_t& w) noexcept {
  return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(w)).load();
}
// A share has one writer, its worker, and is read by the master once that worker is dead.
std::atomic_ref<std::uint16_t> share_at(std::uint16_t& s) noexcept {
  return std::atomic_ref<std::uint16_t>(s);
}

// Both masters of an upgrade claim shares: every change of an owner is a CAS.
std::atomic_ref<std::int32_t> owner_at(std::int32_t& o) noexcept {
  return std::atomic_ref<std::int32_t>(o);
}
static_assert(sizeof(pid_t) == sizeof(std::int32_t));

static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint16_t>::is_always_lock_free);
static_assert(ClientLimits::kMaxLimit == kCountMask);

// Takes `by` off `w`'s count, never below 0, so that a key's bits are never borrowed from.
// Gives up after `tries` lost races: the master must not spin on a word a worker rewrites.
bool decrement(std::uint64_t& w, std::uint32_t by,
               std::size_t tries = std::numeric_limits<std::size_t>::max()) noexcept {
  std::uint64_t old = load(w);
  for (std::size_t i = 0; count_in(old) != 0 && i < tries; ++i) {
    const std::uint64_t next = old - std::min(count_in(old), by);
    if (word_at(w).compare_exchange_weak(old, next)) return true;
  }
  return count_in(old) == 0;
}

// Far more than honest workers ever make one CAS lose in a row.
constexpr std::size_t kMasterTries = 1024;

// Clears the bits of `bytes` past the first `prefix`.
void mask(unsigned char* bytes, std::size_t size, int prefix) noexcept {
  for (std::size_t i = 0; i < size; ++i) {
    const int keep = std::clamp(prefix - static_cast<int>(i * 8), 0, 8);
    bytes[i] &= static_cast<unsigned char>(0xff00 >> keep);
  }
}

static_assert(sizeof(ClientLimits::Secret) == crypto_shorthash_KEYBYTES);
static_assert(crypto_shorthash_BYTES == sizeof(std::uint64_t));

// SipHash-2-4 (libsodium's crypto_shorthash, which needs nothing sodium_init() sets up).
std::uint64_t keyed_hash(const void* data, std::size_t size,
                         const ClientLimits::Secret& secret) noexcept {
  unsigned char out[crypto_shorthash_BYTES];
  crypto_shorthash(out, static_cast<const unsigned char*>(data), size, secret.data());
  std::uint64_t h = 0;
  std::memcpy(&h, out, sizeof h);
  return h;
}

}  // namespace

std::optional<ClientLimits::Secret> ClientLimits::random_secret() noexcept {
  Secret secret;
  // Blocks only until the kernel's pool is first seeded, early in boot.
  const auto got = event::all_bytes(secret.size(), [&](std::size_t done, std::size_t left) {
    return ::getrandom(secret.data() + done, left, 0);
  });
  if (!got.complete) {
    spdlog::error("getrandom() for the per-client table's secret failed: {}",
                  got.error ? got.error.message() : std::string("no bytes"));
    return std::nullopt;
  }
  return secret;
}

std::uint64_t ClientLimits::key_of(const Secret& secret, std::string_view proxy_name,
                                   const event::SocketAddress& client,
                                   ClientPrefixes prefixes) noexcept {
  // The name, of any length, goes in as its own hash: the rest then has a fixed layout, and
  // no name followed by an address reads as another name.
  const std::uint64_t name_hash = keyed_hash(proxy_name.data(), proxy_name.size(), secret);
  std::uint16_t family = client.family();
  unsigned char address[sizeof(sockaddr_storage)]{};
  std::size_t address_size = 0;
  int prefix = -1;  // not an inet address: taken whole
  if (family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(client.get());
    address_size = sizeof sin->sin_addr;
    std::memcpy(address, &sin->sin_addr, address_size);
    prefix = prefixes.ipv4;
  } else if (family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(client.get());
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: the same client either way.
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
      family = AF_INET;
      address_size = 4;
      std::memcpy(address, sin6->sin6_addr.s6_addr + 12, address_size);
      prefix = prefixes.ipv4;
    } else {
      address_size = sizeof sin6->sin6_addr;
      std::memcpy(address, &sin6->sin6_addr, address_size);
      prefix = prefixes.ipv6;
    }
  } else {
    // Not an inet address (a PROXY header's AF_UNIX): whatever bytes follow the family.
    const std::size_t length = std::min<std::size_t>(client.length(), sizeof(sockaddr_storage));
    constexpr std::size_t kFamilySize = sizeof(sa_family_t);
    address_size = length > kFamilySize ? length - kFamilySize : 0;
    std::memcpy(address, reinterpret_cast<const unsigned char*>(client.get()) + kFamilySize,
                address_size);
  }
  if (prefix >= 0) mask(address, address_size, prefix);

  // The prefix goes in too: a reload that changes it starts counts of its own.
  unsigned char input[sizeof name_hash + sizeof family + 1 + sizeof address];
  std::size_t n = 0;
  auto put = [&](const void* p, std::size_t size) {
    std::memcpy(input + n, p, size);
    n += size;
  };
  const auto prefix_byte = static_cast<unsigned char>(prefix);
  put(&name_hash, sizeof name_hash);
  put(&family, sizeof family);
  put(&prefix_byte, 1);
  put(address, address_size);
  const std::uint64_t key = keyed_hash(input, n, secret) & kKeyMask;
  return key != 0 ? key : 1;
}

ClientLimits::Admit ClientLimits::acquire(std::uint64_t key, std::uint32_t limit, std::size_t share,
                                          std::uint32_t* bucket) noexcept {
  key &= kKeyMask;
  if (key == 0) key = 1;
  limit = std::min(limit, kMaxLimit);
  if (limit == 0) return Admit::limit;
  const std::size_t home = home_of(key);
  for (;;) {
    // The key's first word with sessions, else the window's first free word (count 0, whatever
    // its key): always the first, so that workers inserting the same key meet on one word.
    std::size_t at = kBuckets;
    std::uint64_t seen = 0;
    bool live = false;
    for (std::size_t i = 0; i < kWindow; ++i) {
      const std::size_t b = (home + i) & (kBuckets - 1);
      const std::uint64_t w = load(words_[b]);
      if (count_in(w) == 0) {
        if (at == kBuckets) {
          at = b;
          seen = w;
        }
      } else if (key_in(w) == key) {
        at = b;
        seen = w;
        live = true;
        break;
      }
    }
    if (at == kBuckets) return Admit::full;
    if (live && count_in(seen) >= limit) return Admit::limit;
    const std::uint64_t next = live ? seen + 1 : make_word(key, 1);
    if (!word_at(words_[at]).compare_exchange_strong(seen, next)) continue;

    // Two workers inserting the key while a word before theirs freed up can each claim a word:
    // the key then lives twice until one drains (acquires go to the first). Each word keeps
    // under the limit by its CAS, so check the sum too, after the CAS: of any acquires that
    // overlap, the last to count sees all the others, and so no more than `limit` pass.
    if (count(key) > limit) {
      decrement(words_[at], 1);
      return Admit::limit;
    }
    // After the word: a worker killed in between leaves one session counted for good, where
    // the other order would let recover() take one from a word that may belong to another key.
    if (share < kShares) share_at(shares_[share][at]).fetch_add(1, std::memory_order_relaxed);
    *bucket = static_cast<std::uint32_t>(at);
    return Admit::ok;
  }
}

void ClientLimits::release(std::uint32_t bucket, std::size_t share) noexcept {
  if (bucket >= kBuckets) return;
  // The share first, for the reason acquire() updates it last.
  if (share < kShares) {
    auto s = share_at(shares_[share][bucket]);
    if (s.load(std::memory_order_relaxed) != 0) s.fetch_sub(1, std::memory_order_relaxed);
  }
  decrement(words_[bucket], 1);
}

void ClientLimits::adopt_share(std::uint32_t bucket, std::size_t share) noexcept {
  if (bucket < kBuckets && share < kShares) {
    share_at(shares_[share][bucket]).fetch_add(1, std::memory_order_relaxed);
  }
}

void ClientLimits::leave_share(std::uint32_t bucket, std::size_t share) noexcept {
  if (bucket >= kBuckets || share >= kShares) return;
  auto s = share_at(shares_[share][bucket]);
  if (s.load(std::memory_order_relaxed) != 0) s.fetch_sub(1, std::memory_order_relaxed);
}

void ClientLimits::recover(std::size_t share) noexcept {
  if (share >= kShares) return;
  // Both the share and the words are memory workers write: every index is the master's own,
  // every count taken off is bounded by the word's, and no word is retried for ever.
  std::uint16_t* counts = shares_[share];
  std::size_t given_up = 0;
  for (std::size_t b = 0; b < kBuckets; ++b) {
    const std::uint16_t held = share_at(counts[b]).load(std::memory_order_relaxed);
    if (held == 0) continue;
    if (!decrement(words_[b], held, kMasterTries)) ++given_up;
    share_at(counts[b]).store(0, std::memory_order_relaxed);
  }
  if (given_up != 0) {
    spdlog::warn("{} per-client count(s) kept changing while a dead worker's were taken out: left",
                 given_up);
  }
  // MADV_REMOVE, not MADV_DONTNEED: the pages are shmem, which DONTNEED only unmaps from this
  // process. Zeroed above already, so a failure costs only the memory.
  if (::madvise(counts, sizeof shares_[share], MADV_REMOVE) == -1) {
    spdlog::warn("madvise(MADV_REMOVE) of a worker's share failed: {}",
                 event::last_error().message());
  }
}

std::size_t ClientLimits::claim(pid_t master) noexcept {
  (void)sweep(master);
  for (std::size_t share = 0; share < kShares; ++share) {
    std::int32_t free = 0;
    if (owner_at(owners_[share]).compare_exchange_strong(free, master)) return share;
  }
  spdlog::warn(
      "all {} per-client shares are taken: a worker counts per client without one, and what it "
      "holds stays counted if it dies",
      kShares);
  return kNoShare;
}

bool ClientLimits::assign(std::size_t share, pid_t master, pid_t worker) noexcept {
  if (share >= kShares) return false;
  std::int32_t expected = master;
  return owner_at(owners_[share]).compare_exchange_strong(expected, worker) || expected == worker;
}

bool ClientLimits::give_back(std::size_t share, pid_t owner, pid_t master) noexcept {
  if (share >= kShares) return false;
  // Only from the owner it had: once that pid is gone another master's sweep may have taken
  // the share (and recovered it) before this one reaped it.
  std::int32_t expected = owner;
  if (!owner_at(owners_[share]).compare_exchange_strong(expected, master)) return false;
  recover(share);
  owner_at(owners_[share]).store(0);
  return true;
}

std::size_t ClientLimits::sweep(pid_t master) noexcept {
  std::size_t freed = 0;
  for (std::size_t share = 0; share < kShares; ++share) {
    const std::int32_t owner = owner_at(owners_[share]).load();
    // A zombie (dead, not yet reaped by its master) still answers kill(): its master gives the
    // share back when it reaps it. ESRCH: reaped by a master that died first, or by init.
    if (owner <= 0 || owner == master || ::kill(owner, 0) == 0 || errno != ESRCH) continue;
    if (give_back(share, owner, master)) ++freed;
  }
  if (freed != 0) {
    spdlog::info("took back the per-client counts of {} worker(s) whose master had gone", freed);
  }
  return freed;
}

pid_t ClientLimits::owner(std::size_t share) const noexcept {
  if (share >= kShares) return 0;
  return owner_at(const_cast<std::int32_t&>(owners_[share])).load();
}

std::uint32_t ClientLimits::count(std::uint64_t key) const noexcept {
  key &= kKeyMask;
  if (key == 0) key = 1;
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < kWindow; ++i) {
    const std::uint64_t w = load(words_[(home_of(key) + i) & (kBuckets - 1)]);
    if (key_in(w) == key) sum += count_in(w);
  }
  return sum;
}

}  // namespace ferry::worker
