// Tests of worker/upstream/balancer: smooth weighted round robin, least connections, consistent
// hashing, passive health, backups, max_conns, and failover through the tried set.
#include "worker/upstream/balancer.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "conf/values.h"

namespace ferry::worker {
namespace {

using event::Msec;

conf::Upstream group(conf::Balance balance, std::vector<std::pair<int, int>> servers) {
  conf::Upstream u;
  u.name = "u";
  u.balance = balance;
  for (auto [port, weight] : servers) {
    conf::Server s;
    s.address = std::get<conf::Address>(conf::parse_address("127.0.0.1:" + std::to_string(port)));
    s.weight = weight;
    u.servers.push_back(s);
  }
  return u;
}

event::SocketAddress client(std::uint32_t ip) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(ip);
  sin.sin_port = htons(40000);
  return event::SocketAddress(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
}

// A board for `cfg`'s servers, in `memory` (what the master maps shared before it forks).
HealthBoard* board_for(const conf::Config& cfg, std::vector<unsigned char>& memory) {
  memory.assign(HealthBoard::bytes_for(cfg), 0);
  return HealthBoard::create(memory.data(), cfg);
}

// One upstream of `balance` over ports 1..n, the first limited to `max_conns`.
conf::Config limited(conf::Balance balance, int n, int max_conns) {
  conf::Config cfg;
  std::vector<std::pair<int, int>> servers;
  for (int i = 1; i <= n; ++i) servers.emplace_back(i, 1);
  cfg.upstreams.push_back(group(balance, servers));
  cfg.upstreams[0].servers[0].max_conns = max_conns;
  return cfg;
}

const event::TimePoint t0{Msec{1'000'000}};

std::string pick_name(Balancer& b, event::TimePoint now = t0) {
  TriedSet tried;
  Peer* p = b.pick(client(0x7f000001), tried, now);
  if (p == nullptr) return "-";
  b.release(*p, false, now);
  return p->name;
}

conf::Address address_of(const std::string& text) {
  return std::get<conf::Address>(conf::parse_address(text));
}

// What the checker writes: its verdict on `address` in `health` (in the place it has, else in a
// free one).
void verdict(ServerHealth& health, const std::string& address, std::uint64_t passes, bool down) {
  const conf::Address a = address_of(address);
  const std::uint64_t key =
      AddressVerdict::key_of(event::SocketAddress(a.sockaddr_ptr(), a.length));
  std::size_t place = ServerHealth::kAddresses;
  if (health.find(key, place) == 0) {
    place = 0;
    while (health.addresses[place].load() != 0) ++place;
  }
  health.addresses[place].store(AddressVerdict::word(key, passes, down));
}

// The addresses of `count` picks of one session, the peers kept (not released).
std::set<std::string> picked_addresses(Balancer& b, int count, std::uint32_t key = 0x7f000001) {
  std::set<std::string> out;
  for (int i = 0; i < count; ++i) {
    TriedSet tried;
    Peer* p = b.pick(client(key), tried, t0);
    if (p != nullptr) out.insert(p->address.to_string());
  }
  return out;
}

// A session's tried servers survive a re-resolution that adds a peer between its tries.
TEST(BalancerTest, TheTriedSetKeepsWhatWasTriedWhenAPeerIsAdded) {
  conf::Config cfg;
  cfg.upstreams.push_back(group(conf::Balance::round_robin, {{1, 1}, {2, 1}}));
  Balancer b(cfg.upstreams[0]);
  TriedSet tried;
  std::set<Peer*> seen;
  seen.insert(b.pick(client(1), tried, t0));
  const conf::Server& first = cfg.upstreams[0].servers[0];
  b.set_addresses(first, {first.address, address_of("127.0.0.2:1")});
  for (int i = 0; i < 2; ++i) seen.insert(b.pick(client(1), tried, t0));
  EXPECT_EQ(seen.size(), 3U);
  EXPECT_EQ(seen.count(nullptr), 0U);
  EXPECT_EQ(b.pick(client(1), tried, t0), nullptr) << "every peer was tried";
}

// least_conn and hash use the addresses a re-resolution adds, and not those it removes.
class SetAddressesTest : public ::testing::TestWithParam<conf::Balance> {};

TEST_P(SetAddressesTest, AddedAddressesServeAndRemovedOnesDoNot) {
  conf::Config cfg;
  cfg.upstreams.push_back(group(GetParam(), {{1, 1}}));
  Balancer b(cfg.upstreams[0]);
  const conf::Server& server = cfg.upstreams[0].servers[0];
  b.set_addresses(
      server, {address_of("127.0.0.2:1"), address_of("127.0.0.3:1"), address_of("127.0.0.4:1")});
  std::set<std::string> all;
  if (GetParam() == conf::Balance::hash) {
    for (std::uint32_t key = 1; key <= 64; ++key) {
      for (const auto& a : picked_addresses(b, 1, key)) all.insert(a);
    }
  } else {
    all = picked_addresses(b, 3);  // held: least_conn spreads them
  }
  EXPECT_EQ(all, (std::set<std::string>{"127.0.0.2:1", "127.0.0.3:1", "127.0.0.4:1"}));
}

// The checks' verdict is per address: one found down takes only itself out, while the server's
// other addresses (one the checks have no verdict on yet included) keep serving.
TEST_P(SetAddressesTest, AnAddressDownByTheChecksLeavesTheServersOthersServing) {
  conf::Config cfg;
  cfg.upstreams.push_back(group(GetParam(), {{1, 1}}));
  ServerHealth health[1];
  Balancer b(cfg.upstreams[0], health);
  const conf::Server& server = cfg.upstreams[0].servers[0];
  b.set_addresses(
      server, {address_of("127.0.0.2:1"), address_of("127.0.0.3:1"), address_of("127.0.0.4:1")});
  verdict(health[0], "127.0.0.2:1", 0, true);
  verdict(health[0], "127.0.0.3:1", 1, false);
  std::set<std::string> all;
  for (std::uint32_t key = 1; key <= 64; ++key) {
    TriedSet tried;
    Peer* p = b.pick(client(key), tried, t0);
    ASSERT_NE(p, nullptr);
    all.insert(p->address.to_string());
    b.release(*p, false, t0);
  }
  EXPECT_EQ(all, (std::set<std::string>{"127.0.0.3:1", "127.0.0.4:1"}));
}

// A name that keeps moving does not grow the group: a new address takes the place of a gone
// peer no session holds; one a session holds keeps its address until the session is done.
TEST_P(SetAddressesTest, GonePeersAreReusedOnceNoSessionHoldsThem) {
  conf::Config cfg;
  cfg.upstreams.push_back(group(GetParam(), {{1, 1}}));
  Balancer b(cfg.upstreams[0]);
  const conf::Server& server = cfg.upstreams[0].servers[0];
  for (int i = 0; i < 1000; ++i) {
    const std::string a = "10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250) + ":1";
    b.set_addresses(server, {address_of(a), address_of("127.0.0.9:1")});
  }
  EXPECT_LE(b.size(), 3U);

  TriedSet tried;
  Peer* held = b.pick(client(1), tried, t0);
  ASSERT_NE(held, nullptr);
  const std::string address = held->address.to_string();
  const std::size_t before = b.size();
  b.set_addresses(server, {address_of("10.9.0.1:1")});
  b.set_addresses(server, {address_of("10.9.0.2:1")});
  EXPECT_EQ(held->address.to_string(), address) << "a held peer is not reused";
  EXPECT_TRUE(held->gone);
  b.release(*held, false, t0);
  for (int i = 3; i < 50; ++i) {
    b.set_addresses(server, {address_of("10.9.0." + std::to_string(i) + ":1")});
  }
  EXPECT_LE(b.size(), std::max<std::size_t>(before, 3U));
  EXPECT_EQ(picked_addresses(b, 1, 5), (std::set<std::string>{"10.9.0.49:1"}));
}

INSTANTIATE_TEST_SUITE_P(BalancerTest, SetAddressesTest,
                         ::testing::Values(conf::Balance::least_conn, conf::Balance::hash),
                         [](const auto& info) {
                           return info.param == conf::Balance::hash ? "Hash" : "LeastConn";
                         });

TEST(BalancerTest, SmoothWeightedRoundRobinInterleaves) {
  // nginx's example: weights 5, 1, 1 give a a b a c a a — never a long run of one server.
  const conf::Upstream u = group(conf::Balance::round_robin, {{1, 5}, {2, 1}, {3, 1}});
  Balancer b(u);
  std::string seq;
  for (int i = 0; i < 7; ++i) seq += pick_name(b).back();
  EXPECT_EQ(seq, "1121311");
}

TEST(BalancerTest, WeightsSplitExactlyOverAFullCycle) {
  const conf::Upstream u = group(conf::Balance::round_robin, {{1, 1}, {2, 1}, {3, 2}});
  Balancer b(u);
  std::map<std::string, int> count;
  for (int i = 0; i < 4000; ++i) ++count[pick_name(b)];
  EXPECT_EQ(count["127.0.0.1:1"], 1000);
  EXPECT_EQ(count["127.0.0.1:2"], 1000);
  EXPECT_EQ(count["127.0.0.1:3"], 2000);
}

TEST(BalancerTest, LeastConnPrefersTheIdleServerPerWeight) {
  const conf::Upstream u = group(conf::Balance::least_conn, {{1, 1}, {2, 1}, {3, 2}});
  Balancer b(u);
  auto peer = [&](const std::string& name) -> Peer& {
    for (Peer& p : b.peers()) {
      if (p.name == name) return p;
    }
    throw std::runtime_error(name);
  };
  peer("127.0.0.1:1").conns = 5;
  peer("127.0.0.1:3").conns = 10;
  EXPECT_EQ(pick_name(b), "127.0.0.1:2") << "the idle server";
  // One session each: the weight-2 server is the least loaded per unit of weight.
  peer("127.0.0.1:1").conns = 1;
  peer("127.0.0.1:2").conns = 1;
  peer("127.0.0.1:3").conns = 1;
  EXPECT_EQ(pick_name(b), "127.0.0.1:3");
  // Equal load per weight: smooth round robin among them, never one server only.
  peer("127.0.0.1:1").conns = 0;
  peer("127.0.0.1:2").conns = 0;
  peer("127.0.0.1:3").conns = 0;
  std::map<std::string, int> count;
  for (int i = 0; i < 400; ++i) ++count[pick_name(b)];
  EXPECT_EQ(count.size(), 3U);
}

TEST(BalancerTest, HashKeepsAClientOnOneServerAndMovesAboutOneNthWhenOneIsAdded) {
  const conf::Upstream three = group(conf::Balance::hash, {{1, 1}, {2, 1}, {3, 1}});
  const conf::Upstream four = group(conf::Balance::hash, {{1, 1}, {2, 1}, {3, 1}, {4, 1}});
  Balancer b3(three);
  Balancer b4(four);
  int moved = 0;
  std::map<std::string, int> spread;
  constexpr int kClients = 10'000;
  for (std::uint32_t ip = 0; ip < kClients; ++ip) {
    const auto c = client(0x0a000000 + ip * 7919);
    TriedSet t;
    Peer* first = b3.pick(c, t, t0);
    ASSERT_NE(first, nullptr);
    b3.release(*first, false, t0);
    TriedSet again;
    Peer* second = b3.pick(c, again, t0);
    ASSERT_EQ(first, second) << "a client must stay on its server";
    b3.release(*second, false, t0);
    ++spread[first->name];
    TriedSet t4;
    Peer* after = b4.pick(c, t4, t0);
    b4.release(*after, false, t0);
    moved += after->name != first->name;
  }
  for (const auto& [name, n] : spread) {
    EXPECT_GT(n, kClients / 3 * 7 / 10) << name << " gets too few keys";
    EXPECT_LT(n, kClients / 3 * 13 / 10) << name << " gets too many keys";
  }
  // Ideal: 1/4 of the keys move to the new server, none between the old ones.
  EXPECT_GT(moved, kClients * 15 / 100);
  EXPECT_LT(moved, kClients * 35 / 100);
}

TEST(BalancerTest, FailuresMakeAServerUnavailableForFailTimeoutThenOneTrialDecides) {
  conf::Upstream u = group(conf::Balance::round_robin, {{1, 1}, {2, 1}});
  u.servers[0].max_fails = 2;
  u.servers[0].fail_timeout = Msec{10'000};
  Balancer b(u);
  Peer& bad = b.peers()[0];
  bad.conns = 1;
  b.release(bad, true, t0);
  bad.conns = 1;
  b.release(bad, true, t0);
  ASSERT_EQ(bad.fails, 2);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(pick_name(b, t0 + Msec{5'000}), "127.0.0.1:2");

  // After fail_timeout one session may try it; while that trial runs, it gets no other.
  const auto later = t0 + Msec{10'001};
  TriedSet trial_tried;
  Peer* trial = nullptr;
  for (int i = 0; i < 4 && trial == nullptr; ++i) {
    TriedSet t;
    Peer* p = b.pick(client(1), t, later);
    if (p == &bad) {
      trial = p;
    } else {
      b.release(*p, false, later);
    }
  }
  ASSERT_EQ(trial, &bad) << "the server must get a trial after fail_timeout";
  for (int i = 0; i < 6; ++i) EXPECT_EQ(pick_name(b, later), "127.0.0.1:2");
  b.release(*trial, false, later);  // the trial succeeded
  std::map<std::string, int> count;
  for (int i = 0; i < 10; ++i) ++count[pick_name(b, later)];
  EXPECT_GT(count["127.0.0.1:1"], 0) << "a successful trial makes the server available again";
}

TEST(BalancerTest, BackupsServeOnlyWhenEveryPrimaryIsUnavailable) {
  conf::Upstream u = group(conf::Balance::round_robin, {{1, 1}, {2, 1}, {3, 1}});
  u.servers[2].backup = true;
  u.servers[1].down = true;
  Balancer b(u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(pick_name(b), "127.0.0.1:1");
  TriedSet tried;
  Peer* first = b.pick(client(1), tried, t0);
  ASSERT_EQ(first->name, "127.0.0.1:1");
  Peer* second = b.pick(client(1), tried, t0);  // the primary was tried: failover to backup
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->name, "127.0.0.1:3");
  EXPECT_EQ(b.pick(client(1), tried, t0), nullptr) << "every server was tried";
}

TEST(BalancerTest, MaxConnsCapsAServer) {
  conf::Upstream u = group(conf::Balance::round_robin, {{1, 1}, {2, 1}});
  u.servers[0].max_conns = 1;
  Balancer b(u);
  std::vector<Peer*> held;
  std::map<std::string, int> count;
  for (int i = 0; i < 6; ++i) {
    TriedSet t;
    Peer* p = b.pick(client(1), t, t0);
    ++count[p->name];
    held.push_back(p);
  }
  EXPECT_EQ(count["127.0.0.1:1"], 1);
  EXPECT_EQ(count["127.0.0.1:2"], 5);
}

// Two workers' balancers over one board: max_conns holds for their sum, and the master takes
// a dead worker's sessions back out of the count.
TEST(BalancerTest, MaxConnsHoldsAcrossWorkersSharingTheBoard) {
  conf::Config cfg = limited(conf::Balance::round_robin, 2, 2);
  const conf::Upstream& u = cfg.upstreams[0];
  std::vector<unsigned char> memory;
  HealthBoard* board = board_for(cfg, memory);
  const SharedConns one[] = {board->conns(cfg, 0, 0, 0), board->conns(cfg, 0, 1, 0)};
  const SharedConns two[] = {board->conns(cfg, 0, 0, 1), board->conns(cfg, 0, 1, 1)};
  Balancer w1(u, nullptr, one);
  Balancer w2(u, nullptr, two);
  std::map<std::string, int> count;
  for (int i = 0; i < 4; ++i) {
    for (Balancer* b : {&w1, &w2}) {
      TriedSet t;
      Peer* p = b->pick(client(1), t, t0);
      ASSERT_NE(p, nullptr);
      ++count[p->name];
    }
  }
  EXPECT_EQ(count["127.0.0.1:1"], 2) << "max_conns = 2 across both workers";
  EXPECT_EQ(count["127.0.0.1:2"], 6);
  EXPECT_EQ(one[0].total->load(), 2U);
  board->recover(HealthBoard::servers_of(cfg), 0);  // worker one died with its sessions
  board->recover(HealthBoard::servers_of(cfg), 1);
  EXPECT_EQ(one[0].total->load(), 0U);
  count.clear();
  for (int i = 0; i < 2; ++i) {
    TriedSet t;
    Peer* p = w1.pick(client(1), t, t0);
    ASSERT_NE(p, nullptr);
    ++count[p->name];
  }
  EXPECT_EQ(count["127.0.0.1:1"], 1) << "the dead workers' places are free again";
}

// A worker killed between its two counts leaves its share one too high, and a worker may write
// garbage into its share: what the master takes back never goes below 0, so the server is not
// blocked until the next reload (the total wrapped to 2^32 - 1 did).
TEST(BalancerTest, AShareTooHighDoesNotBlockTheServerOnceRecovered) {
  conf::Config cfg = limited(conf::Balance::round_robin, 2, 1);
  const conf::Upstream& u = cfg.upstreams[0];
  std::vector<unsigned char> memory;
  HealthBoard* board = board_for(cfg, memory);
  const SharedConns dead = board->conns(cfg, 0, 0, 0);
  const SharedConns garbled = board->conns(cfg, 0, 0, 1);
  dead.total->store(1);
  *dead.mine = 2;  // counted a session it had already taken off the total
  *garbled.mine = 0xFFFFFFFFU;
  board->recover(HealthBoard::servers_of(cfg), 0);
  EXPECT_EQ(dead.total->load(), 0U);
  board->recover(HealthBoard::servers_of(cfg), 1);
  EXPECT_EQ(dead.total->load(), 0U);
  const SharedConns live[] = {board->conns(cfg, 0, 0, 2), board->conns(cfg, 0, 1, 2)};
  Balancer b(u, nullptr, live);
  std::map<std::string, int> count;
  for (int i = 0; i < 4; ++i) {
    TriedSet t;
    Peer* p = b.pick(client(1), t, t0);
    ASSERT_NE(p, nullptr);
    ++count[p->name];
  }
  EXPECT_EQ(count["127.0.0.1:1"], 1) << "the server takes its one session";
  EXPECT_EQ(dead.total->load(), 1U);
}

// Another worker takes (and gives back) the last max_conns place of the least loaded server
// while this one picks: the pick must go elsewhere, never find no server between its passes over
// the peers (a null dereference crashed the worker). The many servers widen that window.
TEST(BalancerTest, LeastConnSurvivesAnotherWorkerTakingTheLastPlaceMidPick) {
  conf::Config cfg = limited(conf::Balance::least_conn, 200, 1);
  const conf::Upstream& u = cfg.upstreams[0];
  std::vector<unsigned char> memory;
  HealthBoard* board = board_for(cfg, memory);
  std::vector<SharedConns> shared;
  for (std::size_t i = 0; i < u.servers.size(); ++i) shared.push_back(board->conns(cfg, 0, i, 0));
  Balancer b(u, nullptr, shared.data());
  for (std::size_t i = 1; i < b.size(); ++i) b.peers()[i].conns = 1;  // busier than the first
  std::atomic<std::uint32_t>& total = *shared[0].total;
  std::atomic<bool> stop{false};
  std::thread other([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      total.store(1, std::memory_order_relaxed);
      total.store(0, std::memory_order_relaxed);
    }
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  int first = 0;
  for (int i = 0; i < 50'000 && std::chrono::steady_clock::now() < deadline; ++i) {
    TriedSet tried;
    Peer* p = b.pick(client(1), tried, t0);
    if (p == nullptr) break;
    if (p == &b.peers()[0]) {
      ++first;
      b.release(*p, false, t0);
    }
  }
  stop.store(true);
  other.join();
  EXPECT_GT(first, 0);
}

// Every server failed passively: the next session tries them rather than being refused, in
// every balancing method (issue 17, item 13).
class EveryServerFailedTest : public ::testing::TestWithParam<conf::Balance> {};

// Two servers that fail after `max_fails` failures, for 10 seconds.
conf::Upstream two_failing(conf::Balance balance, int max_fails) {
  conf::Upstream u = group(balance, {{1, 1}, {2, 1}});
  for (conf::Server& s : u.servers) {
    s.max_fails = max_fails;
    s.fail_timeout = Msec{10'000};
  }
  return u;
}

TEST_P(EveryServerFailedTest, TheFailedServersAreTriedRatherThanNone) {
  const conf::Upstream u = two_failing(GetParam(), 1);
  Balancer b(u);
  for (Peer& p : b.peers()) {
    p.conns = 1;
    b.release(p, true, t0);
  }
  const auto soon = t0 + Msec{100};
  TriedSet tried;
  Peer* first = b.pick(client(1), tried, soon);
  ASSERT_NE(first, nullptr) << "every server failed: one must be tried anyway";
  Peer* second = b.pick(client(1), tried, soon);
  ASSERT_NE(second, nullptr) << "the other failed server is tried next";
  EXPECT_NE(first, second);
  EXPECT_EQ(b.pick(client(1), tried, soon), nullptr) << "every server was tried";
  // The server that came back serves; from then on it is simply available.
  b.release(*first, false, soon);
  b.release(*second, true, soon);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(pick_name(b, soon), first->name);
}

// Failover is not that case: the healthy server refused this session (once, under max_fails),
// the other one has failed: the session ends rather than trying a server known failed.
TEST_P(EveryServerFailedTest, FailoverFromTheHealthyServerDoesNotTryFailedOnes) {
  const conf::Upstream u = two_failing(GetParam(), 2);
  Balancer b(u);
  Peer& bad = b.peers()[0];
  for (int i = 0; i < 2; ++i) {
    bad.conns = 1;
    b.release(bad, true, t0);
  }
  const auto soon = t0 + Msec{100};
  TriedSet tried;
  Peer* first = b.pick(client(1), tried, soon);
  ASSERT_EQ(first, &b.peers()[1]);
  b.release(*first, true, soon);  // refused: one failure of two
  EXPECT_EQ(b.pick(client(1), tried, soon), nullptr);
}

TEST_P(EveryServerFailedTest, ServersDownByChecksStayOutEvenThen) {
  conf::Upstream u = group(GetParam(), {{1, 1}, {2, 1}, {3, 1}});
  for (conf::Server& s : u.servers) s.max_fails = 1;
  u.servers[2].down = true;  // by configuration
  ServerHealth health[3];
  verdict(health[0], "127.0.0.1:1", 0, true);  // by the active checks
  Balancer b(u, health);
  for (Peer& p : b.peers()) {
    p.conns = 1;
    b.release(p, true, t0);
  }
  for (int i = 0; i < 5; ++i) EXPECT_EQ(pick_name(b, t0 + Msec{100}), "127.0.0.1:2");
  verdict(health[1], "127.0.0.1:2", 0, true);
  EXPECT_EQ(pick_name(b, t0 + Msec{100}), "-") << "no server left that the checks allow";
}

TEST_P(EveryServerFailedTest, APassingCheckClearsPassiveFailures) {
  const conf::Upstream u = two_failing(GetParam(), 1);
  ServerHealth health[2];
  verdict(health[0], "127.0.0.1:1", 7, false);  // passes before the failure do not count
  Balancer b(u, health);
  Peer& bad = b.peers()[0];
  verdict(health[0], "127.0.0.1:1", 8, false);
  bad.conns = 1;
  b.release(bad, true, t0);
  const auto soon = t0 + Msec{100};
  for (int i = 0; i < 8; ++i) {
    TriedSet tried;
    Peer* p = b.pick(client(static_cast<std::uint32_t>(i) * 7919), tried, soon);
    ASSERT_NE(p, nullptr);
    EXPECT_NE(p, &bad) << "failed within fail_timeout";
    b.release(*p, false, soon);
  }
  verdict(health[0], "127.0.0.1:1", 9, false);  // the check passed after the failure
  EXPECT_FALSE(b.passively_failed(bad, soon));
  std::map<std::string, int> count;
  for (int i = 0; i < 64; ++i) {
    TriedSet tried;
    Peer* p = b.pick(client(static_cast<std::uint32_t>(i) * 7919), tried, soon);
    ASSERT_NE(p, nullptr);
    ++count[p->name];
    b.release(*p, false, soon);
  }
  EXPECT_GT(count["127.0.0.1:1"], 0) << "the check brought the server back at once";
}

INSTANTIATE_TEST_SUITE_P(Methods, EveryServerFailedTest,
                         ::testing::Values(conf::Balance::round_robin, conf::Balance::least_conn,
                                           conf::Balance::hash),
                         [](const auto& info) {
                           switch (info.param) {
                             case conf::Balance::least_conn: return std::string("least_conn");
                             case conf::Balance::hash: return std::string("hash");
                             default: return std::string("round_robin");
                           }
                         });

}  // namespace
}  // namespace ferry::worker
