// End-to-end tests of the process model: master and workers with their titles, the pid file,
// reload (good and bad) through `ferry -s reload`, respawn after kill -9, graceful stop with a
// session open, workers outliving a killed master only briefly, fd hygiene across reloads.
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string config(int workers, int listen_port, int backend_port,
                   const std::string& extra_top = "", const std::string& extra_proxy = "") {
  return config_text(
      extra_top + "worker_processes = " + std::to_string(workers) + ";\nworker_connections = 1024;",
      {{"web", {loopback(listen_port)}, "app", "access_log = \"off\"; " + extra_proxy}},
      {upstream_of({server_at(backend_port)})});
}

std::size_t open_fds(pid_t pid) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    ++n;
  }
  return n;
}

TEST(ProcessTest, MasterAndWorkersShowTheirRolesAndThePidFileComesAndGoes) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(2, port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  std::string why;
  std::ifstream pid_in(ferry.pid_file());
  pid_t from_file = 0;
  pid_in >> from_file;
  EXPECT_EQ(from_file, ferry.master());
  EXPECT_EQ(process_title(ferry.master()).rfind("ferry: master process ", 0), 0U)
      << process_title(ferry.master());
  EXPECT_NE(process_title(ferry.master()).find("-c " + ferry.conf()), std::string::npos);
  const auto workers = ferry.workers();
  ASSERT_EQ(workers.size(), 2U);
  for (pid_t w : workers) EXPECT_EQ(process_title(w), "ferry: worker process");

  event::UniqueFd fd(connect_to_port(port));
  ASSERT_GE(fd.get(), 0);
  EXPECT_TRUE(echo_round_trip(fd.get(), "through two processes"));
  fd.reset();

  ferry.signal(SIGQUIT);
  const Finished f = ferry.wait();
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_FALSE(std::filesystem::exists(ferry.pid_file()));
}

TEST(ProcessTest, ReloadSwitchesTheUpstreamAndKeepsOpenSessions) {
  EchoServer a;
  EchoServer b;
  const int port = free_port();
  FerryInstance ferry(config(2, port, a.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const pid_t master = ferry.master();
  const auto old_workers = ferry.workers();

  event::UniqueFd before(connect_to_port(port));
  ASSERT_GE(before.get(), 0);
  ASSERT_TRUE(echo_round_trip(before.get(), "opened before the reload"));
  EXPECT_EQ(a.accepted(), 1);

  ferry.rewrite(config(2, port, b.port()));
  const Finished r = ferry.command("reload");
  ASSERT_EQ(r.exit_code, 0) << r.err;

  event::UniqueFd after(connect_to_port(port));
  ASSERT_GE(after.get(), 0);
  EXPECT_TRUE(echo_round_trip(after.get(), "opened after the reload"));
  EXPECT_EQ(b.accepted(), 1) << "new connections must reach the new backend";
  EXPECT_EQ(a.accepted(), 1);
  EXPECT_TRUE(echo_round_trip(before.get(), "still working after the reload"));
  EXPECT_EQ(ferry.master(), master);

  // The old worker holding `before` stays until that session ends, then leaves.
  before.reset();
  after.reset();
  EXPECT_TRUE(eventually([&] {
    for (pid_t w : ferry.workers()) {
      if (old_workers.count(w)) return false;
    }
    return ferry.workers().size() == 2;
  })) << ferry.log();
}

TEST(ProcessTest, ABadConfigurationOnReloadIsReportedAndChangesNothing) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(2, port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const auto workers = ferry.workers();

  ferry.rewrite("worker_processes = 2;\nworker_connections = \"lots\";\n");
  const Finished r = ferry.command("reload");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(ferry.conf() + ":4: worker_connections: expected an integer"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(ferry.wait_for_log("reload rejected"));
  EXPECT_EQ(ferry.workers(), workers) << "the workers must be the same processes";

  const event::UniqueFd fd(connect_to_port(port));
  ASSERT_GE(fd.get(), 0);
  EXPECT_TRUE(echo_round_trip(fd.get(), "the old configuration still serves"));
}

// Reloads asked for at the same time: each asker gets the verdict of a reload that started after
// it asked (one queued behind the pending one), and both succeed.
TEST(ProcessTest, ConcurrentReloadsAreQueuedAndEachGetsAVerdict) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(2, port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<std::thread> askers;
  std::vector<int> codes(4, -1);
  for (int i = 0; i < 4; ++i) {
    askers.emplace_back([&, i] { codes[i] = ferry.command("reload").exit_code; });
  }
  for (auto& t : askers) t.join();
  EXPECT_EQ(codes, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_TRUE(eventually([&] { return ferry.workers().size() == 2; })) << ferry.log();
  const event::UniqueFd fd(connect_to_port(port));
  ASSERT_GE(fd.get(), 0);
  EXPECT_TRUE(echo_round_trip(fd.get(), "after concurrent reloads"));
}

TEST(ProcessTest, SignalCommandsWithoutAMasterFailClearly) {
  TempDir dir;
  const std::string conf = dir.write("f.conf", "pid_file = \"" + dir.path() + "/none.pid\";\n");
  const Finished f = run_program({ferry_binary(), "-s", "reload", "-c", conf});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find("no running master found"), std::string::npos) << f.err;
}

class RespawnTest : public ::testing::TestWithParam<bool> {};

TEST_P(RespawnTest, AKilledWorkerIsReplacedInItsSlotAndServiceGoesOn) {
  EchoServer backend;
  const int port = free_port();
  const bool mutex = GetParam();
  FerryInstance ferry(config(2, port, backend.port(),
                             std::string("events = { accept_mutex = ") +
                                 (mutex ? "true" : "false") +
                                 "; accept_mutex_delay = \"50ms\"; };\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  // With the accept mutex, an idle worker usually sits in epoll_wait holding the lock: killing
  // four in a row almost surely kills a holder, whose lock the master must release.
  const int kills = mutex ? 4 : 1;
  for (int k = 0; k < kills; ++k) {
    const auto before = ferry.workers();
    const pid_t victim = *before.begin();
    ASSERT_EQ(::kill(victim, SIGKILL), 0);
    EXPECT_TRUE(eventually(
        [&] {
          const auto now = ferry.workers();
          return now.size() == 2 && !now.count(victim);
        },
        seconds(1)))
        << ferry.log();
    EXPECT_TRUE(
        ferry.wait_for_log("(pid " + std::to_string(victim) + ") killed by signal 9 (SIGKILL)"))
        << ferry.log();
    for (int i = 0; i < 20; ++i) {
      const event::UniqueFd fd(connect_to_port(port));
      ASSERT_GE(fd.get(), 0) << "connection " << i;
      ASSERT_TRUE(echo_round_trip(fd.get(), "after the respawn " + std::to_string(i))) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AcceptModes, RespawnTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "AcceptMutex" : "Exclusive"; });

TEST(ProcessTest, GracefulStopLetsOpenSessionsFinishAndTakesNoNewOnes) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(1, port, backend.port(), "worker_shutdown_timeout = \"20s\";\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  event::UniqueFd open(connect_to_port(port));
  ASSERT_GE(open.get(), 0);
  ASSERT_TRUE(echo_round_trip(open.get(), "before quit"));

  ferry.signal(SIGQUIT);
  EXPECT_TRUE(eventually([&] {
    const event::UniqueFd fd(connect_to_port(port));
    return !fd.valid();
  })) << "new connections must be refused once stopping";
  EXPECT_TRUE(echo_round_trip(open.get(), "the open session keeps working"));
  const auto workers = ferry.workers();
  ASSERT_EQ(workers.size(), 1U);
  EXPECT_EQ(process_title(*workers.begin()), "ferry: worker process is shutting down");

  open.reset();
  const Finished f = ferry.wait();
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_FALSE(std::filesystem::exists(ferry.pid_file()));
}

TEST(ProcessTest, ShutdownTimeoutBoundsAGracefulStop) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(1, port, backend.port(), "worker_shutdown_timeout = \"300ms\";\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const event::UniqueFd open(connect_to_port(port));
  ASSERT_GE(open.get(), 0);
  ASSERT_TRUE(echo_round_trip(open.get(), "held open"));
  ferry.signal(SIGQUIT);
  const Finished f = ferry.wait(seconds(5));
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_NE(f.err.find("worker_shutdown_timeout reached"), std::string::npos) << f.err;
  char byte;
  EXPECT_EQ(::recv(open.get(), &byte, 1, 0), 0) << "the session is closed at the timeout";
}

TEST(ProcessTest, WorkersLeaveWhenTheMasterIsKilled) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(2, port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const auto workers = ferry.workers();
  ASSERT_EQ(workers.size(), 2U);
  ferry.signal(SIGKILL);
  ferry.wait();
  EXPECT_TRUE(eventually([&] {
    for (pid_t w : workers) {
      if (alive(w)) return false;
    }
    return true;
  })) << "workers outlived their master";
}

TEST(ProcessTest, TwentyReloadsLeakNoDescriptorInTheMaster) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(2, port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::size_t before = open_fds(ferry.master());
  for (int i = 0; i < 20; ++i) {
    const Finished r = ferry.command("reload");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_TRUE(eventually([&] { return ferry.workers().size() == 2; })) << ferry.log();
  // Exited workers are reaped (and their channels closed) a moment after they leave /proc's
  // list of live children.
  EXPECT_TRUE(eventually([&] { return open_fds(ferry.master()) == before; }))
      << open_fds(ferry.master()) << " open, " << before << " before the reloads";
}

std::string status_field(pid_t pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + ":", 0) == 0) {
      const auto start = line.find_first_not_of(" \t", name.size() + 1);
      return line.substr(start);
    }
  }
  return "";
}

TEST(ProcessTest, WorkersRunAsTheConfiguredUserAndOnTheirOwnCpu) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(
      config(2, port, backend.port(), "user = \"nobody\";\nworker_cpu_affinity = \"auto\";\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  std::set<std::string> cpus;
  for (pid_t w : ferry.workers()) {
    const std::string uid = status_field(w, "Uid");
    EXPECT_EQ(uid.substr(0, uid.find('\t')), std::to_string(nobody->pw_uid)) << uid;
    cpus.insert(status_field(w, "Cpus_allowed_list"));
  }
  if (::sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
    EXPECT_EQ(cpus, (std::set<std::string>{"0", "1"}));
  }
  EXPECT_EQ(status_field(ferry.master(), "Uid").substr(0, 1), "0") << "the master stays root";
  const event::UniqueFd fd(connect_to_port(port));
  ASSERT_GE(fd.get(), 0);
  EXPECT_TRUE(echo_round_trip(fd.get(), "served by nobody"));
}

// reload_sessions = "drain": each reload leaves a generation draining behind a held session;
// past max_draining_generations (3 here) the oldest is stopped at once.
TEST(ProcessTest, DrainingGenerationsAreCapped) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(1, port, backend.port(),
                             "worker_shutdown_timeout = \"1m\";\nreload_sessions = \"drain\";\n"
                             "max_draining_generations = 3;\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<int> held;
  for (int i = 0; i < 5; ++i) {
    const int fd = connect_to_port(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(echo_round_trip(fd, "held " + std::to_string(i)));
    held.push_back(fd);
    const Finished r = ferry.command("reload");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // Generations 1..5 hold one session each; 6 serves. 1 and 2 are past the cap.
  EXPECT_TRUE(eventually([&] { return ferry.workers().size() == 4; })) << ferry.log();
  char byte;
  EXPECT_EQ(::recv(held[0], &byte, 1, 0), 0) << "the oldest generation was stopped";
  EXPECT_EQ(::recv(held[1], &byte, 1, 0), 0);
  for (int i = 2; i < 5; ++i) {
    EXPECT_TRUE(echo_round_trip(held[i], "still draining")) << i;
  }
  for (int fd : held) ::close(fd);
}

TEST(ProcessTest, ReopenStartsANewLogFileAfterRotation) {
  EchoServer backend;
  const int port = free_port();
  TempDir logs;
  const std::string path = logs.path() + "/error.log";
  // Logging to a file, so the instance's own stderr-based start is not used: only its folder,
  // configuration path and pid file.
  FerryInstance ferry(config(1, port, backend.port()));
  const std::string body = "pid_file = \"" + ferry.pid_file() +
                           "\";\nlog = { level = \"info\"; path = \"" + path + "\"; };\n" +
                           config(1, port, backend.port());
  std::ofstream(ferry.conf()) << body;
  Process p({ferry_binary(), "-c", ferry.conf()});
  ASSERT_TRUE(eventually([&] {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find("worker(s) serving") != std::string::npos;
  })) << p.stderr_so_far();
  std::filesystem::rename(path, path + ".1");
  const Finished r = run_program({ferry_binary(), "-s", "reopen", "-c", ferry.conf()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(eventually([&] { return std::filesystem::exists(path); }))
      << "-s reopen must create a new log file";
  event::UniqueFd fd(connect_to_port(port));
  ASSERT_GE(fd.get(), 0);
  EXPECT_TRUE(echo_round_trip(fd.get(), "after reopen"));
  fd.reset();
  p.signal(SIGQUIT);
  EXPECT_EQ(p.wait().exit_code, 0);
  auto read = [](const std::string& file) {
    std::ifstream in(file);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string rotated = read(path + ".1");
  const std::string fresh = read(path);
  EXPECT_NE(rotated.find("reopening logs"), std::string::npos) << rotated;
  EXPECT_EQ(rotated.find("master exiting"), std::string::npos) << rotated;
  EXPECT_NE(fresh.find("master exiting"), std::string::npos) << "later lines go to the new file";
  EXPECT_NE(fresh.find("worker: worker 0 shutting down"), std::string::npos)
      << "the workers reopened too:\n"
      << fresh;
}

TEST(RunErrorsTest, AnInvalidConfigurationDoesNotStart) {
  TempDir dir;
  const std::string conf = dir.write("ferry.conf", "worker_connections = \"many\";\n");
  const Finished f = run_program({ferry_binary(), "-c", conf});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find(conf + ":1: worker_connections: expected an integer"), std::string::npos)
      << f.err;
}

TEST(RunErrorsTest, AnAddressInUseIsReportedAndExitsOne) {
  TempDir dir;
  const HeldPort taken;
  const std::string conf = dir.write(
      "ferry.conf", "pid_file = \"" + dir.path() + "/p.pid\";\n" + config(1, taken.port(), 9));
  const Finished f = run_program({ferry_binary(), "-c", conf});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find("cannot listen on 127.0.0.1:" + std::to_string(taken.port()) +
                       ": Address already in use"),
            std::string::npos)
      << f.err;
}

TEST(RunErrorsTest, FirstWorkersThatCannotWorkMakeTheMasterExitOne) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: only root switches to the configured user";
  // Without this change the master would wait 10 s for workers that never come, then sit
  // there with none.
  TempDir dir;
  const std::string conf =
      dir.write("ferry.conf", "pid_file = \"" + dir.path() + "/p.pid\";\n" +
                                  config(2, free_port(), 9, "user = \"nobody\";\n"));
  // Root without CAP_SETUID/CAP_SETGID: the workers cannot switch to the user, a fatal exit.
  // Well before the 10 s start-up timeout, the first one is enough to give up.
  const auto from = std::chrono::steady_clock::now();
  const Finished f =
      run_program({"setpriv", "--bounding-set=-setuid,-setgid", ferry_binary(), "-c", conf},
                  std::chrono::seconds(8));
  EXPECT_EQ(f.exit_code, 1) << f.err;
  EXPECT_LT(std::chrono::steady_clock::now() - from, std::chrono::seconds(8));
  EXPECT_NE(f.err.find("no worker ever served: exiting"), std::string::npos) << f.err;
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/p.pid"));
}

// The eventfds `pid` holds open.
std::vector<int> eventfds(pid_t pid) {
  std::vector<int> out;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    if (std::filesystem::read_symlink(e.path(), ec) == "anon_inode:[eventfd]") {
      out.push_back(std::stoi(e.path().filename().string()));
    }
  }
  return out;
}

// The master forks its workers with no other thread alive: a thread holding a lock (the
// allocator's, the resolver's) at the fork leaves the child that lock held for ever. A reload
// reads its file on a thread that is joined before the new generation is forked. (With the
// reload thread started with the master, a worker forked during that thread's start-up hung
// under AddressSanitizer, one start in thirty.)
TEST(ProcessTest, TheMasterForksWithNoOtherThread) {
  FerryInstance ferry(config(1, free_port(), 9));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_EQ(thread_count(ferry.master()), 1U);
  const std::set<pid_t> before = ferry.workers();
  const Finished r = ferry.command("reload");
  ASSERT_EQ(r.exit_code, 0) << r.err << ferry.log();
  EXPECT_EQ(thread_count(ferry.master()), 1U);
  EXPECT_TRUE(eventually([&] {
    const std::set<pid_t> now = ferry.workers();
    return !now.empty() &&
           std::none_of(now.begin(), now.end(), [&](pid_t p) { return before.count(p) != 0; });
  })) << ferry.log();
  EXPECT_TRUE(eventfds(ferry.master()).empty()) << "the reload thread's wake-up outlived it";
}

}  // namespace
}  // namespace ferry::test
