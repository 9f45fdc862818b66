// ferry under systemd's protocols, with real peers: a datagram NOTIFY_SOCKET listener in the
// test (READY, RELOADING/READY around reloads, STATUS, STOPPING, WATCHDOG, MAINPID after an
// upgrade), systemd-socket-activate passing a listening socket, and a journal-style stderr.
#include <netinet/in.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/notify_listener.h"
#include "tests/support/process.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string listen_list(const std::vector<int>& ports) {
  std::string out;
  for (int p : ports)
    out += (out.empty() ? "\"127.0.0.1:" : ", \"127.0.0.1:") + std::to_string(p) + "\"";
  return "[ " + out + " ]";
}

// `listen` is the proxy's listen array as written in the file.
std::string config_listening(const std::string& listen, int backend, int workers = 2,
                             const std::string& proxy_extra = "") {
  return "worker_processes = " + std::to_string(workers) +
         ";\n"
         "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:" +
         std::to_string(backend) +
         "\"; } ); } );\n"
         "proxies = ( { name = \"web\"; listen = " +
         listen + "; upstream = \"app\"; " + proxy_extra + "} );\n";
}

std::string config(const std::vector<int>& ports, int backend, int workers = 2,
                   const std::string& proxy_extra = "") {
  return config_listening(listen_list(ports), backend, workers, proxy_extra);
}

// A configuration with a misspelled setting on line 3 of the file (FerryInstance writes
// pid_file and log on lines 1 and 2).
std::string broken_config(int port, int backend) {
  return "worker_procesess = 3;\n" + config({port}, backend);
}

bool echoes(int port) {
  const event::UniqueFd fd(connect_to_port(port));
  const bool ok = fd.valid() && echo_round_trip(fd.get(), "ping through ferry");
  return ok;
}

long long monotonic_usec() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<long long>(now.tv_sec) * 1'000'000 + now.tv_nsec / 1'000;
}

// Index of the first message at or after `from` that has `assignment`, or -1.
int find(const std::vector<NotifyMessage>& h, const std::string& assignment, std::size_t from) {
  for (std::size_t i = from; i < h.size(); ++i) {
    if (h[i].has(assignment)) return static_cast<int>(i);
  }
  return -1;
}

class NotifyTest : public ::testing::Test {
 protected:
  void start(FerryInstance& ferry, std::vector<std::string> env = {}) {
    env.push_back(notify.env());
    ferry.set_options({.env = env});
    ASSERT_TRUE(ferry.start()) << ferry.log();
    ASSERT_TRUE(notify.wait_for("READY=1")) << ferry.log();
  }
  // SIGUSR2: the old master names the new one with MAINPID=, the new one sends READY=1 once
  // its workers serve. Returns the new master (killed at the end of the test if still there).
  pid_t upgrade(FerryInstance& ferry) {
    const pid_t old_master = ferry.master();
    ferry.signal(SIGUSR2);
    const auto handover =
        notify.wait_for([](const NotifyMessage& m) { return m.get("MAINPID").has_value(); });
    EXPECT_TRUE(handover) << ferry.log();
    if (!handover) return -1;
    EXPECT_EQ(handover->sender, old_master);
    const pid_t fresh = std::stoi(*handover->get("MAINPID"));
    new_master.pid = fresh;
    EXPECT_NE(fresh, old_master);
    const auto ready = notify.wait_for("READY=1");
    EXPECT_TRUE(ready);
    if (ready) {
      EXPECT_EQ(ready->sender, fresh);
    }
    return fresh;
  }
  // Roll back: the new master quits; it names the old one as the main process again rather
  // than telling systemd the service stops, and the old one serves with its pid file back.
  void roll_back(FerryInstance& ferry, pid_t old_master, pid_t fresh, int port) {
    const std::size_t mark = notify.history().size();
    ::kill(fresh, SIGQUIT);
    const auto back = notify.wait_for(
        [&](const NotifyMessage& m) { return m.has("MAINPID=" + std::to_string(old_master)); });
    ASSERT_TRUE(back) << ferry.log();
    EXPECT_EQ(back->sender, fresh);
    EXPECT_TRUE(eventually(
        [&] { return ::kill(fresh, 0) != 0 || children_of(old_master).count(fresh) == 0; }));
    // Once it has reaped the new master, the old one says so itself (before a next upgrade
    // could be told from it).
    EXPECT_TRUE(notify.wait_for([&](const NotifyMessage& m) {
      return m.sender == old_master && m.has("MAINPID=" + std::to_string(old_master));
    })) << ferry.log();
    notify.drain();
    for (std::size_t i = mark; i < notify.history().size(); ++i) {
      EXPECT_FALSE(notify.history()[i].has("STOPPING=1")) << notify.history()[i].text;
    }
    EXPECT_TRUE(eventually([&] { return pid_in(ferry.pid_file()) == old_master; }));
    EXPECT_TRUE(echoes(port));
  }
  TempDir dir;
  KillOnExit new_master;
  NotifyListener notify{dir.path() + "/notify"};
  EchoServer backend;
};

TEST_F(NotifyTest, ReadyOnlyOnceServingThenReloadsAndStopAreReported) {
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port()));
  start(ferry);
  const NotifyMessage ready = notify.history().back();
  ASSERT_TRUE(ready.has("READY=1"));
  EXPECT_EQ(ready.sender, ferry.master());
  // READY means serving: a client gets through at once.
  EXPECT_TRUE(echoes(port));
  const std::string first_status = ready.get("STATUS").value_or("");
  EXPECT_NE(first_status.find("2 worker(s) serving"), std::string::npos) << first_status;

  // A good reload: RELOADING=1 with the monotonic clock, then READY=1 — both sent before
  // `ferry -s reload` (systemd's ExecReload=) returns.
  const int second = free_port();
  ferry.rewrite(config({port, second}, backend.port()));
  std::size_t mark = notify.history().size();
  const long long before = monotonic_usec();
  const Finished ok = ferry.command("reload");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  notify.drain();
  const auto& h = notify.history();
  const int reloading = find(h, "RELOADING=1", mark);
  ASSERT_GE(reloading, 0);
  const long long stamp =
      std::stoll(h[static_cast<std::size_t>(reloading)].get("MONOTONIC_USEC").value_or("0"));
  EXPECT_GE(stamp, before);
  EXPECT_LE(stamp, monotonic_usec());
  const int done = find(h, "READY=1", static_cast<std::size_t>(reloading));
  ASSERT_GT(done, reloading);
  EXPECT_NE(h[static_cast<std::size_t>(done)].get("STATUS")->find("ok"), std::string::npos);
  EXPECT_TRUE(echoes(second));

  // A rejected reload ends "reloading" too, and STATUS says why, with file and line.
  ferry.rewrite(broken_config(port, backend.port()));
  mark = notify.history().size();
  const Finished bad = ferry.command("reload");
  EXPECT_EQ(bad.exit_code, 1);
  notify.drain();
  const int again = find(notify.history(), "RELOADING=1", mark);
  ASSERT_GE(again, 0);
  const int rejected = find(notify.history(), "READY=1", static_cast<std::size_t>(again));
  ASSERT_GT(rejected, again);
  const std::string status =
      notify.history()[static_cast<std::size_t>(rejected)].get("STATUS").value_or("");
  EXPECT_NE(status.find("FAILED"), std::string::npos) << status;
  EXPECT_NE(status.find(ferry.conf() + ":3"), std::string::npos) << status;
  EXPECT_NE(status.find("worker_procesess"), std::string::npos) << status;
  EXPECT_TRUE(echoes(port)) << "the old configuration keeps serving";

  ferry.signal(SIGQUIT);
  const auto stopping = notify.wait_for("STOPPING=1");
  ASSERT_TRUE(stopping);
  EXPECT_EQ(stopping->sender, ferry.master());
  EXPECT_EQ(ferry.wait().exit_code, 0);
}

TEST_F(NotifyTest, StatusLineCountsActiveConnections) {
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port(), 1));
  start(ferry);
  const event::UniqueFd client(connect_to_port(port));
  ASSERT_TRUE(echo_round_trip(client.get(), "held open"));
  // The periodic refresh (every 5 s) reports the open connection.
  const auto status = notify.wait_for(
      [](const NotifyMessage& m) {
        return m.get("STATUS").value_or("").find("1 active connection(s), 1 accepted") !=
               std::string::npos;
      },
      seconds(12));
  EXPECT_TRUE(status) << (notify.history().empty() ? "" : notify.history().back().text);
}

TEST_F(NotifyTest, UpgradeHandsTheServiceToTheNewMasterWithMainPid) {
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port()));
  start(ferry);
  const pid_t fresh = upgrade(ferry);
  ASSERT_GT(fresh, 0);
  EXPECT_TRUE(eventually([&] { return pid_in(ferry.pid_file()) == fresh; }));

  // The old master leaves without telling systemd the service stops.
  std::size_t mark = notify.history().size();
  ferry.signal(SIGQUIT);
  EXPECT_EQ(ferry.wait().exit_code, 0);
  notify.drain();
  EXPECT_EQ(find(notify.history(), "STOPPING=1", mark), -1);
  EXPECT_TRUE(echoes(port));

  // The new master's own stop is the service's.
  ::kill(fresh, SIGQUIT);
  const auto stopping = notify.wait_for("STOPPING=1");
  ASSERT_TRUE(stopping);
  EXPECT_EQ(stopping->sender, fresh);
}

TEST_F(NotifyTest, RolledBackUpgradeGivesTheServiceBackToTheOldMaster) {
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port()));
  start(ferry);
  const pid_t old_master = ferry.master();
  const pid_t fresh = upgrade(ferry);
  ASSERT_GT(fresh, 0);

  roll_back(ferry, old_master, fresh, port);

  // Again, as the signals table has it: WINCH stops the old master's workers, HUP brings them
  // back, then the new master is told to QUIT: the old master is the service again.
  const pid_t second = upgrade(ferry);
  ASSERT_GT(second, 0);
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] {
    auto kids = ferry.workers();
    kids.erase(second);
    return kids.empty();
  })) << ferry.log();
  ferry.signal(SIGHUP);
  ASSERT_TRUE(ferry.wait_for_log("restarting the workers")) << ferry.log();
  ASSERT_TRUE(eventually([&] { return ferry.workers().size() == 3; })) << ferry.log();
  roll_back(ferry, old_master, second, port);
}

// A new master that dies after WINCH left the old master with no worker while it told systemd
// READY=1: as nginx does, the old master starts its workers again, and says READY=1 only once
// they serve.
TEST_F(NotifyTest, OldMasterStartsItsWorkersAgainWhenTheNewOneDiesAfterWinch) {
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port()));
  start(ferry);
  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] { return ferry.own_workers().empty(); })) << ferry.log();
  const pid_t old_master = ferry.master();
  notify.drain();  // what follows is new
  ::kill(fresh, SIGKILL);
  // Its workers see their master gone and leave: only the old master's can serve.
  EXPECT_TRUE(eventually([&] { return ferry.workers().size() == 2 && served_through(port); }))
      << ferry.log();
  const auto ready = notify.wait_for(
      [&](const NotifyMessage& m) { return m.sender == old_master && m.has("READY=1"); });
  ASSERT_TRUE(ready) << ferry.log();
  EXPECT_NE(ready->get("STATUS").value_or("").find("2 worker(s) serving"), std::string::npos)
      << ready->text;
  EXPECT_TRUE(eventually([&] { return pid_in(ferry.pid_file()) == old_master; }));
}

// Issue 18 review: when the workers a WINCH stopped are started again because the new master died,
// and they do not serve in time, nothing serves: the master fails (as when its first workers do
// not start), so that systemd restarts the service, instead of saying READY=1 with no worker.
TEST_F(NotifyTest, WorkersThatDoNotStartAgainAfterTheNewMasterDiedFailTheService) {
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port()));
  start(ferry, {"FERRY_TEST_UNREADY_GENERATION=2", "FERRY_TEST_READY_TIMEOUT_MS=1000"});
  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] { return ferry.own_workers().empty(); })) << ferry.log();
  const pid_t old_master = ferry.master();
  notify.drain();
  const std::size_t mark = notify.history().size();
  ::kill(fresh, SIGKILL);
  EXPECT_EQ(ferry.wait(seconds(20)).exit_code, 1) << ferry.log();
  EXPECT_NE(ferry.log().find("the workers did not start; exiting"), std::string::npos)
      << ferry.log();
  notify.drain();
  for (std::size_t i = mark; i < notify.history().size(); ++i) {
    EXPECT_FALSE(notify.history()[i].sender == old_master && notify.history()[i].has("READY=1"))
        << notify.history()[i].text;
  }
}

// The normal upgrade's end, with a slow client: the old master was told to QUIT and still
// drains a connection when the new master is stopped. That is the service stopping: the new
// master says STOPPING=1 and does not name the old master (on its way out) as the main process.
TEST_F(NotifyTest, NewMasterStoppedWhileTheOldOneDrainsStopsTheService) {
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port()));
  start(ferry);
  const pid_t old_master = ferry.master();
  event::UniqueFd client(connect_to_port(port));  // served by an old worker, kept open
  ASSERT_TRUE(echo_round_trip(client.get(), "draining"));
  const pid_t fresh = upgrade(ferry);
  ASSERT_GT(fresh, 0);

  ferry.signal(SIGQUIT);
  ASSERT_TRUE(ferry.wait_for_log("graceful stop")) << ferry.log();
  ASSERT_EQ(::kill(old_master, 0), 0) << "the old master drains the open connection";

  const std::size_t mark = notify.history().size();
  ::kill(fresh, SIGQUIT);
  const auto stopping = notify.wait_for("STOPPING=1");
  ferry.drain_log();  // both masters' lines, for a failure's message
  ASSERT_TRUE(stopping) << ferry.log();
  EXPECT_EQ(stopping->sender, fresh);
  EXPECT_TRUE(eventually(
      [&] { return ::kill(fresh, 0) != 0 || children_of(old_master).count(fresh) == 0; }));
  notify.drain();
  for (std::size_t i = mark; i < notify.history().size(); ++i) {
    EXPECT_FALSE(notify.history()[i].has("MAINPID=" + std::to_string(old_master)))
        << notify.history()[i].text;
  }
  EXPECT_TRUE(echo_round_trip(client.get(), "still drained by the old worker"));
  client.reset();
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
}

TEST_F(NotifyTest, WatchdogPingsAtHalfTheIntervalOnlyWhenMeantForThisProcess) {
  const int port = free_port();
  {
    FerryInstance ferry(config({port}, backend.port()));
    start(ferry, {"WATCHDOG_USEC=400000"});
    // When each ping was sent (the kernel's receive time): every 200 ms (half the interval),
    // never a whole interval without one, and never two much closer than the period.
    std::vector<std::chrono::nanoseconds> at;
    while (at.size() < 7) {
      const auto ping = notify.wait_for("WATCHDOG=1", seconds(2));
      ASSERT_TRUE(ping) << "ping " << at.size() << " missing";
      ASSERT_NE(ping->arrived.count(), 0) << "no SO_TIMESTAMPNS";
      at.push_back(ping->arrived);
    }
    for (std::size_t i = 1; i < at.size(); ++i) {
      const auto gap = std::chrono::duration_cast<milliseconds>(at[i] - at[i - 1]);
      EXPECT_LT(gap, milliseconds(400)) << "gap " << i;
      EXPECT_GE(gap, milliseconds(150)) << "gap " << i;
    }
  }
  notify.drain();
  // WATCHDOG_PID names another process: not ours to ping.
  FerryInstance other(config({free_port()}, backend.port()));
  start(other, {"WATCHDOG_USEC=200000", "WATCHDOG_PID=1"});
  EXPECT_FALSE(notify.wait_for("WATCHDOG=1", milliseconds(800)));
}

TEST_F(NotifyTest, WatchdogStopsWhileAWorkerKeepsDying) {
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port(), 1));
  // Worker starts 1 to 5 exit at once (the test hook): each dies young, so the master waits
  // longer and longer (100, 200, 400, 800, 1600 ms) before the next, with no worker in between.
  // (Killing each new worker from the test raced its start: one that had reported serving
  // before the kill is replaced at once, and the back-off started over.)
  start(ferry, {"WATCHDOG_USEC=200000", "FERRY_TEST_WORKER_FAIL=1:1:5"});  // a ping every 100 ms
  ASSERT_TRUE(notify.wait_for("WATCHDOG=1"));
  const std::set<pid_t> first = ferry.workers();
  ASSERT_EQ(first.size(), 1U);
  ::kill(*first.begin(), SIGKILL);
  ASSERT_TRUE(ferry.wait_for_log("respawning in 1600 ms", seconds(10))) << ferry.log();
  ferry.drain_log();
  const std::size_t last_death = ferry.log().rfind("respawning in 1600 ms");
  // "not pinging" written after the last death: every ping sent while a worker was still
  // counted is already queued and drained below.
  ASSERT_TRUE(eventually([&] {
    ferry.drain_log();
    return ferry.log().find("not pinging", last_death) != std::string::npos;
  })) << ferry.log();
  notify.drain();
  // The last back-off is 1.6 s: no ping in (most of) the first 0.5 s of it...
  EXPECT_FALSE(notify.wait_for("WATCHDOG=1", milliseconds(500)));
  // ...and pings again once the worker is back.
  EXPECT_TRUE(eventually([&] { return ferry.workers().size() == 1; }, seconds(5)));
  EXPECT_TRUE(notify.wait_for("WATCHDOG=1", seconds(2)));
  EXPECT_TRUE(echoes(port));
}

// A pids cgroup of its own with a task limit (what systemd's TasksMax= sets), for a process moved
// into it: at the limit its fork() fails with EAGAIN. Empty when this runner has no writable
// pids controller (not root, or no cgroup file system); removed once the test is done.
class PidsLimit {
 public:
  PidsLimit() {
    namespace fs = std::filesystem;
    const std::string name = "ferry-test-" + std::to_string(::getpid());
    std::error_code ec;
    if (fs::exists("/sys/fs/cgroup/pids/cgroup.procs", ec)) {
      dir_ = "/sys/fs/cgroup/pids/" + name;  // cgroup v1
    } else if (write("/sys/fs/cgroup/cgroup.subtree_control", "+pids")) {
      dir_ = "/sys/fs/cgroup/" + name;  // cgroup v2
    } else {
      return;
    }
    if (!fs::create_directory(dir_, ec) || !fs::exists(dir_ + "/pids.max", ec)) dir_.clear();
  }
  ~PidsLimit() {
    if (dir_.empty()) return;
    // Empty once the processes moved in have exited (and been reaped).
    eventually([&] { return ::rmdir(dir_.c_str()) == 0 || errno != EBUSY; });
  }
  PidsLimit(const PidsLimit&) = delete;
  PidsLimit& operator=(const PidsLimit&) = delete;

  [[nodiscard]] bool usable() const { return !dir_.empty(); }
  bool move(pid_t pid) const { return write(dir_ + "/cgroup.procs", std::to_string(pid)); }
  bool limit(const std::string& max) const { return write(dir_ + "/pids.max", max); }
  // No fork() from the processes inside from now on.
  bool freeze_count() const {
    std::ifstream in(dir_ + "/pids.current");
    std::string current;
    return static_cast<bool>(in >> current) && limit(current);
  }

 private:
  static bool write(const std::string& file, const std::string& value) {
    std::ofstream out(file);
    out << value << std::flush;
    return static_cast<bool>(out);
  }
  std::string dir_;
};

// A reload whose workers cannot be started (fork() fails at the service's task limit) is given
// up after the ready timeout; the old generation, still serving, is the one that counts again:
// STATUS= counts its workers, the watchdog keeps being fed, and a worker of it that dies is
// replaced once a fork succeeds again.
TEST_F(NotifyTest, GivenUpReloadLeavesTheServingGenerationCountedAndWatched) {
  const PidsLimit tasks;  // outlives ferry: the cgroup can only go once ferry has left it
  if (!tasks.usable()) GTEST_SKIP() << "no writable pids cgroup controller here";
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port()));
  // The ready bound is short for the given-up reload below, but not so short that a start on a
  // loaded machine (the whole suite in parallel) misses it: twice it did at 1.5 s.
  start(ferry, {"WATCHDOG_USEC=400000", "FERRY_TEST_READY_TIMEOUT_MS=4000"});
  ASSERT_TRUE(tasks.move(ferry.master()));
  ASSERT_TRUE(tasks.freeze_count());  // the master alone: no worker can be forked

  // A worker killed now cannot be replaced yet; it is, with a growing delay, once forks work.
  const std::set<pid_t> before = ferry.workers();
  ASSERT_EQ(before.size(), 2u);
  ::kill(*before.begin(), SIGKILL);
  ASSERT_TRUE(ferry.wait_for_log("fork() for worker")) << ferry.log();
  ASSERT_TRUE(tasks.limit("max"));
  std::set<pid_t> now;
  EXPECT_TRUE(eventually([&] { return (now = ferry.workers()).size() == 2; }, seconds(15)))
      << ferry.log();
  ASSERT_TRUE(tasks.freeze_count());

  // A reload to three workers: none can be forked, so it is given up.
  ferry.rewrite(config({port}, backend.port(), 3));
  std::size_t mark = notify.history().size();
  const Finished reload = ferry.command("reload");
  EXPECT_EQ(reload.exit_code, 1);
  EXPECT_NE(reload.err.find("did not start in time"), std::string::npos) << reload.err;
  notify.drain();
  const int given_up = find(notify.history(), "READY=1", mark);
  ASSERT_GE(given_up, 0) << ferry.log();
  const std::string status =
      notify.history()[static_cast<std::size_t>(given_up)].get("STATUS").value_or("");
  EXPECT_NE(status.find("2 worker(s) serving"), std::string::npos) << status;
  EXPECT_NE(status.find("FAILED"), std::string::npos) << status;
  EXPECT_TRUE(echoes(port));

  // The two old workers are all the running configuration wants: the pings go on (one every
  // 200 ms).
  notify.drain();
  ferry.drain_log();
  // Only from here: while the killed worker waited for a fork above, "not pinging" was right.
  const std::size_t log_mark = ferry.log().size();
  int pings = 0;
  while (pings < 3 && notify.wait_for("WATCHDOG=1", seconds(2))) ++pings;
  EXPECT_EQ(pings, 3) << ferry.log();
  ferry.drain_log();
  EXPECT_EQ(ferry.log().find("not pinging", log_mark), std::string::npos) << ferry.log();
  EXPECT_EQ(ferry.workers(), now);
}

TEST_F(NotifyTest, NoNotifySocketMeansNoMessagesAndNoErrors) {
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_TRUE(echoes(port));
  EXPECT_FALSE(notify.wait_for("READY=1", milliseconds(300)));
  EXPECT_EQ(ferry.log().find("sd_notify"), std::string::npos) << ferry.log();
}

std::string socket_inode(pid_t pid, int fd) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd),
                                       ec)
      .string();
}

// Whether one of `pid`'s epoll instances watches the socket `link` ("socket:[INODE]"), through
// whichever descriptor of `pid` refers to it (/proc fd and fdinfo).
bool epoll_watches(pid_t pid, const std::string& link) {
  namespace fs = std::filesystem;
  const std::string dir = "/proc/" + std::to_string(pid);
  std::error_code ec;
  std::set<int> fds;
  std::vector<std::string> epolls;
  for (const auto& entry : fs::directory_iterator(dir + "/fd", ec)) {
    const std::string target = fs::read_symlink(entry.path(), ec).string();
    if (target == link) fds.insert(std::stoi(entry.path().filename().string()));
    if (target == "anon_inode:[eventpoll]") epolls.push_back(entry.path().filename().string());
  }
  for (const auto& e : epolls) {
    std::ifstream info(dir + "/fdinfo/" + e);
    std::string line;
    while (std::getline(info, line)) {
      std::istringstream fields(line);
      std::string key;
      int value = -1;
      if (fields >> key >> value && key == "tfd:" && fds.count(value)) return true;
    }
  }
  return false;
}

// systemd-socket-activate starts ferry when the first client connects: that client must be
// served. Launches ferry and waits until it serves, returning whether the first client got
// its echo.
// `listen` is systemd-socket-activate's -l: 127.0.0.1:PORT unless given (a bare PORT is what
// ListenStream=PORT makes: [::]:PORT, dual-stack).
bool activate(FerryInstance& ferry, int port, const std::string& listen = "") {
  ferry.set_launcher({"systemd-socket-activate", "-l",
                      listen.empty() ? "127.0.0.1:" + std::to_string(port) : listen});
  std::atomic<bool> first_served{false};
  std::thread first([&] {
    int fd = -1;
    eventually([&] { return (fd = connect_to_port(port)) >= 0; });
    first_served = fd >= 0 && echo_round_trip(fd, "wake up");
    if (fd >= 0) ::close(fd);
  });
  const bool started = ferry.start();
  first.join();
  EXPECT_TRUE(started) << ferry.log();
  return started && first_served;
}

TEST(SocketActivationTest, PassedSocketServesItsAddressAndSurvivesEveryReload) {
  EchoServer backend;
  const int activated = free_port();
  const int own = free_port();
  FerryInstance ferry(config({activated, own}, backend.port()));
  ASSERT_TRUE(activate(ferry, activated)) << ferry.log();
  EXPECT_NE(ferry.log().find("systemd passed listening socket 127.0.0.1:" +
                             std::to_string(activated) + " (fd 3)"),
            std::string::npos)
      << ferry.log();
  const std::string inode = socket_inode(ferry.master(), 3);
  ASSERT_EQ(inode.rfind("socket:", 0), 0u) << inode;
  EXPECT_TRUE(echoes(activated));
  EXPECT_TRUE(echoes(own)) << "an address with no passed socket is opened as usual";

  // A reload that keeps the address serves it on the same socket.
  const int third = free_port();
  ferry.rewrite(config({activated, own, third}, backend.port()));
  ASSERT_EQ(ferry.command("reload").exit_code, 0) << ferry.log();
  EXPECT_EQ(socket_inode(ferry.master(), 3), inode);
  EXPECT_TRUE(echoes(activated));
  EXPECT_TRUE(echoes(third));

  // A reload that drops the address does not close systemd's socket...
  ferry.rewrite(config({own}, backend.port()));
  ASSERT_EQ(ferry.command("reload").exit_code, 0) << ferry.log();
  EXPECT_TRUE(ferry.wait_for_log("kept open, unused"));
  EXPECT_EQ(socket_inode(ferry.master(), 3), inode);
  // ...so naming it again serves it again, still on systemd's socket.
  ferry.rewrite(config({activated, own}, backend.port()));
  ASSERT_EQ(ferry.command("reload").exit_code, 0) << ferry.log();
  EXPECT_EQ(socket_inode(ferry.master(), 3), inode);
  EXPECT_TRUE(echoes(activated));
}

TEST(SocketActivationTest, ReuseportProxyServesThePassedSocketFromEveryWorker) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port(), 2, "reuseport = true; "));
  ASSERT_TRUE(activate(ferry, port)) << ferry.log();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(echoes(port)) << ferry.log();
  // No clone could be bound beside systemd's socket; only the passed one is open, and every
  // worker waits on it (not only the clone-0 worker).
  EXPECT_EQ(ferry.log().find("reuseport clone"), std::string::npos) << ferry.log();
  const auto workers = ferry.workers();
  ASSERT_EQ(workers.size(), 2u);
  const std::string passed = socket_inode(ferry.master(), 3);
  for (pid_t w : workers) EXPECT_TRUE(epoll_watches(w, passed)) << "worker " << w;
}

bool echoes_over_ipv6(int port) {
  const event::UniqueFd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(static_cast<std::uint16_t>(port));
  sin6.sin6_addr = in6addr_loopback;
  const bool ok = fd.valid() &&
                  ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6) == 0 &&
                  echo_round_trip(fd.get(), "ping over ::1");
  return ok;
}

// `ListenStream=PORT` passes one socket, [::]:PORT with IPV6_V6ONLY off, that takes IPv4
// clients too: it serves "*:PORT" (which ferry could not bind beside it), and "[::]:PORT" named
// as well in the same proxy is the same socket, across reloads.
TEST(SocketActivationTest, DualStackSocketServesTheWildcardAddresses) {
  EchoServer backend;
  const int port = free_port();
  const std::string p = std::to_string(port);
  FerryInstance ferry(config_listening("[ \"*:" + p + "\" ]", backend.port()));
  ASSERT_TRUE(activate(ferry, port, p)) << ferry.log();
  EXPECT_NE(ferry.log().find("systemd passed listening socket [::]:" + p + " (fd 3), dual-stack"),
            std::string::npos)
      << ferry.log();
  const std::string inode = socket_inode(ferry.master(), 3);
  ASSERT_EQ(inode.rfind("socket:", 0), 0u) << inode;
  EXPECT_TRUE(echoes(port));
  EXPECT_TRUE(echoes_over_ipv6(port));

  for (const std::string& listen : {"[ \"*:" + p + "\", \"[::]:" + p + "\" ]",
                                    "[ \"[::]:" + p + "\", \"0.0.0.0:" + p + "\" ]"}) {
    ferry.rewrite(config_listening(listen, backend.port()));
    const Finished reload = ferry.command("reload");
    ASSERT_EQ(reload.exit_code, 0) << listen << "\n" << reload.err << ferry.log();
    EXPECT_EQ(socket_inode(ferry.master(), 3), inode);
    EXPECT_TRUE(echoes(port)) << listen;
    EXPECT_TRUE(echoes_over_ipv6(port)) << listen;
  }
  EXPECT_EQ(ferry.log().find("kept open, unused"), std::string::npos) << ferry.log();

  // One socket cannot serve two proxies: the reload is rejected, naming both.
  std::string two = config_listening("[ \"*:" + p + "\" ]", backend.port());
  two.insert(two.rfind(" );"),
             ", { name = \"v6\"; listen = \"[::]:" + p + "\"; upstream = \"app\"; }");
  ferry.rewrite(two);
  const Finished shared = ferry.command("reload");
  EXPECT_EQ(shared.exit_code, 1);
  EXPECT_NE(shared.err.find("serves proxy \"web\""), std::string::npos)
      << shared.err << ferry.log();
  EXPECT_TRUE(echoes_over_ipv6(port));
}

TEST(JournalTest, LinesCarryTheirPriorityWhenStderrIsTheJournal) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config({port}, backend.port()));
  ferry.set_options({.env = {}, .journal_stderr = true});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_EQ(ferry.log().rfind("<6>[info] ", 0), 0u) << ferry.log();
  ferry.rewrite(broken_config(port, backend.port()));
  EXPECT_EQ(ferry.command("reload").exit_code, 1);
  ASSERT_TRUE(ferry.wait_for_log("reload rejected"));
  EXPECT_NE(ferry.log().find("\n<3>[error] "), std::string::npos) << ferry.log();
  EXPECT_NE(ferry.log().find("<3>[error] " + std::to_string(ferry.master()) +
                             " master: " + ferry.conf() + ":3"),
            std::string::npos)
      << ferry.log();

  // `ferry -t` (ExecStartPre=) and `ferry -s reload` (ExecReload=): their errors too.
  Process test({ferry_binary(), "-t", "-c", ferry.conf()}, {.env = {}, .journal_stderr = true});
  const Finished t = test.wait();
  EXPECT_EQ(t.exit_code, 1);
  EXPECT_EQ(t.err.rfind("<3>" + ferry.conf() + ":3", 0), 0u) << t.err;
  Process reload({ferry_binary(), "-s", "reload", "-c", ferry.conf()},
                 {.env = {}, .journal_stderr = true});
  const Finished r = reload.wait(seconds(40));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("<3>ferry: reload rejected"), std::string::npos) << r.err;
}

TEST(JournalTest, AnotherStreamInJournalStreamMeansPlainLines) {
  EchoServer backend;
  FerryInstance ferry(config({free_port()}, backend.port()));
  // systemd's stream was replaced by a redirection: JOURNAL_STREAM no longer names stderr.
  ferry.set_options({.env = {"JOURNAL_STREAM=1:1"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_EQ(ferry.log().find("<6>"), std::string::npos) << ferry.log();
  EXPECT_EQ(ferry.log().rfind("20", 0), 0u) << "a line starts with its date: " << ferry.log();
}

}  // namespace
}  // namespace ferry::test
