// Tests of slow start in worker/upstream/balancer and slow_start.h: the ramp's weights, the shares
// of round robin and least_conn along it, and what starts it (checks down then up, passive
// failures over, an operator) and what does not (start, reload, hash balancing).
#include <arpa/inet.h>
#include <netinet/in.h>

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "conf/values.h"
#include "worker/upstream/balancer.h"
#include "worker/upstream/health_board.h"
#include "worker/upstream/slow_start.h"

namespace ferry::worker {
namespace {

using event::Msec;

const event::TimePoint t0{Msec{7'000'000}};
constexpr Msec kRamp{10'000};

conf::Address at(const std::string& text) {
  return std::get<conf::Address>(conf::parse_address(text));
}

// Servers at 127.0.0.1:1.. of `weights`, checked every second, the upstream's slow start kRamp.
conf::Upstream checked(conf::Balance balance, std::vector<int> weights) {
  conf::Upstream u;
  u.name = "u";
  u.balance = balance;
  u.slow_start = kRamp;
  u.health_check = conf::HealthCheck{};
  u.health_check->interval = Msec{1'000};
  for (std::size_t i = 0; i < weights.size(); ++i) {
    conf::Server s;
    s.address = at("127.0.0.1:" + std::to_string(i + 1));
    s.weight = weights[i];
    s.max_fails = 1;
    s.fail_timeout = Msec{10'000};
    u.servers.push_back(s);
  }
  return u;
}

// What the checker writes: its verdict on server `i`'s address (127.0.0.1:i+1).
void verdict(ServerHealth* health, std::size_t i, std::uint64_t passes, bool down) {
  const conf::Address a = at("127.0.0.1:" + std::to_string(i + 1));
  const std::uint64_t key =
      AddressVerdict::key_of(event::SocketAddress(a.sockaddr_ptr(), a.length));
  health[i].addresses[0].store(AddressVerdict::word(key, passes, down));
}

// How many of `n` sessions at `now` each server gets (by port), each released at once.
std::map<int, int> shares(Balancer& b, int n, event::TimePoint now) {
  std::map<int, int> out;
  for (int i = 0; i < n; ++i) {
    TriedSet tried;
    Peer* p = b.pick(event::SocketAddress(), tried, now);
    if (p == nullptr) {
      ++out[0];
      continue;
    }
    ++out[p->address.port()];
    b.release(*p, false, now);
  }
  return out;
}

TEST(SlowStartTest, TheRampIsLinearInHundredthsOfAWeightAndNeverZero) {
  const auto until = t0 + kRamp;
  EXPECT_EQ(slow_start::ramped(1, kRamp, until, t0), 1);
  EXPECT_EQ(slow_start::ramped(1, kRamp, until, t0 + Msec{1}), 1);
  EXPECT_EQ(slow_start::ramped(1, kRamp, until, t0 + Msec{2'500}), 25);
  EXPECT_EQ(slow_start::ramped(3, kRamp, until, t0 + Msec{5'000}), 150);
  EXPECT_EQ(slow_start::ramped(3, kRamp, until, t0 + Msec{5'001}), 151) << "rounded up";
  EXPECT_EQ(slow_start::ramped(1000, kRamp, until, t0 + Msec{9'999}), 99'990);
  EXPECT_EQ(slow_start::ramped(2, kRamp, until, until), 200);
  EXPECT_EQ(slow_start::ramped(2, kRamp, until, t0 - Msec{5}), 1) << "before it began";
  EXPECT_DOUBLE_EQ(slow_start::progress(kRamp, until, t0), 0.0);
  EXPECT_DOUBLE_EQ(slow_start::progress(kRamp, until, t0 + Msec{2'500}), 0.25);
  EXPECT_DOUBLE_EQ(slow_start::progress(kRamp, until, until), 1.0);
  EXPECT_DOUBLE_EQ(slow_start::progress(Msec{0}, until, t0), 1.0);
}

// Servers there at start are not coming back: full shares at once.
TEST(SlowStartTest, NoRampAtStartOrForAServerTheChecksFindUp) {
  const conf::Upstream u = checked(conf::Balance::round_robin, {1, 1});
  ServerHealth health[2];
  verdict(health, 0, 3, false);
  verdict(health, 1, 3, false);
  Balancer b(u, health);
  for (Peer& p : b.peers()) EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(p, t0), 1.0);
  auto n = shares(b, 100, t0);
  EXPECT_EQ(n[1], 50);
  EXPECT_EQ(n[2], 50);
  // More passes of an up server are no return.
  verdict(health, 1, 4, false);
  n = shares(b, 100, t0 + Msec{1'000});
  EXPECT_EQ(n[2], 50);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[1], t0 + Msec{1'000}), 1.0);
}

// Two servers of equal weight, the second down by the checks and then up: along its ramp it takes
// r / (1 + r) of the sessions, r its ramped weight over the other's, for round robin and for
// least_conn (sessions released at once: the counts tie and smooth round robin decides).
class RampShareTest : public ::testing::TestWithParam<conf::Balance> {};

TEST_P(RampShareTest, TheSharesFollowTheRampAfterTheChecksFindTheServerUpAgain) {
  const conf::Upstream u = checked(GetParam(), {2, 2});
  ServerHealth health[2];
  verdict(health, 0, 3, false);
  verdict(health, 1, 3, false);
  Balancer b(u, health);
  shares(b, 10, t0);
  verdict(health, 1, 3, true);
  auto n = shares(b, 10, t0 + Msec{1'000});
  EXPECT_EQ(n[1], 10) << "down by the checks";
  verdict(health, 1, 5, false);
  const auto back = t0 + Msec{2'000};  // the first pick that sees it up starts the ramp
  n = shares(b, 1010, back);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[1], back), 0.0);
  EXPECT_NEAR(n[2], 5, 1) << "0 %: a weight of 1/200 against 200: 1 in 201";
  n = shares(b, 1000, back + kRamp / 4);
  EXPECT_NEAR(n[2], 200, 2) << "25 %: 50 against 200";
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[1], back + kRamp / 4), 0.25);
  n = shares(b, 1200, back + kRamp / 2);
  EXPECT_NEAR(n[2], 400, 2) << "50 %: 100 against 200";
  n = shares(b, 1000, back + kRamp);
  EXPECT_NEAR(n[2], 500, 1) << "100 %: equal";
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[1], back + kRamp), 1.0);
}

INSTANTIATE_TEST_SUITE_P(Balances, RampShareTest,
                         ::testing::Values(conf::Balance::round_robin, conf::Balance::least_conn));

// least_conn with sessions held: a ramping server holds connections in proportion to its ramped
// weight, not its configured one.
TEST(SlowStartTest, LeastConnComparesConnectionsAgainstTheRampedWeight) {
  const conf::Upstream u = checked(conf::Balance::least_conn, {1, 1});
  Balancer b(u);
  Peer& second = b.peers()[1];
  b.begin_slow_start(second, t0);
  const auto half = t0 + kRamp / 2;
  std::map<int, int> held;
  for (int i = 0; i < 150; ++i) {
    TriedSet tried;
    Peer* p = b.pick(event::SocketAddress(), tried, half);
    ASSERT_NE(p, nullptr);
    ++held[p->address.port()];
  }
  EXPECT_NEAR(held[2], 50, 1) << "half its weight: a third of the sessions";
  EXPECT_EQ(b.peers()[1].conns, held[2]);
}

// A server that failed passively comes back when its trial after fail_timeout gets through: it
// ramps from there.
TEST(SlowStartTest, ARampFollowsTheEndOfPassiveFailures) {
  const conf::Upstream u = checked(conf::Balance::round_robin, {1, 1});
  Balancer b(u);
  Peer& bad = b.peers()[1];
  bad.conns = 1;
  b.release(bad, true, t0);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(bad, t0), 1.0) << "a failure is no return";
  auto n = shares(b, 10, t0 + Msec{5'000});
  EXPECT_EQ(n[1], 10) << "failed within fail_timeout";
  // Past fail_timeout: one trial, which gets through.
  const auto trial_at = t0 + Msec{10'001};
  Peer* trial = nullptr;
  for (int i = 0; i < 4 && trial == nullptr; ++i) {
    TriedSet tried;
    Peer* p = b.pick(event::SocketAddress(), tried, trial_at);
    ASSERT_NE(p, nullptr);
    if (p == &bad) {
      trial = p;
    } else {
      b.release(*p, false, trial_at);
    }
  }
  ASSERT_EQ(trial, &bad);
  const auto back = trial_at + Msec{500};
  b.release(bad, false, back);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(bad, back), 0.0);
  n = shares(b, 1000, back + kRamp / 4);
  EXPECT_NEAR(n[2], 200, 3) << "25 %: 25 against 100";
  n = shares(b, 1000, back + kRamp);
  EXPECT_NEAR(n[2], 500, 3);
}

// A passing check clears passive failures at once: the server ramps from that pick.
TEST(SlowStartTest, ARampFollowsACheckThatClearsPassiveFailures) {
  const conf::Upstream u = checked(conf::Balance::round_robin, {1, 1});
  ServerHealth health[2];
  verdict(health, 0, 3, false);
  verdict(health, 1, 3, false);
  Balancer b(u, health);
  Peer& bad = b.peers()[1];
  bad.conns = 1;
  b.release(bad, true, t0);
  EXPECT_EQ(shares(b, 10, t0 + Msec{100})[1], 10);
  verdict(health, 1, 4, false);
  const auto back = t0 + Msec{1'000};
  shares(b, 1, back);
  EXPECT_EQ(bad.fails, 0);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(bad, back), 0.0);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(bad, back + kRamp / 2), 0.5);
}

// A reload makes the balancer anew: a server up then is not ramped, one the checks hold down
// then is when they find it up.
TEST(SlowStartTest, AtAReloadOnlyAServerTheChecksHoldDownRampsWhenItComesUp) {
  const conf::Upstream u = checked(conf::Balance::round_robin, {1, 1, 1});
  ServerHealth health[3];
  verdict(health, 0, 3, false);
  verdict(health, 1, 3, false);
  verdict(health, 2, 3, true);
  Balancer b(u, health);
  shares(b, 3, t0);
  verdict(health, 2, 5, false);
  shares(b, 3, t0 + Msec{1'000});
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[0], t0 + Msec{1'000}), 1.0);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[1], t0 + Msec{1'000}), 1.0);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[2], t0 + Msec{1'000}), 0.0);
}

// What an operator's command calls; a server's period overrides its upstream's; alone in its
// upstream a ramping server still takes every session.
TEST(SlowStartTest, BeginSlowStartUsesTheServersOwnPeriodAndShiftsSharesOnly) {
  conf::Upstream u = checked(conf::Balance::round_robin, {1, 1});
  u.servers[0].slow_start = Msec{2'000};
  u.servers[1].slow_start = Msec{0};
  Balancer b(u);
  b.begin_slow_start(b.peers()[0], t0);
  b.begin_slow_start(b.peers()[1], t0);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[0], t0 + Msec{1'000}), 0.5);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[1], t0), 1.0) << "off for it";
  EXPECT_EQ(Balancer::weight_now(b.peers()[0], t0 + Msec{1'000}), 50);
  EXPECT_EQ(Balancer::weight_now(b.peers()[1], t0), 100);

  conf::Upstream alone = checked(conf::Balance::least_conn, {5});
  Balancer one(alone);
  one.begin_slow_start(one.peers()[0], t0);
  EXPECT_EQ(shares(one, 20, t0)[1], 20);
}

// Hashing has no weights to ramp (the configuration refuses slow_start with it).
TEST(SlowStartTest, HashBalancingDoesNotRamp) {
  conf::Upstream u = checked(conf::Balance::hash, {1, 1});
  Balancer b(u);
  b.begin_slow_start(b.peers()[0], t0);
  EXPECT_DOUBLE_EQ(Balancer::slow_start_progress(b.peers()[0], t0), 1.0);
}

}  // namespace
}  // namespace ferry::worker
