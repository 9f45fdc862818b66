// End-to-end tests of balancing state through the real binary: a server that comes back after
// every server had failed serves the next client at once (issue 17 item 13), and proxies on one
// upstream share its round robin and least-connections state, and max_conns holds across workers.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;

ProxySpec proxy(const std::string& name, int port, const std::string& extra = "") {
  return {name, {loopback(port)}, "app", "access_log = \"off\"; " + extra};
}

// One worker, an upstream "app" of servers `a` and `b`, and proxies "one" and "two" on it.
std::string two_proxies(const std::string& balance, int a, int b, int port1, int port2) {
  return config_text("worker_processes = 1;", {proxy("one", port1), proxy("two", port2)},
                     {upstream_of({server_at(a), server_at(b)}, "balance = \"" + balance + "\";")});
}

class ServerBackTest : public ::testing::TestWithParam<std::string> {};

// Both servers refuse: the client fails and marks both failed for fail_timeout (60 s). One comes
// back: the next client must be served by it, not refused until the minute is over.
TEST_P(ServerBackTest, AfterEveryServerFailedTheNextClientIsServedByTheOneBack) {
  const int first = free_port();
  const int second = free_port();
  const int port = free_port();
  const std::string passive = "max_fails = 1; fail_timeout = \"60s\"; ";
  FerryInstance ferry(
      config_text("worker_processes = 1;", {proxy("web", port)},
                  {upstream_of({server_at(first, passive), server_at(second, passive)},
                               "balance = \"" + GetParam() + "\";")}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_FALSE(served_through(port, "nobody there"));
  ASSERT_TRUE(ferry.wait_for_log("no server could take client")) << ferry.log();
  EchoServer back(second);
  EXPECT_TRUE(served_through(port, "back")) << ferry.log();
  EXPECT_EQ(back.accepted(), 1);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(served_through(port, "again " + std::to_string(i))) << i;
}

INSTANTIATE_TEST_SUITE_P(Methods, ServerBackTest,
                         ::testing::Values("round_robin", "least_conn", "hash"),
                         [](const auto& info) { return info.param; });

// nginx keeps a peer's state per upstream: two proxies on one upstream of two servers, with
// clients alternating between them, go round robin across the union (a b a b), not each on
// its own (a a b b).
TEST(BalancingTest, TwoProxiesOnOneUpstreamShareItsRoundRobin) {
  EchoServer a, b;
  const int port1 = free_port();
  const int port2 = free_port();
  FerryInstance ferry(two_proxies("round_robin", a.port(), b.port(), port1, port2));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (int i = 1; i <= 4; ++i) {
    ASSERT_TRUE(served_through(i % 2 == 1 ? port1 : port2, "client " + std::to_string(i))) << i;
    if (i % 2 == 0) {
      EXPECT_EQ(a.accepted(), i / 2) << "after " << i << " clients";
      EXPECT_EQ(b.accepted(), i / 2) << "after " << i << " clients";
    }
  }
}

// A session held through one proxy counts for the other: least_conn sends the other proxy's
// next client to the idle server.
TEST(BalancingTest, TwoProxiesOnOneUpstreamShareItsConnectionCounts) {
  EchoServer a, b;
  const int port1 = free_port();
  const int port2 = free_port();
  FerryInstance ferry(two_proxies("least_conn", a.port(), b.port(), port1, port2));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const event::UniqueFd held(connect_to_port(port1));
  ASSERT_TRUE(echo_round_trip(held.get(), "held open"));
  const bool on_a = a.accepted() == 1;
  ASSERT_EQ(a.accepted() + b.accepted(), 1);
  const event::UniqueFd other(connect_to_port(port2));
  ASSERT_TRUE(echo_round_trip(other.get(), "through the other proxy"));
  EXPECT_EQ(a.accepted(), 1);
  EXPECT_EQ(b.accepted(), 1) << "the second session went to the busy server " << (on_a ? "a" : "b");
}

// The sockets process `pid` has open (-1 when it cannot be read): a worker's grow by two with
// each session it relays.
int sockets_of(pid_t pid) {
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec);
  if (ec) return -1;
  int n = 0;
  for (const auto& entry : it) {
    const std::filesystem::path target = std::filesystem::read_symlink(entry.path(), ec);
    if (!ec && target.string().starts_with("socket:")) ++n;
  }
  return n;
}

// max_conns counts every worker's sessions: twenty clients held open, spread over two workers by
// SO_REUSEPORT, give the limited server two, not two per worker. Workers killed with their
// sessions give their places back.
TEST(BalancingTest, MaxConnsHoldsAcrossWorkersAndADeadWorkersSessionsAreGivenBack) {
  EchoServer limited, other;
  const int port = free_port();
  FerryInstance ferry(config_text(
      "worker_processes = 2;", {proxy("web", port, "reuseport = true;")},
      {upstream_of({server_at(limited.port(), "max_conns = 2;"), server_at(other.port())})}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const auto hold = [&](int n) {
    std::vector<int> fds;
    for (int i = 0; i < n; ++i) {
      const int fd = connect_to_port(port);
      EXPECT_TRUE(echo_round_trip(fd, "held " + std::to_string(i))) << i;
      fds.push_back(fd);
    }
    return fds;
  };
  constexpr int kClients = 20;
  std::map<pid_t, int> idle;
  for (pid_t w : ferry.workers()) idle[w] = sockets_of(w);
  std::vector<int> held = hold(kClients);
  EXPECT_EQ(limited.accepted(), 2);
  EXPECT_EQ(other.accepted(), kClients - 2);
  ASSERT_EQ(idle.size(), 2U);
  for (auto [w, sockets] : idle) {
    EXPECT_GT(sockets_of(w), sockets) << "worker " << w << " took none of the clients";
  }

  const std::set<pid_t> before = ferry.workers();
  for (pid_t w : before) ::kill(w, SIGKILL);
  for (int fd : held) ::close(fd);
  ASSERT_TRUE(eventually([&] {
    const std::set<pid_t> now = ferry.workers();
    if (now.size() != before.size()) return false;
    for (pid_t w : now) {
      if (before.count(w) != 0) return false;
    }
    return true;
  })) << ferry.log();
  held = hold(kClients);
  EXPECT_EQ(limited.accepted(), 4) << "the dead workers' two places must be free again";
  for (int fd : held) ::close(fd);
}

}  // namespace
}  // namespace ferry::test
