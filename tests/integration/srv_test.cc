// Upstream servers named by a DNS SRV service, end to end: the real ferry in a resolver sandbox
// whose DNS server is a real unbound (tests/support/unbound_server.h), its records changed live,
// and real echo backends on loopback ports. Targets follow the records within resolve_interval,
// weights shape the distribution, higher priorities are backups, a removed target's sessions are
// not cut, a service that does not resolve at start is picked up later, and the health checks
// probe the targets at their records' ports.
#include <chrono>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/dns_server.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"
#include "tests/support/unbound_server.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char* kService = "_app._tcp.svc.service.test";

// An SRV record of the service: PRIORITY WEIGHT PORT TARGET (a name in the zone).
std::string srv(int priority, int weight, int port, const std::string& target) {
  return std::string(kService) + ". 1 IN SRV " + std::to_string(priority) + " " +
         std::to_string(weight) + " " + std::to_string(port) + " " + target + ".service.test.";
}

// The targets' addresses: every backend is on 127.0.0.1, each at its own port.
std::vector<std::string> hosts() {
  std::vector<std::string> out;
  for (const char* t : {"a", "b", "c", "d"}) {
    out.push_back(std::string(t) + ".service.test. 1 IN A 127.0.0.1");
  }
  return out;
}

std::vector<std::string> with_hosts(std::vector<std::string> records) {
  for (std::string& h : hosts()) records.push_back(std::move(h));
  return records;
}

// One worker, proxy "web" on `port`, upstream "app" of the one service server, re-resolved
// every second.
std::string service_config(int port, const std::string& upstream_extra = "",
                           const std::string& server_extra = "") {
  UpstreamSpec u = upstream_of({}, "resolve_interval = \"1s\"; " + upstream_extra);
  std::string text = config_text(
      "worker_processes = 1;",
      {{.listen = {loopback(port)}, .upstream = "app", .extra = "access_log = \"off\";"}}, {u});
  // config_text writes servers by address: the service one goes in by hand.
  const std::string servers =
      "servers = ( { service = \"" + std::string(kService) + "\"; " + server_extra + " } );";
  const auto at = text.find("servers = (");
  const auto end = text.find(");", at);
  if (at == std::string::npos || end == std::string::npos) return text;
  return text.replace(at, end + 2 - at, servers);
}

// Within resolve_interval (1 s) and one more second: how long a record change may take to show.
milliseconds follow_limit() { return milliseconds(2'000 * sanitizer_slowdown()); }

class SrvTest : public ::testing::Test {
 protected:
  // Unbound with `records` (the hosts added), ferry on it with `config`.
  void start(const std::vector<std::string>& records, const std::string& config) {
    try {
      unbound_ = std::make_unique<UnboundServer>("service.test", with_hosts(records));
    } catch (const std::exception& e) {
      FAIL() << e.what();
    }
    ferry_ = std::make_unique<FerryInstance>(config);
    const auto sandbox =
        resolv_sandbox(unbound_->resolv_conf(), HostsLayout::ipv4_only, ferry_->dir().path());
    ferry_->set_launcher(sandbox);
    ferry_->set_command_launcher(sandbox);  // `ferry -s status` reads the file too
    ASSERT_TRUE(ferry_->start()) << ferry_->log();
  }
  void set_records(const std::vector<std::string>& records) {
    try {
      unbound_->set(kService, records);
    } catch (const std::exception& e) {
      FAIL() << e.what();
    }
  }
  // Sessions one after the other, each echoed; false at the first that is not.
  bool serve(int n, const std::string& what = "ping") {
    for (int i = 0; i < n; ++i) {
      if (!served_through(port_, what + " " + std::to_string(i))) return false;
    }
    return true;
  }

  const int port_ = free_port();
  std::unique_ptr<UnboundServer> unbound_;
  std::unique_ptr<FerryInstance> ferry_;
};

TEST_F(SrvTest, ServersFollowTheRecordsWithinTheResolveInterval) {
  EchoServer a, b, c;
  ASSERT_NO_FATAL_FAILURE(
      start({srv(10, 1, a.port(), "a"), srv(10, 1, b.port(), "b")}, service_config(port_)));
  ASSERT_TRUE(serve(10)) << ferry_->log();
  EXPECT_EQ(a.accepted(), 5);
  EXPECT_EQ(b.accepted(), 5);
  EXPECT_EQ(c.accepted(), 0);

  // a goes, c comes: new sessions reach c within the interval and a no more.
  ASSERT_NO_FATAL_FAILURE(set_records({srv(10, 1, b.port(), "b"), srv(10, 1, c.port(), "c")}));
  const auto changed = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return served_through(port_, "probe") && c.accepted() > 0; },
                         follow_limit()))
      << ferry_->log();
  EXPECT_LE(std::chrono::steady_clock::now() - changed, follow_limit());
  const int a_before = a.accepted();
  const int b_before = b.accepted();
  const int c_before = c.accepted();
  ASSERT_TRUE(serve(10)) << ferry_->log();
  EXPECT_EQ(a.accepted(), a_before);
  EXPECT_EQ(b.accepted() - b_before, 5);
  EXPECT_EQ(c.accepted() - c_before, 5);
  EXPECT_TRUE(
      ferry_->wait_for_log("upstream \"app\": " + std::string(kService) + " now resolves to"))
      << ferry_->log();
}

TEST_F(SrvTest, TheRecordsWeightsShapeTheDistribution) {
  EchoServer a, b;
  ASSERT_NO_FATAL_FAILURE(
      start({srv(10, 3, a.port(), "a"), srv(10, 1, b.port(), "b")}, service_config(port_)));
  ASSERT_TRUE(serve(400)) << ferry_->log();
  // 3:1 over 400 sessions: a's share 75 % within 5 points.
  EXPECT_GE(a.accepted(), 280);
  EXPECT_LE(a.accepted(), 320);
  EXPECT_EQ(a.accepted() + b.accepted(), 400);
  // The status has one row for the entry, named by the service, with every session.
  std::string status;
  EXPECT_TRUE(eventually([&] {
    status = ferry_->command("status").out;
    std::istringstream lines(status);
    for (std::string l; std::getline(lines, l);) {
      std::istringstream words(l);
      std::vector<std::string> w{std::istream_iterator<std::string>(words), {}};
      // UPSTREAM SERVER STATE SESSIONS ...
      if (w.size() > 3 && w[0] == "app" && w[1] == kService && w[5] == "400") return true;
    }
    return false;
  })) << status;

  // The weights change live: 1:3 once the new records are read.
  ASSERT_NO_FATAL_FAILURE(set_records({srv(10, 1, a.port(), "a"), srv(10, 3, b.port(), "b")}));
  ASSERT_TRUE(ferry_->wait_for_log(":" + std::to_string(b.port()) + " (weight 3)", follow_limit()))
      << ferry_->log();
  const int a_before = a.accepted();
  ASSERT_TRUE(serve(400)) << ferry_->log();
  EXPECT_GE(a.accepted() - a_before, 80);
  EXPECT_LE(a.accepted() - a_before, 120);
}

TEST_F(SrvTest, HigherPrioritiesAreBackupsUsedOnlyWhenThePrimariesAreDown) {
  auto a = std::make_unique<EchoServer>();
  auto b = std::make_unique<EchoServer>();
  EchoServer c;
  const int a_port = a->port();
  const int b_port = b->port();
  ASSERT_NO_FATAL_FAILURE(
      start({srv(10, 1, a_port, "a"), srv(10, 1, b_port, "b"), srv(20, 1, c.port(), "c")},
            service_config(port_, "", "fail_timeout = \"30s\";")));
  ASSERT_TRUE(serve(20)) << ferry_->log();
  EXPECT_EQ(a->accepted() + b->accepted(), 20);
  EXPECT_EQ(c.accepted(), 0) << "a backup served while the primaries were up";

  // Both primaries go away: the backup takes the sessions.
  a.reset();
  b.reset();
  ASSERT_TRUE(serve(10)) << ferry_->log();
  EXPECT_EQ(c.accepted(), 10);

  // A record change makes the backup a primary and the dead ones backups: it serves as one
  // (the dead backups are not even tried).
  ASSERT_NO_FATAL_FAILURE(
      set_records({srv(20, 1, a_port, "a"), srv(20, 1, b_port, "b"), srv(5, 1, c.port(), "c")}));
  ASSERT_TRUE(
      ferry_->wait_for_log(":" + std::to_string(a_port) + " (weight 1, backup)", follow_limit()))
      << ferry_->log();
  ASSERT_TRUE(serve(5)) << ferry_->log();
  EXPECT_EQ(c.accepted(), 15);
}

TEST_F(SrvTest, ARemovedTargetsSessionIsNotCut) {
  EchoServer a, b;
  ASSERT_NO_FATAL_FAILURE(
      start({srv(10, 1, a.port(), "a"), srv(10, 1, b.port(), "b")}, service_config(port_)));
  const event::UniqueFd held(connect_to_port(port_));
  ASSERT_TRUE(held.valid());
  ASSERT_TRUE(echo_round_trip(held.get(), "held")) << ferry_->log();
  ASSERT_EQ(a.accepted() + b.accepted(), 1);
  EchoServer& used = a.accepted() == 1 ? a : b;
  EchoServer& other = a.accepted() == 1 ? b : a;
  const std::string target = &used == &a ? "a" : "b";

  // The held session's target leaves the records.
  ASSERT_NO_FATAL_FAILURE(set_records({srv(10, 1, other.port(), &other == &a ? "a" : "b")}));
  ASSERT_TRUE(ferry_->wait_for_log(
      "now resolves to 127.0.0.1:" + std::to_string(other.port()) + " (weight 1)\n",
      follow_limit()))
      << ferry_->log();
  const int other_before = other.accepted();
  ASSERT_TRUE(serve(10)) << ferry_->log();
  EXPECT_EQ(other.accepted() - other_before, 10) << "a new session went to the removed target";
  EXPECT_EQ(used.accepted(), 1);
  // ... and the session on it keeps going.
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(echo_round_trip(held.get(), "still there " + std::to_string(i))) << ferry_->log();
  }
}

TEST_F(SrvTest, AServiceThatDoesNotResolveAtStartIsPickedUpLater) {
  EchoServer a;
  ASSERT_NO_FATAL_FAILURE(start({}, service_config(port_)));
  EXPECT_NE(ferry_->log().find("service \"" + std::string(kService) + "\": not found"),
            std::string::npos)
      << ferry_->log();
  EXPECT_FALSE(served_through(port_, "nobody yet"));

  ASSERT_NO_FATAL_FAILURE(set_records({srv(10, 1, a.port(), "a")}));
  const auto changed = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return served_through(port_, "now"); }, follow_limit()))
      << ferry_->log();
  EXPECT_LE(std::chrono::steady_clock::now() - changed, follow_limit());
  EXPECT_EQ(a.accepted(), 1);
}

TEST_F(SrvTest, HealthChecksProbeTheTargetsAtTheirRecordsPorts) {
  EchoServer a;
  const int dead = free_port();  // nothing listens there
  ASSERT_NO_FATAL_FAILURE(
      start({srv(10, 1, a.port(), "a")},
            service_config(port_,
                           "health_check = { interval = \"200ms\"; timeout = \"500ms\"; fails = 1; "
                           "passes = 1; };")));
  ASSERT_TRUE(serve(2)) << ferry_->log();

  // A record with a port nobody serves: its probe finds it down, and no session goes there.
  ASSERT_NO_FATAL_FAILURE(set_records({srv(10, 1, a.port(), "a"), srv(10, 1, dead, "d")}));
  ASSERT_TRUE(ferry_->wait_for_log(
      "server " + std::string(kService) + " (127.0.0.1:" + std::to_string(dead) + ") is down",
      follow_limit() + seconds(2)))
      << ferry_->log();
  // (a's own count has the probes' connections too: the log tells the sessions' story.)
  ASSERT_TRUE(serve(10)) << ferry_->log();
  ferry_->drain_log();
  EXPECT_EQ(ferry_->log().find("connect to " + std::string(kService) + " failed"),
            std::string::npos)
      << ferry_->log();
}

}  // namespace
}  // namespace ferry::test
