// Tests of worker/proxy/client_limits: limits per proxy and client address, keys crowded into one
// probe window, forked processes racing on one shared table, and a killed worker's recovery.
#include "worker/proxy/client_limits.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <new>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "event/shared_memory.h"

namespace ferry::worker {
namespace {

using Admit = ClientLimits::Admit;

constexpr std::size_t kBuckets = ClientLimits::kBuckets;
constexpr std::size_t kWindow = ClientLimits::kWindow;

event::SocketAddress address(const char* text) {
  auto a = event::SocketAddress::parse_numeric(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a.value_or(event::SocketAddress{});
}

// A 48-bit key whose home word is `home`.
std::uint64_t key_at(std::size_t home, std::uint64_t n) { return n << 16 | home; }

class ClientLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(shm_.create(ClientLimits::bytes_needed()));
    limits_ = ClientLimits::create(shm_.data());
  }
  // A key under this table's secret.
  std::uint64_t key_of(std::string_view name, const event::SocketAddress& client,
                       ClientPrefixes prefixes = {}) const {
    return ClientLimits::key_of(secret_, name, client, prefixes);
  }
  // The raw table, for building what only a race between workers can leave behind.
  std::uint64_t* words() { return static_cast<std::uint64_t*>(shm_.data()); }
  // Share `share`'s counts, where the layout puts them (after the table, one after another).
  void* share_pages(std::size_t share) {
    return static_cast<char*>(shm_.data()) + kBuckets * sizeof(std::uint64_t) +
           share * kBuckets * sizeof(std::uint16_t);
  }

  event::SharedMemory shm_;
  // Fixed, so that what depends on where keys land (no two of 65536 keys equal, the spread)
  // is the same on every run; random_secret() has its own test.
  ClientLimits::Secret secret_{0x66, 0x65, 0x72, 0x72, 0x79, 0x2d, 0x74, 0x65,
                               0x73, 0x74, 0x2d, 0x6b, 0x65, 0x79, 0x21, 0x07};
  ClientLimits* limits_ = nullptr;
};

TEST_F(ClientLimitsTest, AdmitsUpToTheLimitAndReleaseMakesRoom) {
  const std::uint64_t key = key_of("web", address("192.0.2.7:40000"));
  std::vector<std::uint32_t> buckets(3);
  for (auto& b : buckets) ASSERT_EQ(limits_->acquire(key, 3, 0, &b), Admit::ok);
  std::uint32_t extra = 0;
  EXPECT_EQ(limits_->acquire(key, 3, 0, &extra), Admit::limit);
  EXPECT_EQ(limits_->count(key), 3u);

  limits_->release(buckets.back(), 0);
  buckets.pop_back();
  EXPECT_EQ(limits_->count(key), 2u);
  ASSERT_EQ(limits_->acquire(key, 3, 0, &extra), Admit::ok);
  buckets.push_back(extra);
  EXPECT_EQ(limits_->acquire(key, 3, 0, &extra), Admit::limit);
  // A lower limit (after a reload) holds at once for new sessions.
  EXPECT_EQ(limits_->acquire(key, 2, 0, &extra), Admit::limit);

  for (auto b : buckets) limits_->release(b, 0);
  EXPECT_EQ(limits_->count(key), 0u);
  EXPECT_EQ(limits_->acquire(key, 0, 0, &extra), Admit::limit);
  EXPECT_EQ(limits_->count(key), 0u);
}

TEST_F(ClientLimitsTest, KeysArePerProxyAndAddressButNotPort) {
  const std::uint64_t a = key_of("web", address("192.0.2.7:1000"));
  EXPECT_EQ(a, key_of("web", address("192.0.2.7:2000")));
  const std::uint64_t other_client = key_of("web", address("192.0.2.8:1000"));
  const std::uint64_t other_proxy = key_of("db", address("192.0.2.7:1000"));
  const std::uint64_t v6 = key_of("web", address("[2001:db8::7]:1000"));
  EXPECT_EQ(std::set<std::uint64_t>({a, other_client, other_proxy, v6}).size(), 4u);
  // The name's length is hashed too: "we" + address must not read as "web" + another address.
  EXPECT_NE(key_of("we", address("192.0.2.7:1")), a);

  std::uint32_t b = 0;
  ASSERT_EQ(limits_->acquire(a, 1, 0, &b), Admit::ok);
  EXPECT_EQ(limits_->acquire(a, 1, 0, &b), Admit::limit);
  for (auto k : {other_client, other_proxy, v6}) {
    ASSERT_EQ(limits_->acquire(k, 1, 0, &b), Admit::ok);
    EXPECT_EQ(limits_->count(k), 1u);
  }
  EXPECT_EQ(limits_->count(a), 1u);
}

TEST_F(ClientLimitsTest, V4MappedAddressIsTheIpv4Client) {
  const std::uint64_t v4 = key_of("web", address("198.51.100.20:5000"));
  EXPECT_EQ(key_of("web", address("[::ffff:198.51.100.20]:6000")), v4);
  // Only the mapped form: the deprecated v4-compatible ::a.b.c.d is another address.
  EXPECT_NE(key_of("web", address("[::198.51.100.20]:6000")), v4);

  std::uint32_t b = 0;
  ASSERT_EQ(limits_->acquire(v4, 2, 0, &b), Admit::ok);
  const std::uint64_t mapped = key_of("web", address("[::ffff:198.51.100.20]:1"));
  ASSERT_EQ(limits_->acquire(mapped, 2, 0, &b), Admit::ok);
  EXPECT_EQ(limits_->acquire(v4, 2, 0, &b), Admit::limit);
  EXPECT_EQ(limits_->count(v4), 2u);
}

// Issue 17: an IPv6 client holds a /64 (a host picks any address of it at will), so the limit
// counts per /64 unless told otherwise; IPv4 per address.
TEST_F(ClientLimitsTest, Ipv6ClientsAreCountedPerSlash64ByDefault) {
  const std::uint64_t a = key_of("web", address("[2001:db8:1:2::1]:1000"));
  EXPECT_EQ(key_of("web", address("[2001:db8:1:2:ffff:ffff:ffff:fffe]:1")), a);
  EXPECT_NE(key_of("web", address("[2001:db8:1:3::1]:1000")), a);
  EXPECT_NE(key_of("web", address("192.0.2.1:1")), key_of("web", address("192.0.2.2:1")));

  std::uint32_t b = 0;
  ASSERT_EQ(limits_->acquire(a, 1, 0, &b), Admit::ok);
  const std::uint64_t neighbour = key_of("web", address("[2001:db8:1:2::99]:5"));
  EXPECT_EQ(limits_->acquire(neighbour, 1, 0, &b), Admit::limit);
}

TEST_F(ClientLimitsTest, PrefixesAreConfigurablePerFamily) {
  const ClientPrefixes whole{32, 128};
  EXPECT_NE(key_of("web", address("[2001:db8::1]:1"), whole),
            key_of("web", address("[2001:db8::2]:1"), whole));
  const ClientPrefixes wide{24, 48};
  const std::uint64_t v4 = key_of("web", address("192.0.2.1:1"), wide);
  EXPECT_EQ(key_of("web", address("192.0.2.254:1"), wide), v4);
  EXPECT_EQ(key_of("web", address("[::ffff:192.0.2.77]:1"), wide), v4);
  EXPECT_NE(key_of("web", address("192.0.3.1:1"), wide), v4);
  EXPECT_EQ(key_of("web", address("[2001:db8:0:ffff::1]:1"), wide),
            key_of("web", address("[2001:db8::1]:1"), wide));
  // The same network under another prefix length is another client (a reload counts anew).
  EXPECT_NE(key_of("web", address("[2001:db8::]:1"), {32, 64}),
            key_of("web", address("[2001:db8::]:1"), {32, 128}));
  // /0: every client of the family is one.
  EXPECT_EQ(key_of("web", address("10.0.0.1:1"), {0, 0}),
            key_of("web", address("203.0.113.9:1"), {0, 0}));
}

// Issue 17: without a secret, anyone who knows a proxy's name could compute addresses whose
// keys crowd one window and so go uncounted. The secret decides where keys land; every
// process that maps the table shares it.
TEST_F(ClientLimitsTest, TheSecretDecidesWhereKeysLand) {
  ClientLimits::Secret other_secret = secret_;
  other_secret[0] ^= 1;

  std::size_t equal_homes = 0;
  constexpr int kClients = 1000;
  for (int i = 0; i < kClients; ++i) {
    const auto client = address(("198.51.100." + std::to_string(i % 250) + ":1").c_str());
    const std::string name = "web" + std::to_string(i / 250);
    const std::uint64_t key = key_of(name, client);
    EXPECT_EQ(ClientLimits::key_of(secret_, name, client), key);
    const std::uint64_t moved = ClientLimits::key_of(other_secret, name, client);
    EXPECT_NE(moved, key);
    equal_homes += ClientLimits::home_of(moved) == ClientLimits::home_of(key) ? 1 : 0;
  }
  // One bit of the secret moves every key: a home stays put by chance (1 in 65536).
  EXPECT_LE(equal_homes, 2u);
}

// The master draws the secret from getrandom at start: two draws differ, and a table keyed
// with one places clients as any other.
TEST_F(ClientLimitsTest, RandomSecretsDifferAndKeyATable) {
  const auto a = ClientLimits::random_secret();
  const auto b = ClientLimits::random_secret();
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_NE(*a, *b);  // equal by chance once in 2^128
  EXPECT_NE(*a, ClientLimits::Secret{});
  event::SharedMemory shm;
  ASSERT_FALSE(shm.create(ClientLimits::bytes_needed()));
  ClientLimits* keyed = ClientLimits::create(shm.data());
  ASSERT_NE(keyed, nullptr);
  const std::uint64_t key = ClientLimits::key_of(*a, "web", address("198.51.100.7:1"));
  EXPECT_NE(key, 0u);
  EXPECT_EQ(key, ClientLimits::key_of(*a, "web", address("198.51.100.7:2")));
  std::uint32_t bucket = 0;
  EXPECT_EQ(keyed->acquire(key, 1, 0, &bucket), Admit::ok);
  EXPECT_EQ(keyed->acquire(key, 1, 0, &bucket), Admit::limit);
}

TEST_F(ClientLimitsTest, KeysAre48BitsNeverZeroAndSpreadOverTheTable) {
  std::set<std::size_t> homes;
  std::set<std::uint64_t> keys;
  for (std::uint32_t i = 0; i < kBuckets; ++i) {
    // Consecutive addresses, which differ only in their last bytes.
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(0x0a000000 + i);
    const std::uint64_t key =
        key_of("p", event::SocketAddress(reinterpret_cast<const sockaddr*>(&sin), sizeof sin));
    ASSERT_NE(key, 0u);
    ASSERT_LT(key, std::uint64_t{1} << 48);
    keys.insert(key);
    homes.insert(ClientLimits::home_of(key));
  }
  EXPECT_EQ(keys.size(), kBuckets);
  // Thrown at random, 65536 keys land on 1 - 1/e of 65536 homes (41427).
  EXPECT_GT(homes.size(), 40'500u);
  EXPECT_LT(homes.size(), 42'500u);
}

TEST_F(ClientLimitsTest, LimitsPastSixteenBitsAreEnforcedAsTheLargestCount) {
  const std::uint64_t key = key_at(77, 1);
  std::uint32_t b = 0;
  for (std::uint32_t i = 0; i < ClientLimits::kMaxLimit; ++i) {
    ASSERT_EQ(limits_->acquire(key, 1 << 24, 0, &b), Admit::ok) << i;
  }
  EXPECT_EQ(limits_->acquire(key, 1 << 24, 0, &b), Admit::limit);
  EXPECT_EQ(limits_->count(key), ClientLimits::kMaxLimit);
  // The count did not wrap into the key's bits.
  EXPECT_EQ(limits_->count(key_at(77, 2)), 0u);
  for (std::uint32_t i = 0; i < ClientLimits::kMaxLimit; ++i) limits_->release(b, 0);
  EXPECT_EQ(limits_->count(key), 0u);
}

TEST_F(ClientLimitsTest, FullOnlyWhenTheWholeWindowIsTaken) {
  const std::size_t home = 1000;
  std::vector<std::uint32_t> buckets;
  for (std::uint64_t n = 1; n <= kWindow; ++n) {
    std::uint32_t b = 0;
    ASSERT_EQ(limits_->acquire(key_at(home, n), 5, 0, &b), Admit::ok) << n;
    EXPECT_EQ(b, home + n - 1);
    buckets.push_back(b);
  }
  // Keys already in the window still count there.
  std::uint32_t b = 0;
  ASSERT_EQ(limits_->acquire(key_at(home, kWindow), 5, 0, &b), Admit::ok);
  EXPECT_EQ(b, buckets.back());
  limits_->release(b, 0);
  const std::uint64_t late = key_at(home, kWindow + 1);
  EXPECT_EQ(limits_->acquire(late, 5, 0, &b), Admit::full);
  EXPECT_EQ(limits_->count(late), 0u);
  // A key one word further has one free word left in its window.
  ASSERT_EQ(limits_->acquire(key_at(home + 1, 1), 5, 0, &b), Admit::ok);
  EXPECT_EQ(b, home + kWindow);

  // A word whose sessions all ended is anyone's: the late key takes it.
  limits_->release(buckets[4], 0);
  EXPECT_EQ(limits_->count(key_at(home, 5)), 0u);
  ASSERT_EQ(limits_->acquire(late, 5, 0, &b), Admit::ok);
  EXPECT_EQ(b, buckets[4]);
  EXPECT_EQ(limits_->count(late), 1u);
  // And the key that left it finds the window full now.
  EXPECT_EQ(limits_->acquire(key_at(home, 5), 5, 0, &b), Admit::full);
}

TEST_F(ClientLimitsTest, WindowWrapsAroundTheTableEnd) {
  const std::size_t home = kBuckets - 2;
  std::uint32_t b = 0;
  std::vector<std::uint32_t> got;
  for (std::uint64_t n = 1; n <= 4; ++n) {
    ASSERT_EQ(limits_->acquire(key_at(home, n), 1, 0, &b), Admit::ok);
    got.push_back(b);
  }
  EXPECT_EQ(got, (std::vector<std::uint32_t>{kBuckets - 2, kBuckets - 1, 0, 1}));
  EXPECT_EQ(limits_->count(key_at(home, 3)), 1u);
  EXPECT_EQ(limits_->acquire(key_at(home, 3), 1, 0, &b), Admit::limit);
}

TEST_F(ClientLimitsTest, FreedWordsGoToTheFirstKeyThatNeedsOne) {
  const std::size_t home = 4242;
  const std::uint64_t k = key_at(home, 1);
  const std::uint64_t l = key_at(home, 2);
  std::uint32_t bk = 0;
  std::uint32_t bl = 0;
  ASSERT_EQ(limits_->acquire(k, 2, 0, &bk), Admit::ok);
  limits_->release(bk, 0);
  ASSERT_EQ(limits_->acquire(l, 2, 0, &bl), Admit::ok);
  EXPECT_EQ(bl, bk);  // k's word, empty: l claims it
  ASSERT_EQ(limits_->acquire(k, 2, 0, &bk), Admit::ok);
  EXPECT_EQ(bk, bl + 1);
  EXPECT_EQ(limits_->count(k), 1u);
  EXPECT_EQ(limits_->count(l), 1u);
}

// Two workers inserting one key at once can leave it in two words; the limit is on the sum.
TEST_F(ClientLimitsTest, AKeyInTwoWordsIsLimitedOnItsSum) {
  const std::size_t home = 9000;
  const std::uint64_t k = key_at(home, 3);
  words()[home + 2] = k << 16 | 2;
  words()[home + 6] = k << 16 | 2;
  EXPECT_EQ(limits_->count(k), 4u);
  std::uint32_t b = 0;
  ASSERT_EQ(limits_->acquire(k, 5, 0, &b), Admit::ok);
  EXPECT_EQ(b, home + 2);  // the first: the other drains
  EXPECT_EQ(limits_->acquire(k, 5, 0, &b), Admit::limit);
  EXPECT_EQ(limits_->count(k), 5u);
  EXPECT_EQ(words()[home + 2] & 0xffff, 3u);
}

TEST_F(ClientLimitsTest, WithoutAShareCountsAndRecoversNothing) {
  const std::uint64_t k = key_at(12, 1);
  std::uint32_t b = 0;
  ASSERT_EQ(limits_->acquire(k, 2, ClientLimits::kNoShare, &b), Admit::ok);
  limits_->recover(ClientLimits::kNoShare);
  limits_->recover(3);  // someone else's share: not this session
  EXPECT_EQ(limits_->count(k), 1u);
  limits_->release(b, ClientLimits::kNoShare);
  EXPECT_EQ(limits_->count(k), 0u);
  limits_->release(kBuckets, 0);  // out of range: ignored
  limits_->release(b, 0);         // already at 0: stays there
  EXPECT_EQ(limits_->count(k), 0u);
  EXPECT_EQ(words()[b] >> 16, k);
}

// ---- across processes -----------------------------------------------------------------------

struct Board {
  static constexpr int kKeys = 2;
  // Per limited key: up after an ok, down before the release, so never above what the table
  // counts; above the limit only if the table let too many in.
  std::atomic<int> held[kKeys];
  std::atomic<int> violations{0};
  std::atomic<int> full{0};
  std::atomic<long> admitted{0};
  std::atomic<long> refused{0};
  std::atomic<int> ready{0};
};

// Few children, for as many CPUs: many more mostly take turns, and races show far less (the
// table without its sum check let hundreds of sessions too many through in every run like this
// one, but only some of the runs with 6 children).
constexpr int kChildren = 3;
constexpr auto kHammerTime = std::chrono::milliseconds(500);
constexpr std::uint32_t kLimit = 1;
constexpr std::size_t kHammerHome = 31'000;

// Limited keys and churning unlimited ones all share a home, so that words ahead of a limited
// key keep emptying and filling while workers insert it: the race that can put it in two words.
void hammer(ClientLimits& limits, Board& board, std::size_t share, unsigned seed) {
  struct Held {
    int index;  // -1: a churn key
    std::uint32_t bucket;
  };
  std::vector<Held> held;
  std::mt19937 rng(seed);
  board.ready.fetch_add(1);
  while (board.ready.load() < kChildren) sched_yield();
  const auto end = std::chrono::steady_clock::now() + kHammerTime;
  for (unsigned round = 0; (round & 1023) != 0 || std::chrono::steady_clock::now() < end; ++round) {
    if (!held.empty() && (held.size() >= 4 || rng() % 2 == 0)) {
      const std::size_t i = rng() % held.size();
      if (held[i].index >= 0) board.held[held[i].index].fetch_sub(1);
      limits.release(held[i].bucket, share);
      held[i] = held.back();
      held.pop_back();
      continue;
    }
    const int index = static_cast<int>(rng() % (4 * Board::kKeys)) - 3 * Board::kKeys;
    const std::uint64_t key = key_at(kHammerHome, index >= 0 ? 1 + index : 100 - index);
    std::uint32_t bucket = 0;
    switch (limits.acquire(key, index >= 0 ? kLimit : 1000, share, &bucket)) {
      case Admit::ok:
        if (index >= 0 && board.held[index].fetch_add(1) + 1 > static_cast<int>(kLimit)) {
          board.violations.fetch_add(1);
        }
        board.admitted.fetch_add(1, std::memory_order_relaxed);
        held.push_back({index, bucket});
        break;
      case Admit::limit: board.refused.fetch_add(1, std::memory_order_relaxed); break;
      case Admit::full: board.full.fetch_add(1); break;
    }
    if (round % 256 == 0) sched_yield();
  }
  for (const Held& h : held) {
    if (h.index >= 0) board.held[h.index].fetch_sub(1);
    limits.release(h.bucket, share);
  }
}

TEST_F(ClientLimitsTest, ForkedWorkersNeverPassTheLimitTogether) {
  event::SharedMemory board_shm;
  ASSERT_FALSE(board_shm.create(sizeof(Board)));
  auto* board = new (board_shm.data()) Board;
  for (auto& h : board->held) h.store(0);

  std::vector<pid_t> children;
  for (int c = 0; c < kChildren; ++c) {
    const pid_t pid = ::fork();
    ASSERT_NE(pid, -1);
    if (pid == 0) {
      hammer(*limits_, *board, static_cast<std::size_t>(c), 1234u + static_cast<unsigned>(c));
      ::_exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(board->violations.load(), 0);
  EXPECT_EQ(board->full.load(), 0);
  EXPECT_GT(board->admitted.load(), 0);
  EXPECT_GT(board->refused.load(), 0);  // the limit was reached, often
  for (std::uint64_t n = 0; n < 200; ++n)
    EXPECT_EQ(limits_->count(key_at(kHammerHome, n)), 0u) << n;
  for (std::size_t b = 0; b < kBuckets; ++b) ASSERT_EQ(words()[b] & 0xffff, 0u) << b;
}

// How many pages of [p, p + bytes) are in memory: shmem pages count wherever they are mapped.
std::size_t resident_pages(void* p, std::size_t bytes) {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in(bytes / page);
  if (::mincore(p, bytes, in.data()) != 0) return ~std::size_t{0};
  std::size_t n = 0;
  for (unsigned char c : in) n += c & 1;
  return n;
}

TEST_F(ClientLimitsTest, RecoverTakesAKilledWorkersSessionsBackOut) {
  const std::uint64_t k1 = key_of("web", address("192.0.2.1:1"));
  const std::uint64_t k2 = key_of("web", address("192.0.2.2:1"));
  const std::uint64_t k3 = key_of("db", address("192.0.2.1:1"));
  constexpr std::size_t kDead = 7;
  constexpr std::size_t kAlive = 1;
  // The surviving worker's sessions, in the same words the dead one will use.
  std::vector<std::uint32_t> mine(2);
  for (auto& b : mine) ASSERT_EQ(limits_->acquire(k1, 100, kAlive, &b), Admit::ok);
  std::uint32_t b3 = 0;
  ASSERT_EQ(limits_->acquire(k3, 100, kAlive, &b3), Admit::ok);

  const pid_t pid = ::fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    std::uint32_t b = 0;
    bool ok = true;
    for (int i = 0; i < 5; ++i) ok &= limits_->acquire(k1, 100, kDead, &b) == Admit::ok;
    for (int i = 0; i < 3; ++i) ok &= limits_->acquire(k2, 100, kDead, &b) == Admit::ok;
    ok &= limits_->acquire(k3, 100, kDead, &b) == Admit::ok;
    // One released before dying: not recovered twice.
    limits_->release(b, kDead);
    if (!ok) ::_exit(1);
    ::kill(::getpid(), SIGKILL);
    ::_exit(2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  EXPECT_EQ(limits_->count(k1), 7u);
  EXPECT_EQ(limits_->count(k2), 3u);
  EXPECT_EQ(limits_->count(k3), 1u);
  const std::size_t share_bytes = kBuckets * sizeof(std::uint16_t);
  EXPECT_GT(resident_pages(share_pages(kDead), share_bytes), 0u);

  limits_->recover(kDead);
  EXPECT_EQ(limits_->count(k1), 2u);
  EXPECT_EQ(limits_->count(k2), 0u);
  EXPECT_EQ(limits_->count(k3), 1u);
  // The dead worker's pages are given back, not just zeroed.
  EXPECT_EQ(resident_pages(share_pages(kDead), share_bytes), 0u);

  // The share is clean for the next worker that gets it; the survivor's sessions are intact.
  std::uint32_t b = 0;
  ASSERT_EQ(limits_->acquire(k2, 100, kDead, &b), Admit::ok);
  limits_->recover(kDead);
  EXPECT_EQ(limits_->count(k2), 0u);
  for (auto m : mine) limits_->release(m, kAlive);
  limits_->release(b3, kAlive);
  EXPECT_EQ(limits_->count(k1), 0u);
  EXPECT_EQ(limits_->count(k3), 0u);
  limits_->recover(kAlive);  // a worker that ended cleanly: nothing to take
  EXPECT_EQ(limits_->count(k1), 0u);
}

namespace ownership {

// Polls `done` every 10 ms for at most 10 s.
template <typename Done>
bool eventually_true(Done&& done) {
  for (int i = 0; i < 1000 && !done(); ++i) ::usleep(10'000);
  return done();
}

// A child that takes `sessions` of `key` under `share` and then waits, alive, until killed.
pid_t worker_holding(ClientLimits& limits, std::uint64_t key, int sessions, std::size_t share) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  std::uint32_t b = 0;
  for (int i = 0; i < sessions; ++i) {
    if (limits.acquire(key, 100, share, &b) != Admit::ok) ::_exit(1);
  }
  for (;;) ::pause();
}

}  // namespace ownership

// Issue 17: a master killed during an upgrade leaves its workers draining on as orphans. The
// next master must not hand their shares to its own workers (whose deaths would then take the
// orphans' sessions out of the table), and once the orphans are gone their sessions are taken
// out by whoever finds them gone.
TEST_F(ClientLimitsTest, ASharesOwnerThatLivesKeepsItUntilItIsGone) {
  const std::uint64_t key = key_of("web", address("192.0.2.9:1"));
  const pid_t killed_master = ::getpid();  // owns the share while its worker is forked
  const std::size_t orphans_share = limits_->claim(killed_master);
  ASSERT_NE(orphans_share, ClientLimits::kNoShare);
  const pid_t orphan = ownership::worker_holding(*limits_, key, 3, orphans_share);
  ASSERT_NE(orphan, -1);
  limits_->assign(orphans_share, killed_master, orphan);
  EXPECT_EQ(limits_->owner(orphans_share), orphan);
  ASSERT_TRUE(ownership::eventually_true([&] { return limits_->count(key) == 3; }));

  // The next master (another pid) claims shares for its workers: never the orphan's.
  const pid_t next_master = 1;  // any pid but the owners'; init lives for ever
  std::set<std::size_t> claimed;
  for (int i = 0; i < 8; ++i) {
    const std::size_t s = limits_->claim(next_master);
    ASSERT_NE(s, ClientLimits::kNoShare);
    EXPECT_NE(s, orphans_share);
    claimed.insert(s);
  }
  EXPECT_EQ(claimed.size(), 8u);
  EXPECT_EQ(limits_->sweep(next_master), 0u);  // the orphan lives: its share stays
  EXPECT_EQ(limits_->count(key), 3u);

  // The orphan dies and is reaped by someone else than its master (here: this test).
  ASSERT_EQ(::kill(orphan, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(orphan, &status, 0), orphan);
  EXPECT_EQ(limits_->sweep(next_master), 1u);
  EXPECT_EQ(limits_->count(key), 0u);
  EXPECT_EQ(limits_->owner(orphans_share), 0);
  // A master that reaps a worker whose share was swept first gives nothing back twice.
  EXPECT_FALSE(limits_->give_back(orphans_share, orphan, killed_master));
}

TEST_F(ClientLimitsTest, GiveBackTakesTheWorkersSessionsOutAndFreesTheShare) {
  const std::uint64_t key = key_of("web", address("192.0.2.10:1"));
  const pid_t master = ::getpid();
  const std::size_t share = limits_->claim(master);
  ASSERT_NE(share, ClientLimits::kNoShare);
  EXPECT_EQ(limits_->owner(share), master);
  const pid_t worker = ownership::worker_holding(*limits_, key, 2, share);
  ASSERT_NE(worker, -1);
  limits_->assign(share, master, worker);
  ASSERT_TRUE(ownership::eventually_true([&] { return limits_->count(key) == 2; }));
  // Dead but not reaped (a zombie): still its, whoever sweeps.
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(worker), &info, WEXITED | WNOWAIT), 0);
  EXPECT_EQ(limits_->sweep(1), 0u);
  EXPECT_EQ(limits_->count(key), 2u);
  int status = 0;
  ASSERT_EQ(::waitpid(worker, &status, 0), worker);
  EXPECT_TRUE(limits_->give_back(share, worker, master));
  EXPECT_EQ(limits_->count(key), 0u);
  EXPECT_EQ(limits_->owner(share), 0);
  EXPECT_EQ(limits_->claim(master), share);  // free again: the first free one
}

TEST_F(ClientLimitsTest, NoShareWhenAllAreTaken) {
  for (std::size_t i = 0; i < ClientLimits::kShares; ++i) {
    ASSERT_EQ(limits_->claim(1), i);
  }
  EXPECT_EQ(limits_->claim(1), ClientLimits::kNoShare);
}

}  // namespace
}  // namespace ferry::worker
