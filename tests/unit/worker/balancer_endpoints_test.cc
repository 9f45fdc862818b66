// Tests of worker/upstream/balancer with a DNS SRV service's endpoints: each address with its
// own port, weight and backup flag, and records that change those live (the peers stay: a
// session holds its own).
#include <arpa/inet.h>
#include <netinet/in.h>

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "conf/values.h"
#include "worker/upstream/balancer.h"

namespace ferry::worker {
namespace {

using event::Msec;

const event::TimePoint t0{Msec{1'000'000}};

conf::Endpoint at(const std::string& text, int weight, bool backup = false) {
  return {std::get<conf::Address>(conf::parse_address(text)), weight, backup, {}};
}

// An upstream of one service server that resolved at load to `endpoints`.
conf::Upstream service_group(conf::Balance balance, std::vector<conf::Endpoint> endpoints) {
  conf::Upstream u;
  u.name = "u";
  u.balance = balance;
  conf::Server s;
  s.service = "_pg._tcp.db.test";
  s.addresses = std::move(endpoints);
  u.servers.push_back(s);
  return u;
}

event::SocketAddress client(std::uint32_t ip) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(ip);
  sin.sin_port = htons(40000);
  return event::SocketAddress(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
}

// How many of `n` sessions (each released at once) each address gets.
std::map<std::string, int> spread(Balancer& b, int n) {
  std::map<std::string, int> out;
  for (int i = 0; i < n; ++i) {
    TriedSet tried;
    Peer* p = b.pick(client(0x7f000001), tried, t0);
    if (p == nullptr) {
      ++out["-"];
      continue;
    }
    ++out[p->address.to_string()];
    b.release(*p, false, t0);
  }
  return out;
}

TEST(BalancerEndpointsTest, EachAddressServesWithItsRecordsWeightAndPort) {
  const conf::Upstream u =
      service_group(conf::Balance::round_robin, {at("127.0.0.1:7001", 3), at("127.0.0.1:7002", 1)});
  Balancer b(u);
  ASSERT_EQ(b.size(), 2U);
  EXPECT_EQ(b.peers()[0].name, "_pg._tcp.db.test");  // the service names it in the statistics
  EXPECT_EQ(spread(b, 400),
            (std::map<std::string, int>{{"127.0.0.1:7001", 300}, {"127.0.0.1:7002", 100}}));
}

TEST(BalancerEndpointsTest, HigherPrioritiesServeOnlyWhenThePrimariesCannot) {
  const conf::Upstream u =
      service_group(conf::Balance::round_robin, {at("127.0.0.1:1", 1), at("127.0.0.1:2", 1, true)});
  Balancer b(u);
  EXPECT_EQ(spread(b, 4), (std::map<std::string, int>{{"127.0.0.1:1", 4}}));
  TriedSet tried;
  Peer* p = b.pick(client(1), tried, t0);
  ASSERT_NE(p, nullptr);
  b.release(*p, true, t0);  // max_fails 1: failed for fail_timeout
  EXPECT_EQ(spread(b, 3), (std::map<std::string, int>{{"127.0.0.1:2", 3}}));
}

TEST(BalancerEndpointsTest, ChangedRecordsChangeWeightsAndTiersOfTheSamePeers) {
  conf::Upstream u =
      service_group(conf::Balance::round_robin, {at("127.0.0.1:1", 1), at("127.0.0.1:2", 1, true)});
  Balancer b(u);
  Peer* held = &b.peers()[0];
  b.set_addresses(u.servers[0],
                  std::vector<conf::Endpoint>{at("127.0.0.1:1", 1), at("127.0.0.1:2", 3)});
  EXPECT_EQ(b.size(), 2U) << "the same addresses keep their peers";
  EXPECT_EQ(held, &b.peers()[0]);
  EXPECT_FALSE(b.peers()[1].backup);
  EXPECT_EQ(spread(b, 400),
            (std::map<std::string, int>{{"127.0.0.1:1", 100}, {"127.0.0.1:2", 300}}));
  // The first becomes a backup: the second alone serves.
  b.set_addresses(u.servers[0],
                  std::vector<conf::Endpoint>{at("127.0.0.1:1", 1, true), at("127.0.0.1:2", 3)});
  EXPECT_EQ(spread(b, 5), (std::map<std::string, int>{{"127.0.0.1:2", 5}}));
}

TEST(BalancerEndpointsTest, AGoneTargetKeepsItsPeerForTheSessionsOnIt) {
  conf::Upstream u =
      service_group(conf::Balance::least_conn, {at("127.0.0.1:1", 1), at("127.0.0.1:2", 1)});
  Balancer b(u);
  TriedSet tried;
  Peer* p = b.pick(client(1), tried, t0);
  ASSERT_NE(p, nullptr);
  const std::string address = p->address.to_string();
  const std::string other = address == "127.0.0.1:1" ? "127.0.0.1:2" : "127.0.0.1:1";
  b.set_addresses(u.servers[0], std::vector<conf::Endpoint>{at(other, 1), at("127.0.0.1:3", 2)});
  EXPECT_TRUE(p->gone);
  EXPECT_EQ(p->address.to_string(), address) << "a peer a session holds is not reused";
  EXPECT_EQ(p->conns, 1);
  const auto s = spread(b, 30);
  EXPECT_EQ(s.count(address), 0U);
  EXPECT_EQ(s.at(other) + s.at("127.0.0.1:3"), 30);
  b.release(*p, false, t0);
  EXPECT_EQ(p->conns, 0);
}

}  // namespace
}  // namespace ferry::worker
