// Rolling a binary upgrade back while the new master drains: the old master takes the pid file
// and the control socket back at once (not when the new master's last session ends), so `-s
// reload`, `-s reopen` and `-s upgrade` reach the master that serves; and `-s upgrade` that gives
// up on a new master that does not serve leaves the old one in charge, the new one gone.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"

namespace ferry::test {
namespace {

using std::chrono::seconds;

bool alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

// The new master is not our child: make sure no failed test leaves it running.
struct KillOnExit {
  pid_t pid = 0;
  ~KillOnExit() {
    if (alive(pid)) ::kill(pid, SIGKILL);
  }
};

// Sessions drain for up to a minute: a held one keeps a stopped master alive for the test.
std::string config(int port, int backend) {
  return config_text("worker_processes = 2;\nworker_shutdown_timeout = \"60s\";",
                     {{"web", {loopback(port)}, "app", ""}}, {upstream_of({server_at(backend)})});
}

std::size_t count_in(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = 0; (at = text.find(what, at)) != std::string::npos; at += what.size()) ++n;
  return n;
}

class UpgradeRollbackTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(ferry.start()) << ferry.log(); }

  // USR2, then WINCH: the new master's workers are the only ones; `held` is a session on one of
  // them, which keeps the new master draining once it is told to stop.
  void upgrade_and_hold_a_session() {
    fresh.pid = ferry.upgrade(2);
    ASSERT_GT(fresh.pid, 0) << ferry.log();
    ferry.signal(SIGWINCH);
    ASSERT_TRUE(eventually([&] { return ferry.own_workers().empty(); })) << ferry.log();
    held = connect_to_port(port);
    ASSERT_TRUE(held >= 0 && echo_round_trip(held, "on the new master's worker"));
  }
  void TearDown() override {
    if (held >= 0) ::close(held);
  }
  std::size_t logged(const std::string& what) {
    ferry.drain_log();
    return count_in(ferry.log(), what);
  }

  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry{config(port, backend.port())};
  KillOnExit fresh;
  int held = -1;
};

// Issue 18 item 10: HUP to the old master brings its workers back; QUIT to the new one rolls
// back. While the new master drains its session, the pid file and the control socket are the
// old master's again.
TEST_F(UpgradeRollbackTest, TheOldMasterAnswersWhileTheNewOneDrains) {
  upgrade_and_hold_a_session();
  ferry.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return ferry.own_workers().size() == 2; })) << ferry.log();
  ::kill(fresh.pid, SIGQUIT);
  ASSERT_TRUE(eventually([&] { return pid_in(ferry.pid_file()) == ferry.master(); }))
      << "the old master takes its pid file back while the new master drains: " << ferry.log();
  EXPECT_FALSE(std::filesystem::exists(ferry.pid_file() + ".oldbin"));
  ASSERT_TRUE(alive(fresh.pid)) << "the held session keeps the new master draining";

  const Finished reload = ferry.command("reload");
  EXPECT_EQ(reload.exit_code, 0) << "the reload reaches the serving master: " << reload.err
                                 << ferry.log();
  const std::size_t reopened = logged("SIGUSR1: reopening logs");
  const Finished reopen = ferry.command("reopen");
  EXPECT_EQ(reopen.exit_code, 0) << reopen.err;
  EXPECT_TRUE(eventually([&] { return logged("SIGUSR1: reopening logs") == reopened + 2; }))
      << "both masters reopen their logs: " << ferry.log();
  const Finished upgrade = ferry.command("upgrade");
  EXPECT_EQ(upgrade.exit_code, 4) << "busy, not 'no master' (3: the package would restart): "
                                  << upgrade.err;
  EXPECT_NE(upgrade.err.find("still draining"), std::string::npos) << upgrade.err;

  // The new master's session is not disturbed; once it ends, the new master leaves, and the
  // control socket it bound is not removed with it: the old master's is at the path now.
  EXPECT_TRUE(echo_round_trip(held, "still relayed by the draining new master"));
  ::close(held);
  held = -1;
  ASSERT_TRUE(eventually([&] { return !alive(fresh.pid); }, seconds(20))) << ferry.log();
  EXPECT_TRUE(served_through(port, "served by the old master's workers")) << ferry.log();
  const Finished again = ferry.command("reload");
  EXPECT_EQ(again.exit_code, 0) << again.err << ferry.log();
  EXPECT_EQ(pid_in(ferry.pid_file()), ferry.master());
}

// Without HUP, the old master's workers were stopped by WINCH: it starts them as soon as the new
// master hands the service back, not once the new master's last session has ended.
TEST_F(UpgradeRollbackTest, AWinchedOldMasterStartsItsWorkersAsTheNewOneLeaves) {
  upgrade_and_hold_a_session();
  ::kill(fresh.pid, SIGQUIT);
  ASSERT_TRUE(eventually([&] { return ferry.own_workers().size() == 2; })) << ferry.log();
  ASSERT_TRUE(alive(fresh.pid)) << "the held session keeps the new master draining";
  EXPECT_TRUE(served_through(port, "served while the new master drains")) << ferry.log();
  EXPECT_TRUE(echo_round_trip(held, "still relayed by the draining new master"));
}

// Issue 18 review: `-s upgrade` that gives up on the new master (it never serves) told the
// operator the old master stays in charge while the new one kept running as systemd's MAINPID.
// Now the old master is asked to stop it, and answers once the service is its own again.
TEST(UpgradeAbortTest, SignalUpgradeStopsANewMasterThatDoesNotServe) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ferry.set_options({.env = {"FERRY_TEST_NEW_MASTER_UNREADY=1"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ferry.set_command_launcher({"/usr/bin/env", "FERRY_TEST_UPGRADE_WAIT_MS=1500"});
  const Finished up = ferry.command("upgrade");
  EXPECT_EQ(up.exit_code, 1) << up.err;
  EXPECT_NE(up.err.find("did not serve within"), std::string::npos) << up.err;
  EXPECT_NE(up.err.find("this master stays in charge"), std::string::npos) << up.err;
  EXPECT_EQ(pid_in(ferry.pid_file()), ferry.master()) << ferry.log();
  EXPECT_TRUE(ferry.wait_for_log("new master (pid")) << ferry.log();
  EXPECT_TRUE(eventually([&] { return ferry.workers().size() == 2; }, seconds(20)))
      << "the new master exits; the old master's two workers stay: " << ferry.log();
  EXPECT_TRUE(served_through(port, "the old master serves")) << ferry.log();
  const Finished reload = ferry.command("reload");
  EXPECT_EQ(reload.exit_code, 0) << reload.err << ferry.log();
}

}  // namespace
}  // namespace ferry::test
