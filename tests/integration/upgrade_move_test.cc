// End-to-end tests of sessions that move across a binary upgrade (issue 20): the old master's
// workers hand their established sessions to the new master's workers (at `-s upgrade`'s QUIT,
// or at WINCH), a rollback hands them back, and the leaving master exits without waiting for
// them; with reload_sessions = "drain" the sessions stay and drain as before.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/config_text.h"
#include "tests/support/epoll_backend.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"
#include "tests/support/stream_load.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

int slowdown() { return sanitizer_slowdown(); }

// How long a leaving master and its workers may outlive the signal that told them to leave:
// its workers' sessions would keep them for worker_shutdown_timeout (2 minutes) if they drained.
const milliseconds kLeavingMasterGone{2'000 * slowdown()};

constexpr int kSessions = 1000;

// Whether `pid` has exited: gone, or a zombie its parent (this test, for the first master) has
// not reaped yet.
bool exited(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  const std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] == 'Z';
}

std::string config(int port, int backend, const std::string& top_extra = "") {
  return config_text(top_extra +
                         "worker_processes = 2;\nworker_connections = 8192;\n"
                         "worker_shutdown_timeout = \"2m\";",
                     {{"web", {loopback(port)}, "app", "access_log = \"off\";"}},
                     {upstream_of({server_at(backend)})});
}

class UpgradeMoveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ferry.start()) << ferry.log();
    load.emplace(StreamLoad::Options{.port = port, .sessions = kSessions, .window = 1024});
    ASSERT_EQ(load->now().connected, kSessions);
    ASSERT_TRUE(load->progress(2048)) << load->now().first_problem;
  }
  ::testing::AssertionResult nothing_lost(const char* when) {
    const StreamLoad::Result now = load->now();
    if (now.cut + now.wrong != 0) {
      return ::testing::AssertionFailure()
             << when << ": " << now.cut << " cut, " << now.wrong << " wrong: " << now.first_problem;
    }
    if (!load->progress(2048)) {
      return ::testing::AssertionFailure() << when << ": " << load->now().first_problem;
    }
    return ::testing::AssertionSuccess();
  }
  // The web proxy's accepted and active counts in `-s status` (of the master at the pid file).
  bool counts_are(long accepted, long active) {
    const auto row = status_proxy_row(ferry.command("status").out, "web");
    return row.size() >= 3 && row[0] == accepted && row[2] == active;
  }

  EpollBackend backend;
  const int port = free_port();
  FerryInstance ferry{config(port, backend.port())};
  std::optional<StreamLoad> load;
};

// `ferry -s upgrade` with 1,000 sessions streaming: the new master serves, the old one is told
// to QUIT, its workers move every session to the new master's workers and it exits at once;
// every byte comes back, and each session is counted once.
TEST_F(UpgradeMoveTest, AnUpgradeMovesEverySessionAndTheOldMasterExitsAtOnce) {
  const Finished up = ferry.command("upgrade");
  ASSERT_EQ(up.exit_code, 0) << up.err << ferry.log();
  const auto told = std::chrono::steady_clock::now();
  const pid_t fresh = pid_in(ferry.pid_file());
  const KillOnExit guard{fresh};
  ASSERT_NE(fresh, ferry.master());
  ASSERT_TRUE(eventually([&] { return exited(ferry.master()); }, kLeavingMasterGone))
      << "the old master still runs: its workers did not move their sessions\n"
      << ferry.log();
  const auto gone =
      std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - told);
  // The new master takes the old one's counts for good as soon as it has exited (a session
  // that moved is in both until then): no session twice. (Without that, within its 1 s poll.)
  EXPECT_TRUE(
      eventually([&] { return counts_are(kSessions, kSessions); }, milliseconds(300 * slowdown())))
      << ferry.command("status").out << (ferry.drain_log(), ferry.log());
  ASSERT_TRUE(nothing_lost("after the upgrade")) << ferry.log();
  EXPECT_EQ(children_of(fresh).size(), 2U);
  EXPECT_EQ(ferry.wait().exit_code, 0);
  const StreamLoad::Result result = load->finish();
  EXPECT_EQ(result.cut, 0) << result.first_problem;
  EXPECT_EQ(result.wrong, 0) << result.first_problem;
  std::cout << "[ moved ] " << kSessions << " sessions to the new master; the old one gone "
            << gone.count() << " ms after `-s upgrade` returned\n";
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
  ferry.drain_log();
  EXPECT_NE(ferry.log().find("move here (4 socket pair(s))"), std::string::npos) << ferry.log();
  EXPECT_EQ(ferry.log().find("[error]"), std::string::npos) << ferry.log();
  EXPECT_EQ(ferry.log().find("stays in the old worker"), std::string::npos) << ferry.log();
  // Each old worker moves to both new ones, not to whichever socket came first.
  EXPECT_EQ(count_in(ferry.log(), "session(s) to 2 other worker(s)"), 2U) << ferry.log();
}

// USR2 and WINCH move the sessions to the new master's workers; HUP to the old master and QUIT
// to the new one (the rollback) move them back, and the new master exits without waiting.
TEST_F(UpgradeMoveTest, ARollbackMovesTheSessionsBack) {
  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  const KillOnExit guard{fresh};
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] { return ferry.own_workers().empty(); }, kLeavingMasterGone))
      << "the old master's workers still run: they did not move their sessions\n"
      << ferry.log();
  ASSERT_TRUE(nothing_lost("after WINCH")) << ferry.log();

  ferry.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return ferry.own_workers().size() == 2; })) << ferry.log();
  ASSERT_EQ(::kill(fresh, SIGQUIT), 0);
  ASSERT_TRUE(eventually([&] { return !alive(fresh); }, kLeavingMasterGone))
      << "the new master still runs: its workers did not move their sessions back\n"
      << ferry.log();
  ASSERT_TRUE(nothing_lost("after the rollback")) << ferry.log();
  EXPECT_EQ(pid_in(ferry.pid_file()), ferry.master());
  EXPECT_EQ(ferry.workers().size(), 2U);
  // Away and back: the old master counts each session once.
  EXPECT_TRUE(eventually([&] { return counts_are(kSessions, kSessions); }))
      << ferry.command("status").out;
  const StreamLoad::Result result = load->finish();
  EXPECT_EQ(result.cut, 0) << result.first_problem;
  EXPECT_EQ(result.wrong, 0) << result.first_problem;
}

// WINCH, then QUIT before the new master has answered the first request (it is stopped
// meanwhile): the QUIT asks for nobody new, and the first request's answer still reaches the
// workers it was for (review of the upgrade move: it was dropped, and they drained).
TEST_F(UpgradeMoveTest, QuitBeforeTheAnswerToWinchStillMovesEverySession) {
  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  const KillOnExit guard{fresh};
  ASSERT_EQ(::kill(fresh, SIGSTOP), 0);
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(ferry.wait_for_log("take the sessions of 2 worker(s)")) << ferry.log();
  ferry.signal(SIGQUIT);
  ASSERT_TRUE(ferry.wait_for_log("SIGQUIT: graceful stop")) << ferry.log();
  ASSERT_EQ(::kill(fresh, SIGCONT), 0);
  ASSERT_TRUE(eventually([&] { return exited(ferry.master()); }, kLeavingMasterGone))
      << "the old master still runs: its workers did not move their sessions\n"
      << ferry.log();
  EXPECT_EQ(ferry.wait().exit_code, 0);
  ASSERT_TRUE(nothing_lost("after the upgrade")) << ferry.log();
  const StreamLoad::Result result = load->finish();
  EXPECT_EQ(result.cut + result.wrong, 0) << result.first_problem;
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
}

// reload_sessions = "drain": the old master's workers keep their sessions after WINCH.
TEST(UpgradeDrainTest, DrainKeepsSessionsWithTheOldMaster) {
  EpollBackend backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port(), "reload_sessions = \"drain\";\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  StreamLoad load({.port = port, .sessions = 20, .window = 1024});
  ASSERT_TRUE(load.progress(2048)) << load.now().first_problem;
  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  const KillOnExit guard{fresh};
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(ferry.wait_for_log("SIGWINCH: stopping the workers")) << ferry.log();
  ASSERT_TRUE(load.progress(2048)) << load.now().first_problem;
  EXPECT_FALSE(ferry.own_workers().empty()) << "drain: the old workers keep their sessions";
  EXPECT_EQ(ferry.log().find("take the sessions of"), std::string::npos) << ferry.log();
  const StreamLoad::Result result = load.finish();
  EXPECT_EQ(result.cut + result.wrong, 0) << result.first_problem;
}

}  // namespace
}  // namespace ferry::test
