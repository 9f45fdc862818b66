// Tests of the active checks' verdicts as the balancer reads them (worker/upstream/health_board.h
// and balancer): exact IPv4 keys, passive failures that only a passing check clears (whatever the
// balancer remembers of its looks at the board), and an address that leaves the name's answer
// and comes back with its failures.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include <gtest/gtest.h>

#include "conf/values.h"
#include "worker/upstream/balancer.h"
#include "worker/upstream/health_board.h"

namespace ferry::worker {
namespace {

using event::Msec;

const event::TimePoint start_time{Msec{5'000'000}};

conf::Address at(const std::string& text) {
  return std::get<conf::Address>(conf::parse_address(text));
}

std::uint64_t key_at(const std::string& text) {
  const conf::Address a = at(text);
  return AddressVerdict::key_of(event::SocketAddress(a.sockaddr_ptr(), a.length));
}

// An upstream of one server at 127.0.0.1:1, failed after one failure for 10 s.
conf::Upstream one_server() {
  conf::Upstream u;
  u.name = "u";
  conf::Server s;
  s.address = at("127.0.0.1:1");
  s.max_fails = 1;
  s.fail_timeout = Msec{10'000};
  u.servers.push_back(s);
  return u;
}

// The checker's word on 127.0.0.1:1, up, with `passes` checks that passed.
std::uint64_t passed(std::uint64_t passes) {
  return AddressVerdict::word(key_at("127.0.0.1:1"), passes, false);
}

// A session on `p` failed at `at`.
void fail(Balancer& b, Peer& p, event::TimePoint at) {
  p.conns = 1;
  b.release(p, true, at);
}

// The peer of `b` at `address`.
Peer& peer_at(Balancer& b, const std::string& address) {
  for (Peer& p : b.peers()) {
    if (p.address.to_string() == address) return p;
  }
  ADD_FAILURE() << "no peer " << address;
  return b.peers()[0];
}

TEST(HealthVerdictTest, IPv4KeysAreTheAddressAndPortThemselves) {
  EXPECT_EQ(key_at("127.0.0.1:80"), std::uint64_t{0x7f000001} << 16 | 80);
  EXPECT_EQ(key_at("10.0.0.2:65535"), std::uint64_t{0x0a000002} << 16 | 65535);
  // IPv6 keys are hashed, flagged apart from every IPv4 key.
  const std::uint64_t v6 = key_at("[::1]:80");
  EXPECT_NE(v6 & AddressVerdict::kHashed, 0U);
  EXPECT_NE(v6, key_at("[::1]:81"));
  const std::uint64_t w = AddressVerdict::word(key_at("255.255.255.255:65535"), 3, true);
  EXPECT_EQ(AddressVerdict::key(w), key_at("255.255.255.255:65535"));
  EXPECT_EQ(AddressVerdict::passes(w), 3U);
  EXPECT_TRUE(AddressVerdict::down(w));
}

// A word that disappears (its place freed) is no passing check: the failures stand.
TEST(HealthVerdictTest, AVanishedVerdictDoesNotClearPassiveFailures) {
  const conf::Upstream u = one_server();
  ServerHealth health[1];
  health[0].addresses[0].store(passed(5));
  Balancer b(u, health);
  Peer& p = b.peers()[0];
  fail(b, p, start_time);
  const auto soon = start_time + Msec{100};
  EXPECT_TRUE(b.passively_failed(p, soon));
  health[0].addresses[0].store(0);
  EXPECT_TRUE(b.passively_failed(p, soon)) << "no word is no passing check";
  // A first word after failures counted without one may count passes from before them.
  health[0].addresses[3].store(passed(9));
  EXPECT_TRUE(b.passively_failed(p, soon));
  health[0].addresses[3].store(passed(10));
  EXPECT_FALSE(b.passively_failed(p, soon)) << "a check passed since";
}

// One server at 127.0.0.1:1 checked every second, failed after one failure for 10 s, and a backup
// at 127.0.0.1:2: a pick gives the first while it is not failed.
conf::Upstream checked_with_backup() {
  conf::Upstream u = one_server();
  u.health_check = conf::HealthCheck{};
  u.health_check->interval = Msec{1'000};
  conf::Server backup;
  backup.address = at("127.0.0.1:2");
  backup.backup = true;
  u.servers.push_back(backup);
  return u;
}

// The address of a pick at `now`, released at once ("-" when none).
std::string pick_at(Balancer& b, event::TimePoint now) {
  TriedSet tried;
  Peer* p = b.pick(event::SocketAddress(), tried, now);
  if (p == nullptr) return "-";
  b.release(*p, false, now);
  return p->address.to_string();
}

// With active checks, a look that finds no word for an address is not repeated within the check
// interval. A pick before the checker's first word remembers such a miss; the failure that follows
// takes its baseline from the word written since, and a check that passes after the failure must
// bring the server back, the remembered miss notwithstanding.
TEST(HealthVerdictTest, APassAfterAFailureCountsThoughAnEarlierLookFoundNoWord) {
  const conf::Upstream u = checked_with_backup();
  ServerHealth health[2];
  Balancer b(u, health);
  TriedSet tried;
  Peer* p = b.pick(event::SocketAddress(), tried, start_time);  // no word yet: a miss remembered
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(p->address.to_string(), "127.0.0.1:1");
  health[0].addresses[0].store(passed(5));
  b.release(*p, true, start_time + Msec{10});
  EXPECT_EQ(pick_at(b, start_time + Msec{20}), "127.0.0.1:2") << "failed within fail_timeout";
  health[0].addresses[0].store(passed(6));
  EXPECT_EQ(pick_at(b, start_time + Msec{1'100}), "127.0.0.1:1") << "a check passed since";
}

// The same as AVanishedVerdictDoesNotClearPassiveFailures through picks, where the look that
// finds the word gone is remembered: a word back with another count is still no passing check.
TEST(HealthVerdictTest, AVerdictAPickFoundGoneDoesNotClearPassiveFailures) {
  const conf::Upstream u = checked_with_backup();
  ServerHealth health[2];
  health[0].addresses[0].store(passed(5));
  Balancer b(u, health);
  Peer& p = b.peers()[0];
  fail(b, p, start_time);
  health[0].addresses[0].store(0);
  EXPECT_EQ(pick_at(b, start_time + Msec{10}), "127.0.0.1:2") << "failed within fail_timeout";
  health[0].addresses[3].store(passed(9));
  EXPECT_EQ(pick_at(b, start_time + Msec{1'100}), "127.0.0.1:2") << "no check passed since";
  health[0].addresses[3].store(passed(10));
  EXPECT_EQ(pick_at(b, start_time + Msec{1'200}), "127.0.0.1:1") << "a check passed since";
}

// An address that drops out of the name's answer and is back keeps its passive failures.
// Six picks at `at`, every one the live 127.0.0.3:1 (the other address failed within
// fail_timeout).
void expect_only_the_live_address(Balancer& b, event::TimePoint at) {
  for (int i = 0; i < 6; ++i) {
    TriedSet tried;
    Peer* p = b.pick(event::SocketAddress(), tried, at);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->address.to_string(), "127.0.0.3:1") << "failed within fail_timeout";
    b.release(*p, false, at);
  }
}

TEST(HealthVerdictTest, AnAddressBackInTheAnswerKeepsItsFailures) {
  const conf::Upstream u = one_server();
  Balancer b(u);
  const conf::Server& server = u.servers[0];
  b.set_addresses(server, {at("127.0.0.2:1"), at("127.0.0.3:1")});
  Peer& dead = peer_at(b, "127.0.0.2:1");
  fail(b, dead, start_time);
  b.set_addresses(server, {at("127.0.0.3:1")});
  b.set_addresses(server, {at("127.0.0.2:1"), at("127.0.0.3:1")});
  const auto soon = start_time + Msec{100};
  expect_only_the_live_address(b, soon);
}

// A rotating answer {A,B} -> {B,C} -> {A,B} with A dead: C must not take the place of A while
// A's failures stand, or A comes back with none.
TEST(HealthVerdictTest, AFailedAddressKeepsItsFailuresWhenANewcomerArrivesAsItLeaves) {
  const conf::Upstream u = one_server();
  Balancer b(u);
  const conf::Server& server = u.servers[0];
  const event::TimePoint now = event::monotonic_now();  // set_addresses reads the clock
  b.set_addresses(server, {at("127.0.0.2:1"), at("127.0.0.3:1")});
  Peer& dead = peer_at(b, "127.0.0.2:1");
  fail(b, dead, now);
  b.set_addresses(server, {at("127.0.0.3:1"), at("127.0.0.4:1")});
  b.set_addresses(server, {at("127.0.0.2:1"), at("127.0.0.3:1")});
  const auto soon = now + Msec{100};
  expect_only_the_live_address(b, soon);
}

}  // namespace
}  // namespace ferry::worker
