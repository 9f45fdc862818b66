// Binary upgrade end to end, under load: USR2 starts a new master from the same path that
// inherits the listening sockets; WINCH stops the old workers; QUIT on the old master completes
// the upgrade — or HUP on it and QUIT on the new one roll it back. No connection may fail.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/load.h"
#include "tests/support/process.h"

namespace ferry::test {
namespace {

using std::chrono::seconds;

std::string config(int port, int backend) {
  return config_text("worker_processes = 2;", {{"web", {loopback(port)}, "app", ""}},
                     {upstream_of({server_at(backend)})});
}

// Starts the upgrade and waits until the new master's workers serve; returns the new master.
pid_t start_upgrade(FerryInstance& ferry) {
  const pid_t old_master = ferry.master();
  ferry.signal(SIGUSR2);
  pid_t fresh = 0;
  EXPECT_TRUE(eventually([&] {
    fresh = pid_in(ferry.pid_file());
    return fresh > 0 && fresh != old_master && children_of(fresh).size() == 2 &&
           std::filesystem::exists(ferry.pid_file() + ".oldbin");
  })) << ferry.log();
  EXPECT_EQ(pid_in(ferry.pid_file() + ".oldbin"), old_master);
  EXPECT_TRUE(ferry.wait_for_log("inherited listening socket"));
  return fresh;
}

// A running ferry with two workers in front of an echo backend.
class UpgradeTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(ferry.start()) << ferry.log(); }
  // Starts 20 client threads and waits until they got through 200 times.
  EchoLoad& start_load() {
    load = std::make_unique<EchoLoad>(port, 20);
    EXPECT_TRUE(eventually([&] { return load->done() > 200; }));
    return *load;
  }
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry{config(port, backend.port())};
  std::unique_ptr<EchoLoad> load;
};

TEST_F(UpgradeTest, Usr2WinchQuitHandsOverWithoutAFailedConnection) {
  const auto old_workers = ferry.workers();
  EchoLoad& load = start_load();

  const pid_t fresh = start_upgrade(ferry);
  ASSERT_GT(fresh, 0);
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] {
    return ferry.workers().size() == 1 && children_of(ferry.master()).count(fresh);
  })) << "the old workers must leave; only the new master stays its child";
  long before = load.done();
  ASSERT_TRUE(eventually([&] { return load.done() > before + 200; }))
      << "the new master's workers must serve";

  ferry.signal(SIGQUIT);
  const Finished old_end = ferry.wait();
  EXPECT_EQ(old_end.exit_code, 0);
  before = load.done();
  ASSERT_TRUE(eventually([&] { return load.done() > before + 200; }));
  load.stop();
  EXPECT_EQ(load.failed(), 0) << load.done() << " succeeded";
  EXPECT_FALSE(std::filesystem::exists(ferry.pid_file() + ".oldbin"));
  EXPECT_EQ(pid_in(ferry.pid_file()), fresh);
  EXPECT_TRUE(alive(fresh));

  // The new master answers -s like the old one did, and stops cleanly.
  const Finished r = ferry.command("reload");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
  EXPECT_FALSE(std::filesystem::exists(ferry.pid_file()));
}

// A terminal resize sends WINCH to a ferry in the foreground: with no upgrade under way (none
// yet, or one rolled back) it is ignored, and the same workers go on serving.
TEST_F(UpgradeTest, WinchWithoutAnUpgradeUnderWayIsIgnored) {
  const auto workers = ferry.workers();
  ASSERT_EQ(workers.size(), 2U);
  ferry.signal(SIGWINCH);
  EXPECT_TRUE(ferry.wait_for_log("SIGWINCH ignored")) << ferry.log();
  EXPECT_TRUE(served_through(port, "still served after WINCH")) << ferry.log();
  EXPECT_EQ(ferry.workers(), workers);

  // The same once the new master of an upgrade has exited: this master is alone again.
  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  ::kill(fresh, SIGQUIT);
  ASSERT_TRUE(ferry.wait_for_log("this master is in charge again")) << ferry.log();
  ASSERT_TRUE(eventually([&] { return ferry.workers() == workers; })) << ferry.log();
  ferry.drain_log();
  const std::size_t mark = ferry.log().size();
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] {
    ferry.drain_log();
    return ferry.log().find("SIGWINCH ignored", mark) != std::string::npos;
  })) << ferry.log();
  EXPECT_TRUE(served_through(port, "still served after the second WINCH")) << ferry.log();
  EXPECT_EQ(ferry.workers(), workers);
}

TEST_F(UpgradeTest, HupOnTheOldMasterAndQuitOnTheNewRollBack) {
  EchoLoad& load = start_load();

  const pid_t fresh = start_upgrade(ferry);
  const KillOnExit guard{fresh};
  ASSERT_GT(fresh, 0);
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] { return ferry.workers().size() == 1; }));
  ferry.signal(SIGHUP);  // the old workers come back
  ASSERT_TRUE(eventually([&] { return ferry.workers().size() == 3; })) << ferry.log();
  ::kill(fresh, SIGQUIT);
  ASSERT_TRUE(eventually([&] { return !alive(fresh) && ferry.workers().size() == 2; }))
      << ferry.log();
  EXPECT_TRUE(eventually([&] { return pid_in(ferry.pid_file()) == ferry.master(); }))
      << "the old master takes its pid file back";
  EXPECT_FALSE(std::filesystem::exists(ferry.pid_file() + ".oldbin"));
  const long before = load.done();
  ASSERT_TRUE(eventually([&] { return load.done() > before + 200; }));
  load.stop();
  EXPECT_EQ(load.failed(), 0) << load.done() << " succeeded";
  const Finished r = ferry.command("reload");
  EXPECT_EQ(r.exit_code, 0) << "the old master answers on the control socket again: " << r.err;
}

TEST_F(UpgradeTest, SignalUpgradeDoesItAllInOneCommandUnderLoad) {
  EchoLoad& load = start_load();

  // USR2, wait for the new master to serve, QUIT to the old one: exit 0 once it is done.
  const Finished up = ferry.command("upgrade");
  EXPECT_EQ(up.exit_code, 0) << up.err << ferry.log();
  const pid_t fresh = pid_in(ferry.pid_file());
  const KillOnExit guard{fresh};
  EXPECT_NE(fresh, ferry.master());
  EXPECT_NE(up.err.find("new master pid " + std::to_string(fresh) + " serves"), std::string::npos)
      << up.err;
  EXPECT_EQ(ferry.wait().exit_code, 0) << "the old master leaves by itself";
  const long before = load.done();
  ASSERT_TRUE(eventually([&] { return load.done() > before + 200; }));
  load.stop();
  EXPECT_EQ(load.failed(), 0) << load.done() << " succeeded";
  EXPECT_EQ(children_of(fresh).size(), 2u);
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
}

TEST_F(UpgradeTest, SignalUpgradeFailsAndKeepsTheOldMasterWhenTheNewOneCannotStart) {
  // The new binary reads the configuration again: a broken one makes it exit at once.
  const std::string good = config(port, backend.port());
  ferry.rewrite("worker_procesess = 2;\n" + good);
  const Finished up = ferry.command("upgrade");
  EXPECT_EQ(up.exit_code, 1) << up.err;
  EXPECT_NE(up.err.find("stays in charge"), std::string::npos) << up.err;
  EXPECT_TRUE(alive(ferry.master()));
  EXPECT_TRUE(eventually([&] { return pid_in(ferry.pid_file()) == ferry.master(); }));
  const event::UniqueFd fd(connect_to_port(port));
  EXPECT_TRUE(fd.valid() && echo_round_trip(fd.get(), "still served by the old master"));
}

// A test hook is the master's to read: it takes it out of the environment, so that neither its
// workers nor a new binary (whose generations count from 1 again) act on it.
TEST(UpgradeHooksTest, ANewBinaryDoesNotActOnTheFirstMastersTestHook) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ferry.set_options({.env = {"FERRY_TEST_UNREADY_GENERATION=2"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const Finished up = ferry.command("upgrade");
  ASSERT_EQ(up.exit_code, 0) << up.err << ferry.log();
  const pid_t fresh = pid_in(ferry.pid_file());
  const KillOnExit guard{fresh};
  EXPECT_EQ(ferry.wait().exit_code, 0) << "the old master leaves by itself";
  // The new master's generation 2 reports ready: its reload completes.
  const Finished reload = ferry.command("reload");
  EXPECT_EQ(reload.exit_code, 0) << reload.err;
  event::UniqueFd fd(connect_to_port(port));
  EXPECT_TRUE(fd.valid() && echo_round_trip(fd.get(), "served by generation 2"));
  fd.reset();
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
}

// The same for the health checks' hook (their socket() fails), which the workers act on: the new
// master's checker probes, and finds the server nothing listens for down.
TEST(UpgradeHooksTest, ANewBinaryDoesNotActOnTheFirstMastersHealthCheckHook) {
  const int port = free_port();
  const std::string dead = "127.0.0.1:" + std::to_string(free_port());
  FerryInstance ferry(config_text(
      "", {{"web", {loopback(port)}, "app", "access_log = \"off\";"}},
      {upstream_of({{dead, ""}},
                   "health_check = { interval = \"100ms\"; timeout = \"100ms\"; fails = 1; };")}));
  ferry.set_options({.env = {"FERRY_TEST_HEALTH_CHECK_NO_SOCKET=1"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_TRUE(ferry.wait_for_log("socket() failed: Too many open files")) << ferry.log();
  const Finished up = ferry.command("upgrade");
  ASSERT_EQ(up.exit_code, 0) << up.err << ferry.log();
  const pid_t fresh = pid_in(ferry.pid_file());
  const KillOnExit guard{fresh};
  EXPECT_TRUE(ferry.wait_for_log("server " + dead + " is down")) << ferry.log();
  EXPECT_EQ(ferry.wait().exit_code, 0) << "the old master leaves by itself";
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(fresh); }));
}

// The binary an upgrade starts is the one the start's path names now: a link switched to another
// release (/opt/ferry/current) runs the new target, and a ferry started through PATH (argv[0]
// without a slash) finds its binary there again. The new target here is a script that records
// that it ran and runs ferry.
class UpgradeBinaryTest : public ::testing::TestWithParam<bool> {};

TEST_P(UpgradeBinaryTest, TheLinkStartedThroughNamesTheNewBinary) {
  const bool through_path = GetParam();
  namespace fs = std::filesystem;
  EchoServer backend;
  TempDir dir;
  const int port = free_port();
  const std::string pid_file = dir.path() + "/ferry.pid";
  const std::string conf =
      dir.write("ferry.conf", "pid_file = \"" + pid_file + "\";\n" + config(port, backend.port()));
  const std::string marker = dir.path() + "/next-ran";
  const std::string next = dir.write(
      "next", "#!/bin/sh\necho \"$0\" > '" + marker + "'\nexec '" + ferry_binary() + "' \"$@\"\n");
  fs::permissions(next, fs::perms::owner_all);
  const std::string link = dir.path() + "/bin/ferry";
  fs::create_directories(dir.path() + "/bin");
  fs::create_symlink(ferry_binary(), link);
  std::unique_ptr<Process> master;
  if (through_path) {
    master = std::make_unique<Process>(std::vector<std::string>{
        "/usr/bin/env", "PATH=" + dir.path() + "/bin:/usr/bin:/bin", "ferry", "-c", conf});
  } else {
    master = std::make_unique<Process>(std::vector<std::string>{link, "-c", conf});
  }
  ASSERT_TRUE(master->wait_for_stderr("worker(s) serving")) << master->stderr_so_far();

  // Switched as a deployment does: a new link renamed over the old one.
  fs::create_symlink(next, dir.path() + "/bin/ferry.new");
  fs::rename(dir.path() + "/bin/ferry.new", link);
  KillOnExit fresh;
  master->signal(SIGUSR2);
  EXPECT_TRUE(eventually([&] {
    fresh.pid = pid_in(pid_file);
    return fresh.pid > 0 && fresh.pid != master->pid() && children_of(fresh.pid).size() == 2;
  })) << master->stderr_so_far();
  EXPECT_TRUE(fs::exists(marker)) << "the new target did not run: " << master->stderr_so_far();
  EXPECT_TRUE(served_through(port));
}

INSTANTIATE_TEST_SUITE_P(UpgradeTest, UpgradeBinaryTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "ThroughPath" : "ByItsPath"; });

// A state page the new master does not know (a wrong magic word: another layout, another
// program) is not read: the new master behaves as with none, and, stopped while the old master
// drains its last session, hands the service back to it rather than trust the page's "stopping".
TEST(UpgradeHooksTest, AStatePageWithAWrongMagicIsIgnored) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ferry.set_options({.env = {"FERRY_TEST_PASS_BAD_STATE_PAGE=1"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  event::UniqueFd client(connect_to_port(port));  // keeps an old worker draining
  ASSERT_TRUE(client.valid() && echo_round_trip(client.get(), "before the upgrade"));
  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  EXPECT_TRUE(ferry.wait_for_log("is not one this binary reads")) << ferry.log();
  EXPECT_TRUE(ferry.wait_for_log("the old master shares no state page")) << ferry.log();
  ferry.signal(SIGQUIT);
  ASSERT_TRUE(ferry.wait_for_log("graceful stop")) << ferry.log();
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(ferry.wait_for_log("handing the service back to it")) << ferry.log();
  EXPECT_TRUE(echo_round_trip(client.get(), "the session finishes"));
  client.reset();
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
}

// Issue 18 review: WINCH to an old master already stopping (QUIT while a session drains) wrote
// "winched" over "stopping" in the state page, so the new master, stopped next, handed the service
// back to a master on its way out.
TEST(UpgradeHooksTest, WinchAfterQuitLeavesTheOldMasterStopping) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  event::UniqueFd client(connect_to_port(port));  // keeps an old worker draining
  ASSERT_TRUE(client.valid() && echo_round_trip(client.get(), "before the upgrade"));
  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  const KillOnExit guard{fresh};
  ferry.signal(SIGQUIT);
  ASSERT_TRUE(ferry.wait_for_log("graceful stop")) << ferry.log();
  ferry.signal(SIGWINCH);
  EXPECT_TRUE(ferry.wait_for_log("SIGWINCH ignored: the master is stopping")) << ferry.log();
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(ferry.wait_for_log("is stopping too: the service stops")) << ferry.log();
  EXPECT_EQ(ferry.log().find("handing the service back to it"), std::string::npos) << ferry.log();
  EXPECT_TRUE(echo_round_trip(client.get(), "the session finishes"));
  client.reset();
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
}

// How many of `pid`'s descriptors refer to `file`.
int handles_of(pid_t pid, const std::string& file) {
  namespace fs = std::filesystem;
  std::error_code ec;
  int n = 0;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    if (fs::read_symlink(entry.path(), ec) == file) ++n;
  }
  return n;
}

// The new master of an upgrade inherits the listening sockets and nothing else: not the old
// master's error-log file (opened without O_CLOEXEC), of which it would keep a second handle,
// open for good, once the log is rotated.
TEST(UpgradeFdsTest, NewMasterHoldsOnlyItsOwnHandleOfTheErrorLog) {
  EchoServer backend;
  TempDir dir;
  const int port = free_port();
  const std::string log = dir.path() + "/error.log";
  const std::string pid_file = dir.path() + "/ferry.pid";
  const std::string conf =
      dir.write("ferry.conf", "pid_file = \"" + pid_file + "\";\nlog = { path = \"" + log +
                                  "\"; level = \"info\"; };\n" + config(port, backend.port()));
  Process master({ferry_binary(), "-c", conf});
  KillOnExit new_master;
  auto logged = [&](const std::string& text) {
    std::ifstream in(log);
    const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return all.find(text) != std::string::npos;
  };
  ASSERT_TRUE(eventually([&] { return logged("worker(s) serving"); })) << master.stderr_so_far();
  EXPECT_EQ(handles_of(master.pid(), log), 1);

  const Finished up = run_program({ferry_binary(), "-s", "upgrade", "-c", conf}, seconds(40));
  ASSERT_EQ(up.exit_code, 0) << up.err;
  EXPECT_EQ(master.wait(seconds(20)).exit_code, 0);
  new_master.pid = pid_in(pid_file);
  ASSERT_TRUE(alive(new_master.pid));
  EXPECT_EQ(handles_of(new_master.pid, log), 1);
  for (pid_t worker : children_of(new_master.pid)) EXPECT_EQ(handles_of(worker, log), 1);
  ::kill(new_master.pid, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return !alive(new_master.pid); }, seconds(20)));
}

}  // namespace
}  // namespace ferry::test
