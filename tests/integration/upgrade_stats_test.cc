// A binary upgrade keeps what the old master counted: the statistics' totals and reload counts
// (taken in by the new master while the old one drains, then for good), and the per-client
// counts (a client at max_conns_per_client through the old workers is still limited by the new
// ones). Garbage passed for the old statistics leaves the new master serving and its status
// clean.
#include <signal.h>
#include <unistd.h>

#include <set>
#include <sstream>
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

using std::chrono::seconds;

// The lines of `-s status`'s table under the header starting with `header`.
std::vector<std::string> rows(const std::string& status, const std::string& header) {
  std::vector<std::string> out;
  std::istringstream lines(status);
  bool in = false;
  for (std::string line; std::getline(lines, line);) {
    if (in && line.empty()) break;
    if (in) out.push_back(line);
    if (line.rfind(header, 0) == 0) in = true;
  }
  return out;
}

long reloads_ok(const std::string& status) {
  const auto at = status.find("reloads: ");
  return at == std::string::npos ? -1 : std::stol(status.substr(at + 9));
}

bool served(int fd) { return fd >= 0 && echo_round_trip(fd, "ping"); }

// One session through, start to end.
bool one_session(int port) {
  const event::UniqueFd fd(connect_to_port(port));
  const bool ok = served(fd.get());
  return ok;
}

std::string config(int port, int backend, const std::string& extra = "") {
  return config_text(
      "worker_processes = 2;",
      {{"web", {loopback(port)}, loopback(backend), extra + " access_log = \"off\";"}});
}

TEST(UpgradeStatsTest, TotalsAndReloadCountsSurviveAndCountingGoesOn) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(one_session(port));
  ASSERT_EQ(ferry.command("reload").exit_code, 0);
  // Open through the upgrade, on an old worker: counted once, by whichever master shows it.
  event::UniqueFd held(connect_to_port(port));
  ASSERT_TRUE(served(held.get()));
  std::vector<long> before;
  ASSERT_TRUE(eventually([&] {
    before = status_proxy_row(ferry.command("status").out, "web");
    return before.size() == 6 && before[0] == 6 && before[1] == 5;
  })) << ferry.command("status").out;

  const Finished up = ferry.command("upgrade");
  ASSERT_EQ(up.exit_code, 0) << up.err << ferry.log();
  const pid_t fresh = pid_in(ferry.pid_file());
  const KillOnExit guard{fresh};
  ASSERT_NE(fresh, ferry.master());
  ASSERT_TRUE(alive(ferry.master())) << "the old master drains the held session";

  // The new master shows the old totals while the old one still runs, and counts on.
  std::string status = ferry.command("status").out;
  std::vector<long> now = status_proxy_row(status, "web");
  ASSERT_EQ(now.size(), 6U) << status;
  EXPECT_GE(now[0], before[0]) << status;
  EXPECT_GE(now[1], before[1]) << status;
  EXPECT_GE(reloads_ok(status), 1) << status;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(one_session(port));
  ASSERT_TRUE(eventually([&] {
    now = status_proxy_row(ferry.command("status").out, "web");
    return now.size() == 6 && now[0] == before[0] + 3 && now[2] == 1;
  })) << ferry.command("status").out;

  // The held session ends; the old master leaves; its totals are the new master's for good.
  held.reset();
  EXPECT_EQ(ferry.wait().exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    now = status_proxy_row(ferry.command("status").out, "web");
    return now.size() == 6 && now[0] == 9 && now[1] == 9 && now[2] == 0;
  })) << ferry.command("status").out;
  ASSERT_TRUE(one_session(port));
  ASSERT_TRUE(eventually([&] {
    now = status_proxy_row(ferry.command("status").out, "web");
    return now.size() == 6 && now[0] == 10 && now[1] == 10;
  })) << ferry.command("status").out;
  EXPECT_EQ(reloads_ok(ferry.command("status").out), 1);
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
}

TEST(UpgradeStatsTest, AClientAtItsLimitStaysRefusedWhileItsSessionsOnTheOldWorkersAreOpen) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port(), "max_conns_per_client = 3;"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(connect_from("127.0.0.1", "127.0.0.1", port));
    ASSERT_TRUE(served(held.back())) << "session " << i + 1;
  }
  event::UniqueFd refused(connect_from("127.0.0.1", "127.0.0.1", port));
  EXPECT_TRUE(closed_by_peer(refused.get(), seconds(3)));
  refused.reset();

  const Finished up = ferry.command("upgrade");
  ASSERT_EQ(up.exit_code, 0) << up.err << ferry.log();
  const pid_t fresh = pid_in(ferry.pid_file());
  const KillOnExit guard{fresh};
  ASSERT_TRUE(alive(ferry.master())) << "the old workers keep the three sessions";
  // Only the new workers accept now: another address is served, ours is not.
  ASSERT_TRUE(eventually([&] {
    const event::UniqueFd other(connect_from("127.0.0.2", "127.0.0.1", port));
    const bool ok = served(other.get());
    return ok;
  }));
  for (int i = 0; i < 4; ++i) {
    const event::UniqueFd fourth(connect_from("127.0.0.1", "127.0.0.1", port));
    ASSERT_GE(fourth.get(), 0);
    EXPECT_TRUE(closed_by_peer(fourth.get(), seconds(3))) << "try " << i << " after the upgrade";
  }
  for (int& fd : held) ::close(fd);
  held.clear();
  EXPECT_EQ(ferry.wait().exit_code, 0);
  // The old workers' sessions are over: the client has its three again.
  ASSERT_TRUE(eventually([&] { return open_served("127.0.0.1", port, 3, held); }));
  for (int fd : held) ::close(fd);
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
}

TEST(UpgradeStatsTest, GarbageForTheOldStatisticsLeavesTheNewMasterServingAndItsStatusClean) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ferry.set_options({.env = {"FERRY_TEST_PASS_GARBAGE_STATS=1"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_TRUE(one_session(port));

  const Finished up = ferry.command("upgrade");
  ASSERT_EQ(up.exit_code, 0) << up.err << ferry.log();
  const pid_t fresh = pid_in(ferry.pid_file());
  const KillOnExit guard{fresh};
  EXPECT_EQ(ferry.wait().exit_code, 0);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(one_session(port));
  std::string status;
  ASSERT_TRUE(eventually([&] {
    status = ferry.command("status").out;
    const std::vector<long> now = status_proxy_row(status, "web");
    return now.size() == 6 && now[0] == 3 && now[1] == 3;
  })) << status;
  // Nothing of the garbage is shown: no other proxy, no other server.
  EXPECT_EQ(rows(status, "PROXY").size(), 1U) << status;
  EXPECT_EQ(rows(status, "UPSTREAM").size(), 1U) << status;
  EXPECT_TRUE(alive(fresh));
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
}

// A third master while the old one still runs would take over from one that is leaving (nginx
// ignores USR2 then too).
TEST(UpgradeStatsTest, ANewMasterRefusesAnUpgradeWhileTheOldMasterRuns) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ferry.signal(SIGUSR2);
  pid_t fresh = 0;
  ASSERT_TRUE(eventually([&] {
    fresh = pid_in(ferry.pid_file());
    return fresh > 0 && fresh != ferry.master() && children_of(fresh).size() == 2;
  })) << ferry.log();
  const KillOnExit guard{fresh};
  const Finished again = ferry.command("upgrade");
  EXPECT_EQ(again.exit_code, 4) << "busy: nothing was done, ask again later: " << again.err;
  EXPECT_NE(again.err.find("of the last upgrade still runs"), std::string::npos) << again.err;
  EXPECT_EQ(pid_in(ferry.pid_file()), fresh);
  ferry.signal(SIGQUIT);
  EXPECT_EQ(ferry.wait().exit_code, 0);
  EXPECT_TRUE(one_session(port));
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
}

// The new master's workers counted their sessions to a max_conns server under their per-client
// share, which after an upgrade lay past the end of the servers' shares: not counted as theirs,
// so a killed worker's places were never given back. Now they count under their statistics
// slot, as the reaping master gives them back.
TEST(UpgradeStatsTest, AfterAnUpgradeADeadWorkersPlacesAtAMaxConnsServerAreGivenBack) {
  EchoServer limited, other;
  const int port = free_port();
  FerryInstance ferry(config_text(
      "worker_processes = 2;", {{"web", {loopback(port)}, "app", "access_log = \"off\";"}},
      {upstream_of({server_at(limited.port(), "max_conns = 2;"), server_at(other.port())})}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const Finished up = ferry.command("upgrade");
  ASSERT_EQ(up.exit_code, 0) << up.err << ferry.log();
  const pid_t fresh = pid_in(ferry.pid_file());
  const KillOnExit guard{fresh};
  EXPECT_EQ(ferry.wait().exit_code, 0);
  ASSERT_TRUE(eventually([&] { return children_of(fresh).size() == 2; }));
  const auto hold = [&](int n) {
    std::vector<int> fds;
    for (int i = 0; i < n; ++i) {
      fds.push_back(connect_to_port(port));
      EXPECT_TRUE(served(fds.back())) << i;
    }
    return fds;
  };
  std::vector<int> held = hold(4);
  EXPECT_EQ(limited.accepted(), 2);
  const std::set<pid_t> before = children_of(fresh);
  for (pid_t w : before) ::kill(w, SIGKILL);
  for (int fd : held) ::close(fd);
  ASSERT_TRUE(eventually([&] {
    const std::set<pid_t> now = children_of(fresh);
    if (now.size() != 2) return false;
    for (pid_t w : now) {
      if (before.count(w) != 0) return false;
    }
    return true;
  }));
  held = hold(4);
  EXPECT_EQ(limited.accepted(), 4) << "the dead workers' two places must be free again";
  for (int fd : held) ::close(fd);
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
}

// Issue 17: each master's workers took the per-client shares of one half of the table. A new
// master killed with kill -9 leaves its workers draining on as orphans, in that half; the next
// upgrade's master took the same half, so the death of its workers took the orphans' sessions
// out of the table, and a client at its limit got more. Now a share whose owner lives is never
// handed out again.
TEST(UpgradeStatsTest, AKilledNewMastersOrphanedWorkersKeepTheirClientsLimited) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port(), "max_conns_per_client = 3;"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const pid_t old_master = ferry.master();
  ferry.signal(SIGUSR2);
  pid_t killed = 0;
  ASSERT_TRUE(eventually([&] {
    killed = pid_in(ferry.pid_file());
    return killed > 0 && killed != old_master && children_of(killed).size() == 2;
  })) << ferry.log();
  KillOnExit guard{killed};
  const std::set<pid_t> orphans = children_of(killed);
  // Only the new master's workers serve: their shares hold the client's three sessions.
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] { return children_of(old_master) == std::set<pid_t>{killed}; }))
      << ferry.log();
  std::vector<int> held;
  ASSERT_TRUE(open_served("127.0.0.1", port, 3, held));
  ASSERT_EQ(::kill(killed, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return pid_in(ferry.pid_file()) == old_master; })) << ferry.log();
  for (pid_t orphan : orphans) ASSERT_TRUE(alive(orphan)) << "draining the three sessions";

  // Upgrade again; then the new master's workers die and are replaced.
  ferry.signal(SIGUSR2);
  pid_t fresh = 0;
  ASSERT_TRUE(eventually([&] {
    fresh = pid_in(ferry.pid_file());
    return fresh > 0 && fresh != old_master && children_of(fresh).size() == 2;
  })) << ferry.log();
  guard.pid = fresh;
  const KillOnExit orphan_guard{*orphans.begin()};
  const KillOnExit other_orphan_guard{*orphans.rbegin()};
  const std::set<pid_t> first_workers = children_of(fresh);
  for (pid_t w : first_workers) ASSERT_EQ(::kill(w, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] {
    const std::set<pid_t> now = children_of(fresh);
    return now.size() == 2 && *now.begin() != *first_workers.begin() &&
           *now.begin() != *first_workers.rbegin() && *now.rbegin() != *first_workers.begin() &&
           *now.rbegin() != *first_workers.rbegin();
  })) << ferry.log();
  ASSERT_TRUE(eventually([&] {
    const event::UniqueFd other(connect_from("127.0.0.2", "127.0.0.1", port));
    const bool ok = served(other.get());
    return ok;
  })) << ferry.log();
  for (int i = 0; i < 4; ++i) {
    const event::UniqueFd fourth(connect_from("127.0.0.1", "127.0.0.1", port));
    ASSERT_GE(fourth.get(), 0);
    EXPECT_TRUE(closed_by_peer(fourth.get(), seconds(3))) << "try " << i;
  }
  for (int fd : held) ::close(fd);
  for (pid_t orphan : orphans) EXPECT_TRUE(eventually([&] { return !alive(orphan); }));
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
  ferry.signal(SIGQUIT);
  EXPECT_EQ(ferry.wait().exit_code, 0);
}

}  // namespace
}  // namespace ferry::test
