// Slow start through the real binary: a server the active checks found down and then up again,
// or back from passive failures, takes a share of the sessions that follows its ramp, and servers
// up at start take their full share at once.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kRamp{4'000};

// One worker (each worker sees a server come back at its own picks: one makes the shares
// exact), one upstream of `a` and `b` of equal weight, checked every 100 ms, passive checks off so
// that only the checks take `b` out, and a slow start of kRamp.
std::string ramp_config(int port, int a, int b) {
  return config_text(
      "worker_processes = 1;",
      {{.listen = {loopback(port)}, .upstream = "app", .extra = "access_log = \"off\";"}},
      {upstream_of({server_at(a, "max_fails = 0;"), server_at(b, "max_fails = 0;")},
                   "slow_start = \"4s\"; health_check = { interval = \"100ms\"; "
                   "timeout = \"100ms\"; fails = 1; passes = 1; };")});
}

// The share of sessions a server of weight 1 ramping against one of weight 1 takes at `f` of its
// ramp (the balancer's weights are in hundredths, never below one).
double expected_share(double f) {
  if (f >= 1) return 0.5;
  const double r = std::max(1.0, std::ceil(100 * std::max(f, 0.0))) / 100;
  return r / (1 + r);
}

// Servers up at start are not coming back: the first sessions alternate.
TEST(SlowStartTest, ServersUpAtStartTakeTheirFullShareAtOnce) {
  EchoServer a, b;
  const int port = free_port();
  FerryInstance ferry(ramp_config(port, a.port(), b.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(served_through(port)) << i << "\n" << ferry.log();
  EXPECT_EQ(a.spoke(), 10);
  EXPECT_EQ(b.spoke(), 10);
}

// Opens sessions through `port` at a steady pace from `start` (when `b`'s ramp began) until a
// second after its ramp, and checks the share that reaches `b` in each quarter of the ramp and in
// that second: near the expected share, and growing.
void expect_share_follows_ramp(int port, const EchoServer& b, Clock::time_point start,
                               FerryInstance& ferry) {
  struct Sample {
    double f;  // how far the ramp was when the session was opened
    bool to_b;
  };
  std::vector<Sample> samples;
  const auto end = start + kRamp + milliseconds(1'000);
  while (Clock::now() < end) {
    const auto opened = Clock::now();
    const int before = b.spoke();
    ASSERT_TRUE(served_through(port)) << samples.size() << "\n" << ferry.log();
    const double f = std::chrono::duration<double>(opened - start) / kRamp;
    samples.push_back({f, b.spoke() > before});
    ::usleep(10'000);  // pacing, not synchronisation
  }

  // Quarters of the ramp, then the second after it.
  constexpr int kBuckets = 5;
  int n[kBuckets] = {};
  int to_b[kBuckets] = {};
  double expected[kBuckets] = {};
  for (const Sample& s : samples) {
    const int i = std::min(kBuckets - 1, static_cast<int>(s.f * 4));
    ++n[i];
    to_b[i] += s.to_b;
    expected[i] += expected_share(s.f);
  }
  std::ostringstream table;
  double share[kBuckets] = {};
  for (int i = 0; i < kBuckets; ++i) {
    share[i] = n[i] == 0 ? 0 : static_cast<double>(to_b[i]) / n[i];
    expected[i] = n[i] == 0 ? 0 : expected[i] / n[i];
    table << "bucket " << i << ": " << to_b[i] << " of " << n[i] << " to b (" << share[i]
          << ", expected " << expected[i] << ")\n";
  }
  const std::string report = table.str();
  for (int i = 0; i < kBuckets; ++i) {
    // Even a loaded machine opens a session every 100 ms or so.
    ASSERT_GE(n[i], 8) << report;
    // Smooth round robin follows the weights within a session or two; the rest is when the ramp
    // began (the worker's pick or release, a moment after or before `start`).
    EXPECT_NEAR(share[i], expected[i], 0.12) << "bucket " << i << "\n" << report;
  }
  EXPECT_LT(share[0], 0.25) << "the first quarter: clearly below its full half\n" << report;
  EXPECT_GT(share[kBuckets - 1], 0.4) << "after the ramp: its full half\n" << report;
  EXPECT_LT(share[0], share[2]) << report;
  EXPECT_LT(share[2], share[4]) << report;
  for (int i = 0; i + 1 < kBuckets; ++i) {
    EXPECT_GE(share[i + 1], share[i] - 0.05) << "the share grows along the ramp\n" << report;
  }
  std::cout << report;
}

// `b` stops (the checks find it down), starts again (up): sessions opened at a steady pace across
// its ramp reach it in a share that grows with the ramp, near the expected one in each quarter.
TEST(SlowStartTest, AServerBackUpTakesAShareThatFollowsItsRamp) {
  EchoServer a;
  auto b = std::make_unique<EchoServer>();
  const int b_port = b->port();
  const int port = free_port();
  FerryInstance ferry(ramp_config(port, a.port(), b_port));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(served_through(port)) << i << "\n" << ferry.log();
  ASSERT_EQ(b->spoke(), 2);

  b.reset();
  ASSERT_TRUE(ferry.wait_for_log(" is down", milliseconds(5'000))) << ferry.log();
  // The worker learns of the verdict at its picks: these see `b` down.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(served_through(port)) << i << "\n" << ferry.log();

  b = std::make_unique<EchoServer>(b_port);
  ASSERT_TRUE(ferry.wait_for_log(" is up", milliseconds(5'000))) << ferry.log();
  // The ramp begins at the first pick that finds `b` up: the first session of the measure.
  expect_share_follows_ramp(port, *b, Clock::now(), ferry);
}

// Without active checks: `b` refuses a session (max_fails 1: failed for fail_timeout), starts
// again, and after fail_timeout a session gets through to it: its ramp begins when that session
// ends.
TEST(SlowStartTest, AServerBackFromPassiveFailuresTakesAShareThatFollowsItsRamp) {
  EchoServer a;
  auto b = std::make_unique<EchoServer>();
  const int b_port = b->port();
  const int port = free_port();
  const std::string passive = "max_fails = 1; fail_timeout = \"1s\";";
  FerryInstance ferry(config_text(
      "worker_processes = 1;",
      {{.listen = {loopback(port)}, .upstream = "app", .extra = "access_log = \"off\";"}},
      {upstream_of({server_at(a.port(), passive), server_at(b_port, passive)},
                   "slow_start = \"4s\";")}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(served_through(port)) << i << "\n" << ferry.log();
  ASSERT_EQ(b->spoke(), 2);

  b.reset();
  // One of two picks is `b`'s: refused, failed over to `a`.
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(served_through(port)) << i << "\n" << ferry.log();
  ASSERT_TRUE(ferry.wait_for_log("trying the next server", milliseconds(5'000))) << ferry.log();
  b = std::make_unique<EchoServer>(b_port);
  // Sessions go to `a` until fail_timeout is over; then one is `b`'s trial.
  Clock::time_point trial_done{};
  ASSERT_TRUE(eventually(
      [&] {
        if (!served_through(port)) return false;
        trial_done = Clock::now();
        return b->spoke() > 0;
      },
      milliseconds(5'000)))
      << ferry.log();
  // The trial ends (and the ramp begins) as ferry sees the client's close, a moment later.
  expect_share_follows_ramp(port, *b, trial_done, ferry);
}

}  // namespace
}  // namespace ferry::test
