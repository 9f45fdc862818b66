// Security checks (issue 10) through the real binary, read from /proc: workers run as the
// configured user with no capability and no way to gain one; a worker holds no fd of the master
// beyond the listeners and stdio; every fd is close-on-exec and a worker's sockets non-blocking
// (at start, after a reload, a respawn and a binary upgrade); the user's workers reopen logs the
// root master made, and a link planted in place of a log is not handed to the user; the status
// endpoint is on loopback unless told otherwise.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
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

// "Key:\tvalue" lines of /proc/PID/status, the value trimmed.
std::map<std::string, std::string> proc_status(pid_t pid) {
  std::map<std::string, std::string> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const auto start = line.find_first_not_of(" \t", colon + 1);
    const auto end = line.find_last_not_of(" \t");
    out[line.substr(0, colon)] =
        start == std::string::npos ? "" : line.substr(start, end - start + 1);
  }
  return out;
}

std::vector<unsigned long> numbers(const std::string& text) {
  std::vector<unsigned long> out;
  std::istringstream in(text);
  unsigned long n = 0;
  while (in >> n) out.push_back(n);
  return out;
}

struct OpenFd {
  int fd = -1;
  std::string target;  // readlink of /proc/PID/fd/N
  dev_t dev = 0;
  ino_t ino = 0;
  unsigned long flags = 0;  // fdinfo's "flags:" (octal)
};

// Every fd of `pid`; one closed while being read is left out.
std::vector<OpenFd> open_fds(pid_t pid) {
  std::vector<OpenFd> out;
  const std::string base = "/proc/" + std::to_string(pid);
  std::error_code ec;
  // Without exceptions: the process may exit while it is read.
  for (std::filesystem::directory_iterator it(base + "/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    const auto& entry = *it;
    OpenFd f;
    f.fd = std::stoi(entry.path().filename().string());
    char buf[512];
    const ssize_t n = ::readlink(entry.path().c_str(), buf, sizeof buf - 1);
    struct stat st {};
    if (n <= 0 || ::stat(entry.path().c_str(), &st) == -1) continue;
    f.target.assign(buf, static_cast<std::size_t>(n));
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    std::ifstream info(base + "/fdinfo/" + std::to_string(f.fd));
    std::string key;
    bool found = false;
    while (info >> key) {
      if (key == "flags:") {
        info >> std::oct >> f.flags;
        found = true;
        break;
      }
    }
    if (found) out.push_back(f);
  }
  return out;
}

// Inodes of listening TCP sockets (state 0A in /proc/net/tcp and tcp6) with their local address
// ("0100007F:23B9").
std::map<ino_t, std::string> listening_sockets() {
  std::map<ino_t, std::string> out;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
      unsigned long inode = 0;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode;
      if (state == "0A") out[inode] = local;
    }
  }
  return out;
}

// Unix stream sockets by inode, with their peer's inode, from `ss -xn` (iproute2); empty when
// ss cannot be run.
std::map<ino_t, ino_t> unix_peers() {
  std::map<ino_t, ino_t> out;
  const Finished ss = run_program({"ss", "-xn"});
  if (ss.exit_code != 0) return out;
  std::istringstream in(ss.out);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string netid, state, recv_q, send_q, local, local_inode, peer, peer_inode;
    fields >> netid >> state >> recv_q >> send_q >> local >> local_inode >> peer >> peer_inode;
    try {
      out[std::stoul(local_inode)] = std::stoul(peer_inode);
    } catch (const std::exception&) {
      // a line of another shape (a name with spaces): not one of ours
    }
  }
  return out;
}

// A worker opens its access logs last before it reports serving: one open means it is set up.
bool has_open(pid_t pid, const std::string& path) {
  const auto fds = open_fds(pid);
  return std::any_of(fds.begin(), fds.end(), [&](const OpenFd& f) { return f.target == path; });
}

bool is_socket(const OpenFd& f) { return f.target.rfind("socket:", 0) == 0; }

// What the fd checks found, for the figures and the failure messages.
struct FdReport {
  std::size_t master_fds = 0;
  std::vector<std::size_t> worker_fds;
  std::size_t shared_listeners = 0;  // per worker, the most seen (fds)
  std::set<ino_t> listener_sockets;  // of all workers (distinct sockets)
  bool channels_checked = false;     // ss was there to tell
  std::size_t worker_sockets = 0;    // all workers, checked non-blocking
  std::vector<std::string> problems;
};

// For the master and each worker: fds above 2 close-on-exec; in a worker, sockets non-blocking,
// no signalfd (the master's), and no fd that is also the master's unless it is a listener.
FdReport check_fds(pid_t master, const std::set<pid_t>& workers) {
  FdReport r;
  const auto listening = listening_sockets();
  const auto mine = open_fds(master);
  const auto peers = unix_peers();
  r.channels_checked = !peers.empty();
  r.master_fds = mine.size();
  std::set<std::pair<dev_t, ino_t>> master_files;
  for (const OpenFd& f : mine) {
    if (f.target.rfind("anon_inode:", 0) != 0) master_files.insert({f.dev, f.ino});
    if (f.fd > 2 && (f.flags & O_CLOEXEC) == 0) {
      r.problems.push_back("master fd " + std::to_string(f.fd) + " (" + f.target +
                           ") is not close-on-exec");
    }
  }
  for (const pid_t w : workers) {
    const auto fds = open_fds(w);
    r.worker_fds.push_back(fds.size());
    std::size_t listeners = 0;
    std::size_t channels = 0;  // unix sockets whose other end is the master's
    const std::string who = "worker " + std::to_string(w) + " fd ";
    for (const OpenFd& f : fds) {
      if (f.fd <= 2) continue;
      const std::string what = who + std::to_string(f.fd) + " (" + f.target + ")";
      if ((f.flags & O_CLOEXEC) == 0) r.problems.push_back(what + " is not close-on-exec");
      if (is_socket(f)) {
        ++r.worker_sockets;
        if ((f.flags & O_NONBLOCK) == 0) r.problems.push_back(what + " is a blocking socket");
      }
      if (f.target == "anon_inode:[signalfd]") r.problems.push_back(what + " is a signalfd");
      if (auto peer = peers.find(f.ino); is_socket(f) && peer != peers.end()) {
        for (const OpenFd& m : mine) {
          if (is_socket(m) && m.ino == peer->second) ++channels;
        }
      }
      if (!master_files.contains({f.dev, f.ino})) continue;
      if (is_socket(f) && listening.contains(f.ino)) {
        ++listeners;
        r.listener_sockets.insert(f.ino);
      } else {
        r.problems.push_back(what + " is also open in the master");
      }
    }
    r.shared_listeners = std::max(r.shared_listeners, listeners);
    if (r.channels_checked && channels != 1) {
      r.problems.push_back("worker " + std::to_string(w) + " has " + std::to_string(channels) +
                           " sockets connected to the master (its channel only expected)");
    }
  }
  return r;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::string sizes(const std::vector<std::size_t>& v) {
  std::string out;
  for (std::size_t n : v) out += (out.empty() ? "" : "/") + std::to_string(n);
  return out;
}

struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::set<unsigned long> groups;
};

std::optional<Identity> identity_of(const std::string& name) {
  const passwd* pw = ::getpwnam(name.c_str());
  if (pw == nullptr) return std::nullopt;
  Identity id{pw->pw_uid, pw->pw_gid, {}};
  std::vector<gid_t> groups(64);
  int n = static_cast<int>(groups.size());
  if (::getgrouplist(name.c_str(), id.gid, groups.data(), &n) == -1) return std::nullopt;
  for (int i = 0; i < n; ++i) id.groups.insert(groups[static_cast<std::size_t>(i)]);
  return id;
}

// What /proc/PID/status says against `id`: all four uids and gids, the groups, no capability in
// any set (the bounding set included) and no_new_privs. Empty when all hold.
std::vector<std::string> privilege_problems(pid_t pid, const Identity& id) {
  std::vector<std::string> out;
  auto st = proc_status(pid);
  const std::string who = "worker " + std::to_string(pid) + ": ";
  const auto uids = numbers(st["Uid"]);
  const auto gids = numbers(st["Gid"]);
  if (uids != std::vector<unsigned long>(4, id.uid)) out.push_back(who + "Uid " + st["Uid"]);
  if (gids != std::vector<unsigned long>(4, id.gid)) out.push_back(who + "Gid " + st["Gid"]);
  const auto groups = numbers(st["Groups"]);
  if (std::set<unsigned long>(groups.begin(), groups.end()) != id.groups) {
    out.push_back(who + "Groups " + st["Groups"]);
  }
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    if (st[set].empty() || std::stoull(st[set], nullptr, 16) != 0) {
      out.push_back(who + set + " " + st[set]);
    }
  }
  if (st["NoNewPrivs"] != "1") out.push_back(who + "NoNewPrivs " + st["NoNewPrivs"]);
  return out;
}

// Everything a worker may hold: listeners of a proxy on two addresses and of a reuseport proxy,
// the status endpoint, health checks, an access log.
std::string config(const std::string& user, int backend, int port, int port2, int status_port,
                   const std::string& access_log) {
  return config_text(
             (user.empty() ? "" : "user = \"" + user + "\";\n") + "worker_processes = 2;",
             {{"web",
               {loopback(port), "127.0.0.2:" + std::to_string(port)},
               "app",
               "access_log = \"" + access_log + "\";"},
              {"pooled", {loopback(port2)}, "app", "reuseport = true; access_log = \"off\";"}},
             {upstream_of({server_at(backend)},
                          "health_check = { interval = \"200ms\"; timeout = \"1s\"; fails = 3; "
                          "passes = 1; };")}) +
         "status = { listen = \"" + loopback(status_port) + "\"; };\n";
}

// One session through `port`, left open so that its client and upstream sockets are counted.
int open_session(int port) {
  event::UniqueFd fd(connect_from("", "127.0.0.1", port));
  if (fd.valid() && !echo_round_trip(fd.get(), "hello")) return -1;
  return fd.release();
}

// The workers of the running generation, once every one of them serves (they are the master's
// children not among `old`, `count` of them, each with `ready` true).
template <typename Ready>
std::set<pid_t> serving_workers(const FerryInstance& ferry, const std::set<pid_t>& old,
                                std::size_t count, Ready&& ready) {
  std::set<pid_t> now;
  eventually(
      [&] {
        now = ferry.workers();
        if (now.size() != count) return false;
        for (pid_t p : now) {
          if (old.contains(p) || !ready(p)) return false;
        }
        return true;
      },
      seconds(20));
  return now;
}

// The whole scenario, as `user` ("" = none): start, a session, reopen, reload, kill -9. At each
// step every fd check; with a user, the privileges of each worker.
void run_scenario(const std::string& user) {
  std::optional<Identity> id;
  if (!user.empty()) {
    id = identity_of(user);
    ASSERT_TRUE(id) << "no user " << user;
  }
  EchoServer backend;
  TempDir logs;
  // The worker reopens its access log as the user: the folder lets it through (as nginx needs).
  ASSERT_EQ(::chmod(logs.path().c_str(), 0755), 0);
  const std::string access = logs.path() + "/access.log";
  const int port = free_port();
  const int port2 = free_port();
  const int status_port = free_port();
  FerryInstance ferry(config(user, backend.port(), port, port2, status_port, access));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const pid_t master = ferry.master();
  auto ready = [&](pid_t p) {
    if (process_title(p).find("worker process") == std::string::npos) return false;
    return (!id || privilege_problems(p, *id).empty()) && has_open(p, access);
  };
  auto check = [&](const std::string& step, const std::set<pid_t>& workers) {
    ASSERT_EQ(workers.size(), 2U) << step << "\n" << ferry.log();
    if (id) {
      for (pid_t w : workers) EXPECT_EQ(joined(privilege_problems(w, *id)), "") << step;
    }
    const int session = open_session(port);
    const int pooled = open_session(port2);
    EXPECT_GE(session, 0) << step;
    EXPECT_GE(pooled, 0) << step;
    const FdReport r = check_fds(master, workers);
    EXPECT_EQ(joined(r.problems), "") << step;
    // "web"'s 2 listeners, "pooled"'s reuseport clones (one per worker), the status one.
    EXPECT_EQ(r.listener_sockets.size(), 5U) << step;
    // Each session: a client and an upstream socket in some worker.
    EXPECT_GE(r.worker_sockets, 4U) << step;
    auto master_status = proc_status(master);
    std::cout << "reliability: security (" << (user.empty() ? "no user" : "user " + user) << ", "
              << step << "): " << workers.size() << " workers"
              << (id ? " uid " + std::to_string(id->uid) +
                           ", caps 0 (bounding set too), "
                           "no_new_privs"
                     : "")
              << "; fds master " << r.master_fds << ", workers " << sizes(r.worker_fds)
              << " with 2 sessions open; shared with the master: " << r.listener_sockets.size()
              << " listening sockets (" << r.shared_listeners
              << " fds a worker at most, with its acceptor's duplicates) + stdio"
              << (r.channels_checked ? ", its channel the one socket to the master" : "")
              << ", nothing else; "
                 "all close-on-exec, "
              << r.worker_sockets << " worker sockets non-blocking; master uid "
              << numbers(master_status["Uid"]).at(0) << std::endl;
    for (int fd : {session, pooled}) {
      if (fd >= 0) ::close(fd);
    }
  };

  std::set<pid_t> workers = serving_workers(ferry, {}, 2, ready);
  check("start", workers);
  if (id) {
    EXPECT_EQ(numbers(proc_status(master)["Uid"]), std::vector<unsigned long>(4, 0))
        << "the master stays root";
  }
  // The session above was logged, by a worker that opened its log after switching user.
  EXPECT_TRUE(eventually([&] { return count_of(read_file(access), " closed\n") >= 1; }))
      << read_file(access) << ferry.log();

  // Logs reopened after a rotation: the master makes the new file, the workers open it.
  std::error_code renamed;
  std::filesystem::rename(access, access + ".1", renamed);
  ASSERT_FALSE(renamed) << renamed.message();
  ASSERT_EQ(ferry.command("reopen").exit_code, 0);
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(access); })) << ferry.log();
  ASSERT_TRUE(ferry.wait_for_log("reopening logs")) << ferry.log();
  // A reopen is a byte on each channel: a session after it is logged by a worker that reopened
  // (the reopen is seen before the accept on the same loop turn or earlier).
  EXPECT_TRUE(eventually([&] {
    const event::UniqueFd fd(open_session(port));
    return count_of(read_file(access), " closed\n") >= 1;
  })) << ferry.log();
  EXPECT_EQ(ferry.log().find("cannot reopen"), std::string::npos) << ferry.log();
  EXPECT_EQ(ferry.log().find("cannot open access log"), std::string::npos) << ferry.log();
  if (id) {
    struct stat st {};
    ASSERT_EQ(::stat(access.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, id->uid) << "the new log is the user's, as nginx does";
  }

  // A reload: a new generation.
  ferry.rewrite(config(user, backend.port(), port, port2, status_port, access) +
                "worker_shutdown_timeout = \"20s\";\n");
  ASSERT_EQ(ferry.command("reload").exit_code, 0) << ferry.log();
  workers = serving_workers(ferry, workers, 2, ready);
  check("after a reload", workers);

  // A worker killed and respawned.
  const pid_t victim = *workers.begin();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  workers = serving_workers(ferry, {victim}, 2, ready);
  check("after a kill -9 and respawn", workers);
  EXPECT_EQ(ferry.log().find("root could be regained"), std::string::npos);
}

// Whoever starts the tests may leave fds open across exec (a shell, a CI runner): ferry would
// get them without having opened them. Only ferry's own are under test.
class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC), 0); }
};

// The tests of `user = "nobody"`: they need root.
class SecurityAsNobodyTest : public SecurityTest {
 protected:
  void SetUp() override {
    SecurityTest::SetUp();
    if (::geteuid() != 0) GTEST_SKIP() << "switching users needs root";
    id = identity_of("nobody");
    ASSERT_TRUE(id) << "no user nobody";
  }
  std::optional<Identity> id;
};

TEST_F(SecurityAsNobodyTest, WorkersRunAsTheConfiguredUserWithNoCapabilityLeft) {
  run_scenario("nobody");
}

TEST_F(SecurityTest, NoMasterFdInWorkersAndEveryFdCloseOnExec) { run_scenario(""); }

// The error log in a file: the workers, as the user, reopen the file the master (root) made
// after a rotation, and write to it.
TEST_F(SecurityAsNobodyTest, WorkersAsTheUserReopenTheErrorLogTheMasterMade) {
  EchoServer backend;
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  const std::string error_log = dir.path() + "/error.log";
  const std::string conf = dir.write(
      "ferry.conf",
      config_text(
          "user = \"nobody\";\npid_file = \"" + dir.path() + "/ferry.pid\";\nlog = { path = \"" +
              error_log + "\"; level = \"info\"; };",
          {{"web", {loopback(free_port())}, loopback(backend.port()), "access_log = \"off\";"}}));
  Process ferry({ferry_binary(), "-c", conf});
  ASSERT_TRUE(eventually([&] { return read_file(error_log).find("serving") != std::string::npos; },
                         seconds(20)))
      << read_file(error_log) << ferry.stderr_so_far();
  struct stat st {};
  ASSERT_EQ(::stat(error_log.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, id->uid) << "given to the user before the workers switched";
  // The error log a worker got from the master is the one master fd it keeps besides listeners
  // (until it reopens its own): close-on-exec like every other.
  const std::set<pid_t> workers = children_of(ferry.pid());
  ASSERT_EQ(workers.size(), 1U);
  FdReport fds = check_fds(ferry.pid(), workers);
  std::erase_if(fds.problems, [&](const std::string& p) {
    return p.ends_with("(" + error_log + ") is also open in the master");
  });
  EXPECT_EQ(joined(fds.problems), "");

  std::error_code renamed;
  std::filesystem::rename(error_log, error_log + ".1", renamed);
  ASSERT_FALSE(renamed) << renamed.message();
  const Finished reopen = run_program({ferry_binary(), "-s", "reopen", "-c", conf});
  ASSERT_EQ(reopen.exit_code, 0) << reopen.err;
  ASSERT_TRUE(eventually([&] {
    return ::stat(error_log.c_str(), &st) == 0 && st.st_uid == id->uid;
  })) << "the master makes the new file and gives it to the user";
  // The worker reopens when its channel says so; its shutdown line shows which file it has.
  ferry.signal(SIGQUIT);
  const Finished end = ferry.wait(seconds(20));
  EXPECT_EQ(end.exit_code, 0) << end.err;
  const std::string fresh = read_file(error_log);
  const std::string rotated = read_file(error_log + ".1");
  EXPECT_NE(fresh.find("worker: worker 0 shutting down gracefully"), std::string::npos)
      << "new:\n"
      << fresh << "rotated:\n"
      << rotated;
  EXPECT_NE(fresh.find("master: master exiting"), std::string::npos) << fresh;
  EXPECT_EQ(rotated.find("cannot reopen"), std::string::npos) << rotated;
  std::cout << "reliability: security: error log reopened by workers as nobody after rotation "
               "(file made by the root master, chowned to uid "
            << id->uid << ")" << std::endl;
}

// Logs in a folder the user may write: a link planted there in place of a log must not make
// root hand the file it points to over to the user.
TEST_F(SecurityAsNobodyTest, ALinkInPlaceOfALogIsNotGivenToTheUser) {
  EchoServer backend;
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);
  const std::string victim = dir.write("victim", "root's\n");
  const std::string other = dir.write("other", "root's too\n");
  const std::string linked = dir.path() + "/linked.log";
  const std::string hard = dir.path() + "/hard.log";
  ASSERT_EQ(::symlink(victim.c_str(), linked.c_str()), 0);
  ASSERT_EQ(::link(other.c_str(), hard.c_str()), 0);
  auto proxy = [&](const std::string& name, const std::string& log) {
    return ProxySpec{
        name, {loopback(free_port())}, loopback(backend.port()), "access_log = \"" + log + "\";"};
  };
  FerryInstance ferry(config_text("user = \"nobody\";", {proxy("a", linked), proxy("b", hard)}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (const std::string& file : {victim, other}) {
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0U) << file << " was given away\n" << ferry.log();
  }
  std::cout << "reliability: security: a symlink and a hard link in place of access logs in a "
               "folder nobody may write: neither target chowned"
            << std::endl;
}

// The new master of a binary upgrade got the listeners without close-on-exec: it sets it again,
// and its workers hold nothing more of it than the listeners.
TEST_F(SecurityTest, ANewMasterOfABinaryUpgradeKeepsEveryFdCloseOnExec) {
  EchoServer backend;
  TempDir logs;
  const int port = free_port();
  const std::string access = logs.path() + "/access.log";
  FerryInstance ferry(config("", backend.port(), port, free_port(), free_port(), access));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::set<pid_t> old_workers = ferry.workers();
  ferry.signal(SIGUSR2);
  pid_t new_master = -1;
  ASSERT_TRUE(eventually(
      [&] {
        for (pid_t p : ferry.workers()) {
          if (process_title(p).find("master process") != std::string::npos) new_master = p;
        }
        return new_master > 0 && children_of(new_master).size() == 2;
      },
      seconds(20)))
      << ferry.log();
  std::set<pid_t> new_workers;
  ASSERT_TRUE(eventually([&] {
    new_workers = children_of(new_master);
    return new_workers.size() == 2 && std::all_of(new_workers.begin(), new_workers.end(),
                                                  [&](pid_t p) { return has_open(p, access); });
  }));
  event::UniqueFd session(open_session(port));
  EXPECT_GE(session.get(), 0);
  const FdReport r = check_fds(new_master, new_workers);
  EXPECT_EQ(joined(r.problems), "");
  EXPECT_EQ(r.listener_sockets.size(), 5U);
  const FdReport old = check_fds(ferry.master(), old_workers);
  EXPECT_EQ(joined(old.problems), "") << "the old master cleared close-on-exec only in its child";
  std::cout << "reliability: security (binary upgrade): new master " << r.master_fds
            << " fds, its workers " << sizes(r.worker_fds) << ", all close-on-exec, sharing only "
            << r.listener_sockets.size() << " listening sockets" << std::endl;
  session.reset();
  // The new master leaves; the old one stays in charge and is stopped by the instance.
  ::kill(new_master, SIGTERM);
  EXPECT_TRUE(eventually([&] { return process_title(new_master).empty(); }, seconds(20)));
}

// Whether `ip:port` can be bound now (nothing else listens there).
bool bindable(const std::string& ip, int port) {
  const event::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &sin.sin_addr);
  const bool ok = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0;
  return ok;
}

// The packaged service runs the master and its workers as one user (User=ferry, no `user`): a
// worker (or anything else of that uid) must not write the master's memory, where the
// registry's writable view and the per-client secret are. Its workers stay its user's to debug.
TEST(SecurityOneUidTest, AProcessOfTheMastersUidCannotWriteItsMemory) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to start the master as another user";
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  const uid_t uid = nobody->pw_uid;
  const gid_t gid = nobody->pw_gid;
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_EQ(::chown(ferry.dir().path().c_str(), uid, gid), 0);
  ASSERT_EQ(::chmod(ferry.conf().c_str(), 0644), 0);
  ferry.set_launcher({"/usr/bin/setpriv", "--reuid=" + std::to_string(uid),
                      "--regid=" + std::to_string(gid), "--clear-groups"});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::set<pid_t> workers = ferry.workers();
  ASSERT_EQ(workers.size(), 1u);
  const auto mem = [](pid_t pid) { return "/proc/" + std::to_string(pid) + "/mem"; };
  EXPECT_EQ(open_errno_as(uid, gid, mem(*workers.begin())), 0)
      << "the worker's own user may open its memory (as before)";
  const int err = open_errno_as(uid, gid, mem(ferry.master()));
  EXPECT_TRUE(err == EACCES || err == EPERM) << "open(/proc/MASTER/mem): " << std::strerror(err);
  // Root still reads what it did (the tests' /proc/MASTER/fd and /task).
  EXPECT_FALSE(open_fds(ferry.master()).empty());
  EXPECT_EQ(thread_count(ferry.master()), 1u);
  ferry.signal(SIGQUIT);
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
}

TEST_F(SecurityTest, TheStatusEndpointListensOnLoopbackByDefault) {
  constexpr int kDefaultPort = 9145;
  if (!bindable("0.0.0.0", kDefaultPort)) {
    GTEST_SKIP() << "port " << kDefaultPort << " is taken on this machine";
  }
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config_text("", {{"web", {loopback(port)}, "app", "access_log = \"off\";"}},
                                  {upstream_of({server_at(backend.port())})}) +
                      "status = { };\n");
  const Finished dump = run_program({ferry_binary(), "-T", "-c", ferry.conf()});
  EXPECT_EQ(dump.exit_code, 0) << dump.err;
  EXPECT_NE(dump.out.find("listen = \"127.0.0.1:9145\""), std::string::npos) << dump.out;
  if (!ferry.start()) {
    // Taken since the check above (another test, run at the same time, on the default port).
    if (ferry.log().find("Address already in use") != std::string::npos) {
      GTEST_SKIP() << "port " << kDefaultPort << " was taken meanwhile";
    }
    FAIL() << ferry.log();
  }
  // The master's listening socket on the port: its address, from the kernel's table.
  std::set<std::string> addresses;
  const auto listening = listening_sockets();
  for (const OpenFd& f : open_fds(ferry.master())) {
    auto it = listening.find(f.ino);
    if (is_socket(f) && it != listening.end() && it->second.ends_with(":23B9")) {
      addresses.insert(it->second);
    }
  }
  EXPECT_EQ(addresses, std::set<std::string>{"0100007F:23B9"}) << "127.0.0.1:9145 only";
  EXPECT_FALSE(bindable("127.0.0.1", kDefaultPort));
  event::UniqueFd fd(connect_from("", "127.0.0.1", kDefaultPort));
  ASSERT_GE(fd.get(), 0);
  ASSERT_TRUE(send_all(fd.get(), "GET /status HTTP/1.0\r\n\r\n"));
  const std::string answer = read_exactly(fd.get(), 12, seconds(10));
  fd.reset();
  EXPECT_EQ(answer.substr(answer.size() >= 3 ? answer.size() - 3 : 0), "200") << answer;
  std::cout << "reliability: security: status = { } listens on 127.0.0.1:9145 only, not on "
               "0.0.0.0"
            << std::endl;
}

}  // namespace
}  // namespace ferry::test
