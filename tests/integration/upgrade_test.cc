// Binary upgrade end to end, under load: USR2 starts a new master from the same path that
// inherits the listening sockets; WINCH stops the old workers; QUIT on the old master completes
// the upgrade — or HUP on it and QUIT on the new one roll it back. No connection may fail.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/load.h"
#include "tests/support/process.h"

namespace ferry::test {
namespace {

using std::chrono::seconds;

pid_t pid_in(const std::string& file) {
  std::ifstream in(file);
  pid_t pid = 0;
  in >> pid;
  return pid;
}

bool alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

// The new master is not our child: make sure no failed test leaves it running.
struct KillOnExit {
  pid_t pid = 0;
  ~KillOnExit() {
    if (alive(pid)) ::kill(pid, SIGKILL);
  }
};

std::string config(int port, int backend) {
  return "worker_processes = 2;\n"
         "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:" +
         std::to_string(backend) +
         "\"; } ); } );\n"
         "proxies = ( { name = \"web\"; listen = \"127.0.0.1:" +
         std::to_string(port) + "\"; upstream = \"app\"; } );\n";
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

TEST(UpgradeTest, Usr2WinchQuitHandsOverWithoutAFailedConnection) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const auto old_workers = ferry.workers();
  EchoLoad load(port, 20);
  ASSERT_TRUE(eventually([&] { return load.done() > 200; }));

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

TEST(UpgradeTest, HupOnTheOldMasterAndQuitOnTheNewRollBack) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EchoLoad load(port, 20);
  ASSERT_TRUE(eventually([&] { return load.done() > 200; }));

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

}  // namespace
}  // namespace ferry::test
