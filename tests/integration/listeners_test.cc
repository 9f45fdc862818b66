// End-to-end tests of listening socket lifetimes: a worker holds exactly the sockets it serves,
// an address removed by a reload refuses at once, QUIT stops accepting everywhere at once, a
// pending reload does not outlive a stop, the pid file follows pid_file, inherited fds are closed.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/notify_listener.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

enum class AcceptMode { mutex, shared, reuseport };

std::string events(AcceptMode mode) {
  return std::string("events = { accept_mutex = ") +
         (mode == AcceptMode::mutex ? "true" : "false") + "; accept_mutex_delay = \"50ms\"; };\n";
}

// Two workers; a proxy on each port of `ports`.
std::string config(AcceptMode mode, int backend, const std::vector<int>& ports,
                   const std::string& extra = "") {
  std::vector<ProxySpec> proxies;
  for (const int port : ports) {
    proxies.push_back({"p" + std::to_string(port),
                       {loopback(port)},
                       "app",
                       std::string("access_log = \"off\"; reuseport = ") +
                           (mode == AcceptMode::reuseport ? "true" : "false") + ";"});
  }
  return config_text(extra + events(mode) +
                         "worker_processes = 2;\nworker_connections = 256;\n"
                         "worker_shutdown_timeout = \"30s\";",
                     proxies, {upstream_of({server_at(backend)})});
}

// systemd was told STOPPING=1, and READY=1 never after it.
void expect_no_ready_after_stopping(NotifyListener& notify) {
  notify.drain();
  bool stopping = false;
  for (const NotifyMessage& m : notify.history()) {
    if (m.has("STOPPING=1")) stopping = true;
    EXPECT_FALSE(stopping && m.has("READY=1")) << "READY=1 after STOPPING=1: " << m.text;
  }
  EXPECT_TRUE(stopping);
}

// The errno of a connect to 127.0.0.1:port (0: it connected).
int connect_errno(int port) {
  const event::UniqueFd fd(connect_to_port(port));
  if (fd.valid()) return 0;
  return errno;
}

// Listening TCP sockets by inode -> local port, from /proc/net/tcp and tcp6.
std::map<std::string, int> listening_inodes() {
  std::map<std::string, int> out;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::istringstream in(read_file(path));
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, state, queues, tr, retr, uid, timeout, inode;
      f >> sl >> local >> remote >> state >> queues >> tr >> retr >> uid >> timeout >> inode;
      if (state != "0A") continue;  // TCP_LISTEN
      out[inode] = std::stoi(local.substr(local.find(':') + 1), nullptr, 16);
    }
  }
  return out;
}

// The listening sockets `pid` holds: inode -> port.
std::map<std::string, int> listeners_of(pid_t pid) {
  const auto all = listening_inodes();
  std::map<std::string, int> out;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code rec;
    const std::string target = std::filesystem::read_symlink(e.path(), rec).string();
    if (rec || !target.starts_with("socket:[")) continue;
    const std::string inode = target.substr(8, target.size() - 9);
    if (auto it = all.find(inode); it != all.end()) out[inode] = it->second;
  }
  return out;
}

std::multiset<int> ports_of(const std::map<std::string, int>& listeners) {
  std::multiset<int> out;
  for (const auto& [inode, port] : listeners) out.insert(port);
  return out;
}

class ListenersTest : public ::testing::TestWithParam<AcceptMode> {};

// A removed address is closed in the master and in every worker once the reload's verdict is
// given: connecting to it is refused, not queued for no one.
TEST_P(ListenersTest, ARemovedAddressRefusesRightAfterTheReload) {
  EchoServer backend;
  const int kept = free_port();
  const int removed = free_port();
  FerryInstance ferry(config(GetParam(), backend.port(), {kept, removed}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  // A session on the old generation keeps it (and what it inherited) around.
  event::UniqueFd open(connect_to_port(kept));
  ASSERT_GE(open.get(), 0);
  ASSERT_TRUE(echo_round_trip(open.get(), "before"));
  const event::UniqueFd on_removed(connect_to_port(removed));
  ASSERT_GE(on_removed.get(), 0);
  ASSERT_TRUE(echo_round_trip(on_removed.get(), "on the address to remove"));

  ferry.rewrite(config(GetParam(), backend.port(), {kept}));
  const Finished r = ferry.command("reload");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(eventually([&] { return connect_errno(removed) == ECONNREFUSED; }, seconds(1)))
      << "errno " << connect_errno(removed) << "\n"
      << ferry.log();
  event::UniqueFd fresh(connect_to_port(kept));
  ASSERT_GE(fresh.get(), 0);
  EXPECT_TRUE(echo_round_trip(fresh.get(), "the kept address serves"));
  EXPECT_TRUE(echo_round_trip(open.get(), "the old session goes on"));
  EXPECT_TRUE(echo_round_trip(on_removed.get(), "so does the one on the removed address"));
  fresh.reset();
  open.reset();
}

// Removed, then named again by the next reload: bound again and served, whatever the mode.
TEST_P(ListenersTest, AnAddressRemovedThenAddedBackIsServed) {
  EchoServer backend;
  const int kept = free_port();
  const int again = free_port();
  FerryInstance ferry(config(GetParam(), backend.port(), {kept, again}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ferry.rewrite(config(GetParam(), backend.port(), {kept}));
  Finished r = ferry.command("reload");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Keeps a worker of the generation without `again` alive past the next reload: it must not
  // hold a socket of `again` that would take a share of its connections.
  const event::UniqueFd open(connect_to_port(kept));
  ASSERT_GE(open.get(), 0);
  ASSERT_TRUE(echo_round_trip(open.get(), "held"));
  ferry.rewrite(config(GetParam(), backend.port(), {kept, again}));
  r = ferry.command("reload");
  ASSERT_EQ(r.exit_code, 0) << r.err << ferry.log();
  EXPECT_EQ(ferry.log().find("Address already in use"), std::string::npos) << ferry.log();
  // Every connection served: none lands in a socket left over from before.
  for (int i = 0; i < 20; ++i) {
    const event::UniqueFd fd(connect_to_port(again));
    ASSERT_GE(fd.get(), 0) << i;
    ASSERT_TRUE(echo_round_trip(fd.get(), "served " + std::to_string(i))) << i;
  }
}

// QUIT: no process accepts any more, at once, while the open session finishes.
TEST_P(ListenersTest, QuitRefusesNewConnectionsAtOnceWhileASessionFinishes) {
  EchoServer backend;
  const int port = free_port();
  const int other = free_port();
  FerryInstance ferry(config(GetParam(), backend.port(), {port, other}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  event::UniqueFd open(connect_to_port(port));
  ASSERT_GE(open.get(), 0);
  ASSERT_TRUE(echo_round_trip(open.get(), "before quit"));

  ferry.signal(SIGQUIT);
  ASSERT_TRUE(ferry.wait_for_log("graceful stop")) << ferry.log();
  EXPECT_TRUE(eventually(
      [&] { return connect_errno(port) == ECONNREFUSED && connect_errno(other) == ECONNREFUSED; },
      seconds(1)))
      << ferry.log();
  EXPECT_TRUE(echo_round_trip(open.get(), "the open session keeps working"));
  open.reset();
  const Finished f = ferry.wait();
  EXPECT_EQ(f.exit_code, 0) << f.err;
}

// Each worker holds the sockets it serves and nothing else: with reuseport its own clone only.
TEST_P(ListenersTest, AWorkerHoldsOnlyTheListenersItServes) {
  EchoServer backend;
  const int kept = free_port();
  const int removed = free_port();
  const int status = free_port();
  FerryInstance ferry(
      config(GetParam(), backend.port(), {kept, removed},
             "status = { listen = \"127.0.0.1:" + std::to_string(status) + "\"; };\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ferry.rewrite(config(GetParam(), backend.port(), {kept},
                       "status = { listen = \"127.0.0.1:" + std::to_string(status) + "\"; };\n"));
  const auto old_workers = ferry.workers();
  const Finished r = ferry.command("reload");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<pid_t> workers;
  ASSERT_TRUE(eventually([&] {
    workers = ferry.workers();
    for (pid_t w : workers) {
      if (old_workers.contains(w)) return false;
    }
    return workers.size() == 2;
  })) << ferry.log();

  std::set<std::string> clones;
  for (pid_t w : workers) {
    const auto held = listeners_of(w);
    EXPECT_EQ(ports_of(held), (std::multiset<int>{kept, status})) << "worker " << w;
    for (const auto& [inode, port] : held) {
      if (port == kept) clones.insert(inode);
    }
  }
  // With reuseport, each worker its own socket; otherwise one socket shared by both.
  EXPECT_EQ(clones.size(), GetParam() == AcceptMode::reuseport ? 2U : 1U);
  const auto master = ports_of(listeners_of(ferry.master()));
  EXPECT_EQ(master.count(removed), 0U);
  EXPECT_EQ(master.count(kept), GetParam() == AcceptMode::reuseport ? 2U : 1U);
}

INSTANTIATE_TEST_SUITE_P(AcceptModes, ListenersTest,
                         ::testing::Values(AcceptMode::mutex, AcceptMode::shared,
                                           AcceptMode::reuseport),
                         [](const auto& info) {
                           switch (info.param) {
                             case AcceptMode::mutex: return "AcceptMutex";
                             case AcceptMode::shared: return "SharedSocket";
                             case AcceptMode::reuseport: return "Reuseport";
                           }
                           return "";
                         });

// A stop while a reload waits for workers that never report ready: the reload's timeout must
// not bring anything back (re-bind, spawn, READY=1), and the master exits once the session ends.
TEST(StopTest, AStopCancelsAPendingReload) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(AcceptMode::shared, backend.port(), {port}));
  NotifyListener notify(ferry.dir().path() + "/notify");
  // Test-only hook: generation 2 (the reload's) never reports ready.
  ferry.set_options({.env = {notify.env(), "FERRY_TEST_UNREADY_GENERATION=2",
                             "FERRY_TEST_READY_TIMEOUT_MS=1000"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_TRUE(notify.wait_for("READY=1"));
  event::UniqueFd open(connect_to_port(port));
  ASSERT_GE(open.get(), 0);
  ASSERT_TRUE(echo_round_trip(open.get(), "before"));

  ferry.signal(SIGHUP);
  ASSERT_TRUE(ferry.wait_for_log("(generation 2), pid")) << ferry.log();
  ferry.signal(SIGQUIT);
  ASSERT_TRUE(ferry.wait_for_log("graceful stop")) << ferry.log();
  EXPECT_TRUE(eventually([&] { return connect_errno(port) == ECONNREFUSED; }, seconds(1)));
  // Past the reload's timeout (1 s) with margin: the port must stay closed all along.
  EXPECT_FALSE(eventually([&] { return connect_errno(port) != ECONNREFUSED; }, seconds(3)))
      << ferry.log();
  EXPECT_EQ(ferry.log().find("did not report ready"), std::string::npos) << ferry.log();
  EXPECT_TRUE(echo_round_trip(open.get(), "the session finishes"));
  open.reset();
  const Finished f = ferry.wait(seconds(10));
  EXPECT_EQ(f.exit_code, 0) << ferry.log();

  expect_no_ready_after_stopping(notify);
}

// WINCH (to the old master of a binary upgrade) while a reload waits for workers that never
// report ready: every worker leaves and the reload's timeout does not start the old generation
// again behind the operator's back.
TEST(StopTest, WinchCancelsAPendingReload) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(AcceptMode::shared, backend.port(), {port}));
  ferry.set_options(
      {.env = {"FERRY_TEST_UNREADY_GENERATION=2", "FERRY_TEST_READY_TIMEOUT_MS=1000"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_GT(ferry.upgrade(2), 0) << ferry.log();
  ferry.signal(SIGHUP);
  ASSERT_TRUE(ferry.wait_for_log("(generation 2), pid")) << ferry.log();
  const std::set<pid_t> before = ferry.own_workers();
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(ferry.wait_for_log("SIGWINCH: stopping the workers")) << ferry.log();
  // Every worker there was gone, each by its pid, and none left.
  EXPECT_TRUE(eventually([&] {
    for (const pid_t w : before) {
      if (alive(w)) return false;  // reaped by the master once gone
    }
    return ferry.own_workers().empty();
  })) << ferry.log();
  // Past the reload's timeout (1 s) with margin: no worker comes back.
  EXPECT_FALSE(eventually([&] { return !ferry.own_workers().empty(); }, seconds(3))) << ferry.log();
  // HUP brings the configuration that served back, as a new generation (3: the cancelled one's
  // number is not given again), which serves and outlives the reload timeout.
  ferry.signal(SIGHUP);
  ASSERT_TRUE(ferry.wait_for_log("reload complete: generation 3 serving")) << ferry.log();
  event::UniqueFd c(connect_to_port(port));
  ASSERT_GE(c.get(), 0);
  EXPECT_TRUE(echo_round_trip(c.get(), "serving again"));
  c.reset();
  EXPECT_FALSE(eventually([&] { return ferry.own_workers().size() != 2; }, seconds(2)))
      << ferry.log();
  EXPECT_EQ(ferry.log().find("did not report ready"), std::string::npos) << ferry.log();
}

// Stopping is final even after WINCH: a HUP (which after WINCH brings the workers back) or a USR2
// that comes while the last workers drain starts nothing and never says READY=1 again. (The end
// of a binary upgrade: WINCH, then QUIT, to the old master.)
TEST(StopTest, HupAndUsr2AfterWinchAndQuitStartNothing) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(AcceptMode::shared, backend.port(), {port}));
  NotifyListener notify(ferry.dir().path() + "/notify");
  ferry.set_options({.env = {notify.env()}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_TRUE(notify.wait_for("READY=1"));
  event::UniqueFd open(connect_to_port(port));  // keeps a worker draining until it closes
  ASSERT_GE(open.get(), 0);
  ASSERT_TRUE(echo_round_trip(open.get(), "before"));
  const pid_t old_master = ferry.master();
  ASSERT_GT(ferry.upgrade(2), 0) << ferry.log();
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(ferry.wait_for_log("SIGWINCH: stopping the workers")) << ferry.log();
  ferry.signal(SIGQUIT);
  ASSERT_TRUE(ferry.wait_for_log("graceful stop")) << ferry.log();
  notify.drain();
  const std::size_t mark = notify.history().size();
  ferry.signal(SIGHUP);
  ferry.signal(SIGUSR2);
  // HUP is handled before USR2 (queued together, signals are read lowest number first).
  EXPECT_TRUE(ferry.wait_for_log("SIGUSR2 ignored")) << ferry.log();
  EXPECT_EQ(ferry.log().find("(generation 2)"), std::string::npos) << ferry.log();
  const auto started = ferry.log().find("started new master");
  EXPECT_EQ(ferry.log().find("started new master", started + 1), std::string::npos) << ferry.log();
  EXPECT_TRUE(echo_round_trip(open.get(), "the session finishes"));
  open.reset();
  const Finished f = ferry.wait(seconds(10));
  EXPECT_EQ(f.exit_code, 0) << ferry.log();

  notify.drain();
  for (std::size_t i = mark; i < notify.history().size(); ++i) {
    const NotifyMessage& m = notify.history()[i];
    EXPECT_FALSE(m.sender == old_master && m.has("READY=1")) << m.text;
  }
}

// WINCH before the first workers serve (an upgrade started meanwhile) cancels no reload: nothing
// failed, as the master's statistics say once the new master is gone.
TEST(StopTest, WinchBeforeTheFirstWorkersServeIsNoFailedReload) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(AcceptMode::shared, backend.port(), {port}));
  NotifyListener notify(ferry.dir().path() + "/notify");
  ferry.set_options({.env = {notify.env(), "FERRY_TEST_UNREADY_GENERATION=1"}});
  (void)ferry.start(milliseconds(0));  // its workers never report serving
  ASSERT_TRUE(ferry.wait_for_log("(generation 1), pid")) << ferry.log();
  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(ferry.wait_for_log("SIGWINCH: stopping the workers")) << ferry.log();
  ::kill(fresh, SIGQUIT);
  // Its control socket is back once it has reaped the new master.
  Finished status;
  ASSERT_TRUE(eventually([&] {
    status = ferry.command("status");
    return status.exit_code == 0 &&
           status.out.find("master pid " + std::to_string(ferry.master())) != std::string::npos;
  })) << status.err
      << ferry.log();
  EXPECT_NE(status.out.find("ok, 0 failed"), std::string::npos) << status.out;
  // READY=1 from the old master once, when the workers it started again serve: none for the
  // first generation WINCH cancelled before it served.
  const pid_t old_master = ferry.master();
  const auto readies = [&] {
    notify.drain();
    return std::count_if(
        notify.history().begin(), notify.history().end(),
        [&](const NotifyMessage& m) { return m.sender == old_master && m.has("READY=1"); });
  };
  EXPECT_TRUE(eventually([&] { return readies() >= 1; })) << ferry.log();
  EXPECT_EQ(readies(), 1) << ferry.log();
  ferry.signal(SIGQUIT);
  EXPECT_EQ(ferry.wait(seconds(10)).exit_code, 0) << ferry.log();
}

// A reload that names another pid_file moves the pid file and the control socket there: `ferry
// -s` with the new configuration finds the master, nothing is left at the old place.
TEST(PidFileTest, AReloadMovesThePidFileAndTheControlSocket) {
  EchoServer backend;
  const int port = free_port();
  const std::string body = config(AcceptMode::shared, backend.port(), {port});
  FerryInstance ferry(body);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string old_pid = ferry.pid_file();
  const std::string old_ctl = ferry.dir().path() + "/ferry.ctl";
  ASSERT_TRUE(std::filesystem::exists(old_ctl));
  const std::string moved = ferry.dir().path() + "/run/moved.pid";
  ferry.dir().write("ferry.conf",
                    "pid_file = \"" + moved + "\";\nlog = { level = \"info\"; };\n" + body);
  ferry.signal(SIGHUP);
  ASSERT_TRUE(ferry.wait_for_log("reload complete")) << ferry.log();
  EXPECT_EQ(read_file(moved), std::to_string(ferry.master()) + "\n");
  EXPECT_FALSE(std::filesystem::exists(old_pid));
  EXPECT_FALSE(std::filesystem::exists(old_ctl));
  const Finished r = ferry.command("reload");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const Finished s = ferry.command("stop");
  EXPECT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
  EXPECT_FALSE(std::filesystem::exists(moved));
  EXPECT_FALSE(std::filesystem::exists(ferry.dir().path() + "/run/moved.ctl"));
}

// A reload whose pid_file names the same place in other words keeps the pid file and the control
// socket there (writing the new and removing the old would leave none); "ferry" after
// "ferry.pid" is another pid file beside the same control socket ("ferry.ctl").
class PidFileAliasTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PidFileAliasTest, AReloadToTheSamePlaceKeepsTheMasterReachable) {
  EchoServer backend;
  const int port = free_port();
  const std::string body = config(AcceptMode::shared, backend.port(), {port});
  FerryInstance ferry(body);
  const std::string dir = ferry.dir().path();
  ASSERT_EQ(::symlink(dir.c_str(), (dir + "/link").c_str()), 0) << std::strerror(errno);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string ctl = dir + "/ferry.ctl";
  const std::string alias = dir + GetParam();
  ferry.dir().write("ferry.conf",
                    "pid_file = \"" + alias + "\";\nlog = { level = \"info\"; };\n" + body);
  ferry.signal(SIGHUP);
  ASSERT_TRUE(ferry.wait_for_log("reload complete")) << ferry.log();
  EXPECT_EQ(read_file(alias), std::to_string(ferry.master()) + "\n") << ferry.log();
  EXPECT_TRUE(std::filesystem::exists(ctl)) << ferry.log();
  const Finished r = ferry.command("reload");
  EXPECT_EQ(r.exit_code, 0) << r.err << ferry.log();
  const Finished s = ferry.command("stop");
  EXPECT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
  EXPECT_FALSE(std::filesystem::exists(alias));
  EXPECT_FALSE(std::filesystem::exists(ctl));
}

INSTANTIATE_TEST_SUITE_P(Aliases, PidFileAliasTest,
                         ::testing::Values("//ferry.pid", "/./ferry.pid", "/link/ferry.pid",
                                           "/ferry"));

// An fd left open without CLOEXEC by whoever starts ferry reaches neither the master (after
// start) nor any worker.
TEST(InheritedFdTest, AnFdInheritedFromTheStarterIsClosed) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(AcceptMode::shared, backend.port(), {port}));
  const std::string path = ferry.dir().write("inherited", "x");
  event::UniqueFd fd(::open(path.c_str(), O_RDONLY));  // no O_CLOEXEC: ferry inherits it
  ASSERT_GE(fd.get(), 0);
  const bool started = ferry.start();
  fd.reset();
  ASSERT_TRUE(started) << ferry.log();
  struct stat file {};
  ASSERT_EQ(::stat(path.c_str(), &file), 0) << std::strerror(errno);
  // By inode, not by the link's text (which spells the path as the kernel resolved it).
  auto holds = [&](pid_t pid) {
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
      struct stat st {};
      if (::stat(e.path().c_str(), &st) == 0 && st.st_dev == file.st_dev &&
          st.st_ino == file.st_ino) {
        return true;
      }
    }
    return false;
  };
  EXPECT_FALSE(holds(ferry.master()));
  const auto workers = ferry.workers();
  ASSERT_EQ(workers.size(), 2U);
  for (pid_t w : workers) EXPECT_FALSE(holds(w)) << "worker " << w;
}

// With reuseport and net.ipv4.tcp_migrate_req off, the master says once what turning it on buys.
TEST(MigrateReqTest, TheMasterAdvisesTcpMigrateReqWithReuseport) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(AcceptMode::reuseport, backend.port(), {port}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const Finished r = ferry.command("reload");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::error_code ec;
  const bool off = std::filesystem::exists("/proc/sys/net/ipv4/tcp_migrate_req", ec) &&
                   read_file("/proc/sys/net/ipv4/tcp_migrate_req").starts_with("0");
  EXPECT_EQ(count_of(ferry.log(), "net.ipv4.tcp_migrate_req is 0"), off ? 1U : 0U) << ferry.log();
}

}  // namespace
}  // namespace ferry::test
