// End-to-end tests of what the independent review of the runtime server commands found (issue
// 21): each fails without its fix. Back to ready ramps over slow_start; a server deleted and
// added again does not inherit an old kill; a client that half-closes after its command still
// gets the answer; a rejected reload gives the operator's changes back; a change that does not
// fit the workers' table is refused, not reported applied.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

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
using std::chrono::seconds;

std::string name_of(int port) { return "app/127.0.0.1:" + std::to_string(port); }

std::string config(int port, const std::vector<int>& backends, const std::string& upstream_extra,
                   int workers = 1, const std::string& server_extra = "") {
  std::vector<ServerSpec> servers;
  for (int b : backends) servers.push_back(server_at(b, server_extra));
  return config_text(
      "worker_processes = " + std::to_string(workers) + ";\n",
      {{.listen = {loopback(port)}, .upstream = "app", .extra = "access_log = \"off\";"}},
      {upstream_of(servers, upstream_extra)});
}

std::string control_socket(const FerryInstance& ferry) {
  return ferry.pid_file().substr(0, ferry.pid_file().size() - 4) + ".ctl";
}

// maint then ready: the server ramps over its slow_start (the record that carries the moment it
// became ready was dropped at once, and it took its full share).
TEST(RuntimeReviewTest, BackToReadyRampsOverSlowStart) {
  EchoServer a, b;
  const int port = free_port();
  FerryInstance ferry(
      config(port, {a.port(), b.port()}, "slow_start = \"60s\";", 1, "weight = 10;"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_EQ(ferry.ctl("set server " + name_of(b.port()) + " state maint").exit_code, 0);
  ASSERT_EQ(ferry.ctl("set server " + name_of(b.port()) + " state ready").exit_code, 0);
  const int before = b.accepted();
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(served_through(port)) << i;
  // At the ramp's start b weighs about 1/100 of a: a handful at most, not its half.
  EXPECT_LE(b.accepted() - before, 6) << a.accepted() << " / " << b.accepted();
  const std::string shown = ferry.ctl("show servers --json").out;
  EXPECT_NE(shown.find("\"slow_start_percent\": 0"), std::string::npos) << shown;
}

// A server killed once, deleted and added again: its new sessions are not killed by the old
// kill's epoch.
TEST(RuntimeReviewTest, AServerAddedAgainDoesNotInheritAnOldKill) {
  EchoServer a, c;
  const int port = free_port();
  FerryInstance ferry(config(port, {a.port()}, ""));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string c_name = name_of(c.port());
  ASSERT_EQ(ferry.ctl("set server " + name_of(a.port()) + " state drain").exit_code, 0);
  ASSERT_EQ(ferry.ctl("add server " + c_name).exit_code, 0);
  std::vector<event::UniqueFd> first;
  for (int i = 0; i < 2; ++i) {
    first.emplace_back(connect_to_port(port));
    ASSERT_TRUE(echo_round_trip(first.back().get(), "first")) << ferry.log();
  }
  ASSERT_EQ(ferry.ctl("kill sessions " + c_name).exit_code, 0);
  for (auto& fd : first) EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5)));
  std::vector<event::UniqueFd> held;
  for (int i = 0; i < 3; ++i) {
    held.emplace_back(connect_to_port(port));
    ASSERT_TRUE(echo_round_trip(held.back().get(), "held")) << ferry.log();
  }
  ASSERT_EQ(ferry.ctl("del server " + c_name).exit_code, 0);
  ASSERT_EQ(ferry.ctl("add server " + c_name).exit_code, 0);
  for (std::size_t i = 0; i < held.size(); ++i) {
    EXPECT_TRUE(echo_round_trip(held[i].get(), "still")) << i << "\n" << ferry.log();
  }
}

// socat half-closes at the end of its input: the answer must still come.
TEST(RuntimeReviewTest, AClientThatHalfClosesAfterItsCommandGetsTheAnswer) {
  EchoServer a, b;
  const int port = free_port();
  FerryInstance ferry(config(port, {a.port(), b.port()}, "", 2));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (int i = 0; i < 10; ++i) {
    event::UniqueFd fd(connect_unix(control_socket(ferry)));
    ASSERT_TRUE(fd.valid());
    const std::string line =
        "set server " + name_of(b.port()) + " weight " + std::to_string(i % 3 + 1) + "\n";
    ASSERT_TRUE(send_all(fd.get(), line));
    ASSERT_EQ(::shutdown(fd.get(), SHUT_WR), 0);
    const std::string answer = read_exactly(fd.get(), 4096, seconds(5));
    EXPECT_EQ(answer.rfind("ok\napplied by", 0), 0u) << i << ": \"" << answer << "\"";
  }
}

// A reload whose generation never serves gives back the changes its configuration dropped.
TEST(RuntimeReviewTest, ARejectedReloadGivesTheOperatorsChangesBack) {
  EchoServer a, b;
  const int port = free_port();
  TempDir state;
  const std::string top = "state_file = \"" + state.path() + "/servers.state\";\n";
  FerryInstance ferry(top + config(port, {a.port(), b.port()}, ""));
  ferry.set_options(
      {.env = {"FERRY_TEST_UNREADY_GENERATION=2", "FERRY_TEST_READY_TIMEOUT_MS=1000"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_EQ(ferry.ctl("set server " + name_of(b.port()) + " state drain").exit_code, 0);
  ferry.rewrite(top + config(port, {a.port()}, ""));  // b is gone from it
  EXPECT_NE(ferry.command("reload").exit_code, 0) << "generation 2 never serves";
  ASSERT_TRUE(ferry.wait_for_log("runtime server changes restored")) << ferry.log();
  const std::string shown = ferry.ctl("show servers --json").out;
  EXPECT_NE(shown.find("\"admin\": \"drain\""), std::string::npos) << shown;
  EXPECT_NE(read_file(state.path() + "/servers.state").find("state=drain"), std::string::npos);
  const int before = b.accepted();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(served_through(port));
  EXPECT_EQ(b.accepted(), before) << "still drained";
}

// A name the workers' table cannot hold: refused, and later changes are still published.
TEST(RuntimeReviewTest, AChangeThatDoesNotFitTheTableIsRefusedNotReportedApplied) {
  EchoServer a, b;
  const int port = free_port();
  const std::string long_name(120, 'u');
  const std::string body = config_text(
      "worker_processes = 1;\n",
      {{.listen = {loopback(port)}, .upstream = "app", .extra = "access_log = \"off\";"}},
      {upstream_of({server_at(a.port()), server_at(b.port())}),
       upstream_of({server_at(a.port())}, "", long_name)});
  FerryInstance ferry(body);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const Finished refused = ferry.ctl("set server " + long_name +
                                     "/127.0.0.1:" + std::to_string(a.port()) + " state drain");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("too long"), std::string::npos) << refused.err;
  ASSERT_EQ(ferry.ctl("set server " + name_of(b.port()) + " state drain").exit_code, 0);
  const int before = b.accepted();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(served_through(port));
  EXPECT_EQ(b.accepted(), before) << "the later change was published";
}

// A kill made while a reload was pending, then the reload rejected: the next kill still works
// (the restored records took the kill count back, and the workers took its number as seen).
TEST(RuntimeReviewTest, AKillAfterARejectedReloadStillKills) {
  EchoServer a;
  const int port = free_port();
  FerryInstance ferry(config(port, {a.port()}, ""));
  ferry.set_options(
      {.env = {"FERRY_TEST_UNREADY_GENERATION=2", "FERRY_TEST_READY_TIMEOUT_MS=1000"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const auto hold = [&](std::vector<event::UniqueFd>& held) {
    for (int i = 0; i < 2; ++i) {
      held.emplace_back(connect_to_port(port));
      if (!echo_round_trip(held.back().get(), "h")) return false;
    }
    return true;
  };
  std::vector<event::UniqueFd> first, second;
  ASSERT_TRUE(hold(first));
  ferry.signal(SIGHUP);
  ASSERT_TRUE(ferry.wait_for_log("(generation 2), pid")) << ferry.log();
  ASSERT_EQ(ferry.ctl("kill sessions " + name_of(a.port())).exit_code, 0);
  for (auto& fd : first) EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5)));
  ASSERT_TRUE(ferry.wait_for_log("runtime server changes restored")) << ferry.log();
  ASSERT_TRUE(hold(second));
  ASSERT_EQ(ferry.ctl("kill sessions " + name_of(a.port())).exit_code, 0);
  for (auto& fd : second) EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5))) << ferry.log();
}

// Many sessions killed are closed in turns of the loop (not all in one: 10,000 stalled it for
// 0.3 s); every one of them is closed, and a session started after the kill is not its.
TEST(RuntimeReviewTest, AKillOfManySessionsClosesThemAllAndSparesLaterOnes) {
  EchoServer b;
  const int port = free_port();
  FerryInstance ferry(config(port, {b.port()}, ""));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<event::UniqueFd> held;
  for (int i = 0; i < 600; ++i) {
    held.emplace_back(connect_to_port(port));
    ASSERT_TRUE(echo_round_trip(held.back().get(), "h")) << i;
  }
  ASSERT_EQ(ferry.ctl("kill sessions " + name_of(b.port())).exit_code, 0);
  event::UniqueFd later(connect_to_port(port));
  ASSERT_TRUE(echo_round_trip(later.get(), "later"));
  std::size_t closed = 0;
  for (auto& fd : held) closed += closed_by_peer(fd.get(), seconds(5)) ? 1 : 0;
  EXPECT_EQ(closed, held.size());
  EXPECT_TRUE(ferry.wait_for_log("closed 600 session(s) the operator killed")) << ferry.log();
  EXPECT_TRUE(echo_round_trip(later.get(), "still")) << "a session after the kill was killed";
}

}  // namespace
}  // namespace ferry::test
