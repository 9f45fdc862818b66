// Active health checks of a server whose host name has several addresses, resolved through a
// test DNS server in a sandbox (tests/support/dns_server.h): each address is probed and judged
// on its own, a dead one takes only itself out, and the probes follow the name as it resolves,
// moves or first appears. Also the proxy's inline `upstream = "host:port"` form, which resolves
// and re-resolves like a server of an upstream.
#include <chrono>
#include <csignal>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/config_text.h"
#include "tests/support/dns_server.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

using std::chrono::seconds;

// The live address is 127.0.0.1, where EchoServer listens; nothing listens on 127.0.0.2.
constexpr const char* kLive = "127.0.0.1";
constexpr const char* kDead = "127.0.0.2";

// Two workers (the checker is one of them: both must follow its verdicts), one upstream "app" of
// the one server `server`, checked every 100 ms; passive checks off (max_fails = 0), so only the
// active checks can keep sessions away from an address.
std::string checked_config(const std::string& server, int port) {
  return config_text(
      "worker_processes = 2;",
      {{.listen = {loopback(port)}, .upstream = "app", .extra = "access_log = \"off\";"}},
      {upstream_of({{server, "max_fails = 0;"}},
                   "resolve_interval = \"100ms\"; health_check = { interval = \"100ms\"; "
                   "timeout = \"100ms\"; fails = 1; passes = 1; };")});
}

// The row of `server` in `ferry -s status`'s server table: upstream, server, state, sessions,
// active, failed, sent, received, then the health check ("ok 0s ago", "-").
std::vector<std::string> server_row(FerryInstance& ferry, const std::string& server) {
  std::istringstream lines(ferry.command("status").out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::vector<std::string> row;
    for (std::string f; fields >> f;) row.push_back(f);
    if (row.size() >= 11 && row[1] == server) return row;
  }
  return {};
}

std::string state_of(FerryInstance& ferry, const std::string& server) {
  const auto row = server_row(ferry, server);
  return row.empty() ? "(no row)" : row[2];
}

// What `ferry` logs when the checks find `address` of `server` down / up.
std::string verdict(const std::string& server, const std::string& address, const char* what) {
  return "server " + server + " (" + address + ") is " + what;
}

class HealthCheckTest : public ::testing::Test {
 protected:
  void start(const std::string& config, HostsLayout hosts = HostsLayout::ipv4_only,
             std::vector<std::string> env = {}) {
    ferry_ = std::make_unique<FerryInstance>(config);
    ferry_->set_options({.env = std::move(env)});
    const auto sandbox = resolv_sandbox(dns_, hosts, ferry_->dir().path());
    ferry_->set_launcher(sandbox);
    ferry_->set_command_launcher(sandbox);
    ASSERT_TRUE(ferry_->start()) << ferry_->log();
  }
  // Both workers (each resolves on its own) logged `n` changes of the name's addresses in all.
  void wait_resolved(std::size_t n) {
    ASSERT_TRUE(eventually([&] {
      ferry_->drain_log();
      return count_of(ferry_->log(), " now resolves to ") >= n;
    })) << ferry_->log();
  }
  // Every one of `n` sessions is served, and none was first sent to an address that refused it.
  void expect_all_served_without_failover(int n) {
    ferry_->drain_log();
    const std::size_t before = count_of(ferry_->log(), "trying the next server");
    for (int i = 0; i < n; ++i) ASSERT_TRUE(served_through(port_)) << i << "\n" << ferry_->log();
    ferry_->drain_log();
    EXPECT_EQ(count_of(ferry_->log(), "trying the next server"), before)
        << "a worker sent a session to the address the checks found down\n"
        << ferry_->log();
  }

  DnsServer dns_;
  EchoServer backend_;
  const int port_ = free_port();
  const std::string server_ = "app.test:" + std::to_string(backend_.port());
  std::unique_ptr<FerryInstance> ferry_;
};

// A name with a dead and a live address: the dead one is found down and gets no session, the
// live one serves every client, and the server shows up, with its check.
TEST_F(HealthCheckTest, ADeadAddressIsTakenOutWhileTheNamesOtherAddressServes) {
  dns_.set("app.test", {kDead, kLive});
  start(checked_config(server_, port_));
  const std::string dead = std::string(kDead) + ":" + std::to_string(backend_.port());
  ASSERT_TRUE(ferry_->wait_for_log(" is down", seconds(5))) << ferry_->log();
  expect_all_served_without_failover(40);
  EXPECT_NE(ferry_->log().find(verdict(server_, dead, "down")), std::string::npos) << ferry_->log();
  const auto row = server_row(*ferry_, server_);
  ASSERT_FALSE(row.empty()) << ferry_->command("status").out;
  EXPECT_EQ(row[2], "up") << "one address of the server serves";
  EXPECT_NE(row[10], "-") << "the check shows";
}

// The checker out of descriptors (test hook: its socket() fails with EMFILE) makes no verdict: a
// shortage on ferry's side must not take servers out (before, every probe counted as a failed
// check: the server was found down and every client refused).
TEST_F(HealthCheckTest, AChecksLocalShortageIsNoVerdictOnTheServer) {
  dns_.set("app.test", {kLive});
  start(checked_config(server_, port_), HostsLayout::ipv4_only,
        {"FERRY_TEST_HEALTH_CHECK_NO_SOCKET=1"});
  ASSERT_TRUE(eventually([&] {
    ferry_->drain_log();
    return ferry_->log().find("was not made") != std::string::npos ||
           ferry_->log().find(" is down") != std::string::npos;
  })) << ferry_->log();
  // Several rounds (100 ms each) pass while the sessions are served.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(served_through(port_)) << i << "\n" << ferry_->log();
  ferry_->drain_log();
  EXPECT_EQ(ferry_->log().find(" is down"), std::string::npos) << ferry_->log();
  EXPECT_NE(ferry_->log().find("socket() failed: Too many open files"), std::string::npos)
      << ferry_->log();
  EXPECT_EQ(state_of(*ferry_, server_), "up") << ferry_->command("status").out;
}

// The shipped example's `localhost` server with a health check, on Debian's /etc/hosts (::1
// first): the backend listens on 127.0.0.1 only. [::1] is found down, and 127.0.0.1 serves.
TEST_F(HealthCheckTest, ALocalhostServerIsCheckedAtBothOfItsAddresses) {
  const std::string server = "localhost:" + std::to_string(backend_.port());
  start(checked_config(server, port_), HostsLayout::ipv6_first);
  ASSERT_TRUE(ferry_->wait_for_log(" is down", seconds(5))) << ferry_->log();
  expect_all_served_without_failover(20);
  EXPECT_NE(ferry_->log().find(verdict(server, "[::1]:" + std::to_string(backend_.port()), "down")),
            std::string::npos)
      << ferry_->log();
  EXPECT_EQ(state_of(*ferry_, server), "up") << ferry_->command("status").out;
}

// A name that did not resolve at load is probed once it resolves, each of its addresses.
TEST_F(HealthCheckTest, ANameResolvedAfterTheLoadIsProbed) {
  start(checked_config(server_, port_));
  EXPECT_FALSE(served_through(port_));
  dns_.set("app.test", {kDead, kLive});
  const std::string dead = std::string(kDead) + ":" + std::to_string(backend_.port());
  ASSERT_TRUE(ferry_->wait_for_log(" is down", seconds(5))) << ferry_->log();
  wait_resolved(2);
  expect_all_served_without_failover(20);
  EXPECT_NE(ferry_->log().find(verdict(server_, dead, "down")), std::string::npos) << ferry_->log();
}

// A backend whose name moves from a dead address to a live one comes up: the new address is
// probed, not the old one's verdict applied to it.
TEST_F(HealthCheckTest, AServerWhoseNameMovesToALiveAddressComesUp) {
  dns_.set("app.test", {kDead});
  start(checked_config(server_, port_));
  const std::string dead = std::string(kDead) + ":" + std::to_string(backend_.port());
  ASSERT_TRUE(ferry_->wait_for_log(" is down", seconds(5))) << ferry_->log();
  ASSERT_TRUE(eventually([&] { return state_of(*ferry_, server_) == "down"; }))
      << ferry_->command("status").out;

  dns_.set("app.test", {kLive});
  wait_resolved(2);
  EXPECT_TRUE(eventually([&] { return served_through(port_); }, seconds(5))) << ferry_->log();
  EXPECT_TRUE(eventually([&] {
    const auto row = server_row(*ferry_, server_);
    return row.size() >= 11 && row[2] == "up" && row[10] == "ok";
  })) << ferry_->command("status").out;
  expect_all_served_without_failover(20);
  EXPECT_NE(ferry_->log().find(verdict(server_, dead, "down")), std::string::npos) << ferry_->log();
}

// A dead address that drops out of the name's answer and comes back (a rotating DNS subset)
// keeps its verdict meanwhile: no worker sends it a session when it is back (before, its place
// on the board was freed at once, and a worker that resolved the name before the checker did
// took it for up).
TEST_F(HealthCheckTest, ADeadAddressBackInTheAnswerIsStillDown) {
  dns_.set("app.test", {kDead, kLive});
  start(checked_config(server_, port_));
  ASSERT_TRUE(ferry_->wait_for_log(" is down", seconds(5))) << ferry_->log();
  std::size_t changes = 0;
  for (int round = 0; round < 3; ++round) {
    dns_.set("app.test", {kLive});
    wait_resolved(changes += 2);
    dns_.set("app.test", {kDead, kLive});
    wait_resolved(changes += 2);
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(served_through(port_)) << i << "\n" << ferry_->log();
  }
  ferry_->drain_log();
  EXPECT_EQ(count_of(ferry_->log(), "trying the next server"), 0U)
      << "a worker sent a session to the address the checks found down\n"
      << ferry_->log();
  EXPECT_EQ(count_of(ferry_->log(), " is down"), 1U) << "found down once\n" << ferry_->log();
}

// A respawned checker takes its predecessor's verdicts over, those on addresses found after the
// load included: the dead address stays down, not found down a second time (before, the new
// checker freed every place but the load's addresses', here none, and probed afresh).
TEST_F(HealthCheckTest, ARespawnedCheckerKeepsTheVerdictsOnAddressesFoundSinceTheLoad) {
  start(checked_config(server_, port_));
  dns_.set("app.test", {kDead, kLive});
  ASSERT_TRUE(ferry_->wait_for_log(" is down", seconds(5))) << ferry_->log();
  wait_resolved(2);
  const std::string first = "started worker 0 (generation 1), pid ";
  const std::size_t at = ferry_->log().find(first);
  ASSERT_NE(at, std::string::npos) << ferry_->log();
  const pid_t checker = static_cast<pid_t>(std::stol(ferry_->log().substr(at + first.size())));
  ASSERT_EQ(::kill(checker, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] {
    ferry_->drain_log();
    return ferry_->log().find(first, at + 1) != std::string::npos;
  })) << ferry_->log();
  wait_resolved(3);  // the new checker's first lookup
  expect_all_served_without_failover(20);
  ferry_->drain_log();
  EXPECT_EQ(count_of(ferry_->log(), " is down"), 1U) << ferry_->log();
}

// Beyond the board's 16 places per server, a verdict no other worker acts on: the log says so.
TEST_F(HealthCheckTest, AVerdictBeyondTheBoardsPlacesIsSaidNotShared) {
  std::vector<std::string> addresses;
  for (int i = 2; i <= 18; ++i) addresses.push_back("127.0.0." + std::to_string(i));  // all dead
  addresses.emplace_back(kLive);
  dns_.set("app.test", addresses);
  start(checked_config(server_, port_));
  EXPECT_TRUE(ferry_->wait_for_log(") (not shared) is down", seconds(5))) << ferry_->log();
  EXPECT_NE(ferry_->log().find("has more than 16 addresses"), std::string::npos) << ferry_->log();
}

// `upstream = "host:port"` on a proxy is an upstream of one server: a name that does not resolve
// is a warning, not a refusal, and is retried (every 5 s: the implicit upstream re-resolves every
// 30 s, the default resolve_interval); then each of its addresses serves (a dead one is failed
// over once, then passively failed for fail_timeout: max_fails 1, fail_timeout 10 s).
TEST_F(HealthCheckTest, TheInlineUpstreamFormResolvesLaterAndServesFromEveryAddress) {
  const std::string config = config_text(
      "worker_processes = 1;",
      {{.listen = {loopback(port_)}, .upstream = server_, .extra = "access_log = \"off\";"}});
  start(config);
  EXPECT_NE(ferry_->log().find("stays unavailable until the name resolves"), std::string::npos)
      << ferry_->log();
  EXPECT_FALSE(served_through(port_));

  dns_.set("app.test", {kDead, kLive});
  ASSERT_TRUE(eventually([&] { return served_through(port_); }, seconds(10))) << ferry_->log();
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(served_through(port_)) << i << "\n" << ferry_->log();
  EXPECT_EQ(state_of(*ferry_, server_), "up") << ferry_->command("status").out;
  ferry_->drain_log();
  EXPECT_EQ(count_of(ferry_->log(), "trying the next server"), 1U)
      << "the dead address is tried once, then left out for fail_timeout\n"
      << ferry_->log();
}

}  // namespace
}  // namespace ferry::test
