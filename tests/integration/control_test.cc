// The files and the socket through which ferry is controlled, against a hostile neighbour: links
// planted where the master writes, a pid file planted for `-s` to act on, peers of another uid
// on the control socket, and idle connections that would keep `-s reload` out.
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string control_path(const FerryInstance& ferry) { return ferry.dir().path() + "/ferry.ctl"; }

// This test as the master `-s` looks for in `dir`: ferry.pid names it and it listens on
// ferry.ctl (the peer check passes). The listening socket, or -1.
int listen_as_the_master(const TempDir& dir, int backlog) {
  dir.write("ferry.pid", std::to_string(::getpid()) + "\n");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  const std::string ctl = dir.path() + "/ferry.ctl";
  std::strncpy(sun.sun_path, ctl.c_str(), sizeof sun.sun_path - 1);
  if (fd == -1 || ::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == -1 ||
      ::listen(fd, backlog) == -1) {
    if (fd != -1) ::close(fd);
    return -1;
  }
  return fd;
}

TEST(ControlFilesTest, LinksPlantedWhereTheMasterWritesAreNotFollowed) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  TempDir victims;
  const std::string pid = ferry.pid_file();
  // Where the pid file, its former fixed temporary name and the control socket go.
  const std::vector<std::string> planted = {pid, pid + ".tmp", control_path(ferry)};
  for (std::size_t i = 0; i < planted.size(); ++i) {
    const std::string target = victims.write("victim" + std::to_string(i), "untouched\n");
    ASSERT_EQ(::symlink(target.c_str(), planted[i].c_str()), 0) << std::strerror(errno);
  }
  ASSERT_TRUE(ferry.start()) << ferry.log();

  for (std::size_t i = 0; i < planted.size(); ++i) {
    EXPECT_EQ(read_file(victims.path() + "/victim" + std::to_string(i)), "untouched\n")
        << "written through the link at " << planted[i];
  }
  struct stat st {};
  ASSERT_EQ(::lstat(pid.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the link at the pid file is replaced, not followed";
  EXPECT_EQ(read_file(pid), std::to_string(ferry.master()) + "\n");
  ASSERT_EQ(::lstat(control_path(ferry).c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(ferry.command("status").exit_code, 0);
  // No temporary file is left beside the pid file.
  for (const auto& e : std::filesystem::directory_iterator(ferry.dir().path())) {
    const std::string name = e.path().filename();
    EXPECT_TRUE(name == "ferry.pid" || name == "ferry.pid.tmp" || name == "ferry.ctl" ||
                name == "ferry.conf")
        << name;
  }
}

// Whether `pid`, a child of the test, was signalled (it would be a zombie).
bool is_zombie(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const std::size_t paren = stat.rfind(')');
  return paren != std::string::npos && stat.substr(paren + 2, 1) == "Z";
}

// A pid file someone else could have planted (or a stale one whose pid was reused): `-s stop`
// must not kill what it names unless that process listens on the control socket beside it.
TEST(ControlFilesTest, SignalCommandsRefuseAPidFileNotTheMastersOrALink) {
  Process victim({"/bin/sleep", "60"});
  TempDir dir;
  const std::string pid_file = dir.path() + "/ferry.pid";
  const std::string conf = dir.write("f.conf", "pid_file = \"" + pid_file + "\";\n");
  dir.write("ferry.pid", std::to_string(victim.pid()) + "\n");

  // No control socket: nothing proves the pid is a master's.
  Finished f = run_program({ferry_binary(), "-s", "stop", "-c", conf});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find("does not answer on " + dir.path() + "/ferry.ctl"), std::string::npos)
      << f.err;

  // A socket planted beside it: its listener (this test) is not the pid the file names.
  event::UniqueFd planted(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  const std::string ctl = dir.path() + "/ferry.ctl";
  std::strncpy(sun.sun_path, ctl.c_str(), sizeof sun.sun_path - 1);
  ASSERT_EQ(::bind(planted.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
  ASSERT_EQ(::listen(planted.get(), 8), 0);
  for (const char* signal : {"stop", "quit", "reopen", "status"}) {
    f = run_program({ferry_binary(), "-s", signal, "-c", conf});
    EXPECT_EQ(f.exit_code, 1) << signal;
    EXPECT_NE(f.err.find("names pid " + std::to_string(victim.pid()) + ", but pid " +
                         std::to_string(::getpid()) + " listens on " + ctl),
              std::string::npos)
        << signal << ": " << f.err;
  }
  planted.reset();

  // A hard link to another file (another daemon's pid file) is refused.
  const std::string other = dir.write("other.pid", std::to_string(victim.pid()) + "\n");
  ASSERT_EQ(::unlink(pid_file.c_str()), 0);
  ASSERT_EQ(::link(other.c_str(), pid_file.c_str()), 0);
  f = run_program({ferry_binary(), "-s", "stop", "-c", conf});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find(pid_file + " has 2 names (hard links)"), std::string::npos) << f.err;

  // A symbolic link is refused as well.
  ASSERT_EQ(::unlink(pid_file.c_str()), 0);
  ASSERT_EQ(::symlink(other.c_str(), pid_file.c_str()), 0);
  f = run_program({ferry_binary(), "-s", "stop", "-c", conf});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find("cannot open " + pid_file + ": it is a symbolic link"), std::string::npos)
      << f.err;

  EXPECT_FALSE(is_zombie(victim.pid())) << "the process the planted file names was signalled";
  victim.signal(SIGKILL);
}

// Issue 18 item 11: a master on its way out removed whatever was at its pid file's path,
// though another master (a new one of an upgrade, one started since) had written its own there.
TEST(ControlFilesTest, AMasterRemovesOnlyAPidFileThatNamesIt) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string other = std::to_string(::getpid()) + "\n";  // a live process, not ferry
  TempDir scratch;
  const std::string written = scratch.write("ferry.pid", other);
  ASSERT_EQ(::rename(written.c_str(), ferry.pid_file().c_str()), 0);
  ferry.signal(SIGQUIT);
  EXPECT_EQ(ferry.wait().exit_code, 0);
  EXPECT_EQ(read_file(ferry.pid_file()), other) << ferry.log();
  EXPECT_NE(ferry.log().find("not this master's: left in place"), std::string::npos) << ferry.log();
}

// A master that no longer accepts (its backlog full): `-s` gives up instead of waiting forever.
TEST(ControlFilesTest, SignalCommandsGiveUpOnAControlSocketThatTakesNoConnection) {
  TempDir dir;
  const std::string conf = dir.write("f.conf", "pid_file = \"" + dir.path() + "/ferry.pid\";\n");
  const std::string ctl = dir.path() + "/ferry.ctl";
  const event::UniqueFd listener(listen_as_the_master(dir, 0));
  ASSERT_GE(listener.get(), 0);
  const event::UniqueFd filler(connect_unix(ctl));  // a backlog of 0 holds one: it is full now
  ASSERT_GE(filler.get(), 0);
  const auto start = std::chrono::steady_clock::now();
  const Finished f = run_program({ferry_binary(), "-s", "status", "-c", conf}, seconds(15));
  EXPECT_EQ(f.exit_code, 1) << f.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(10));
  EXPECT_NE(f.err.find("does not answer on " + ctl + ": no room in its backlog within 5 s"),
            std::string::npos)
      << f.err;
}

// The folder of the pid file and the control socket: made 0755 whatever the umask; one other
// users may write to is used, with a warning.
TEST(ControlFilesTest, TheRunFolderIsMadeOnlyTheMastersToWrite) {
  EchoServer backend;
  TempDir dir;
  const std::string run = dir.path() + "/run";
  const std::string conf =
      dir.write("f.conf", "pid_file = \"" + run + "/ferry.pid\";\n" +
                              one_proxy_config(1, free_port(), backend.port()));
  const mode_t mask = ::umask(0);
  auto ferry = std::make_unique<Process>(std::vector<std::string>{ferry_binary(), "-c", conf});
  ::umask(mask);
  ASSERT_TRUE(ferry->wait_for_stderr("worker(s) serving")) << ferry->stderr_so_far();
  struct stat st {};
  ASSERT_EQ(::stat(run.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ferry->signal(SIGTERM);
  EXPECT_EQ(ferry->wait(seconds(10)).exit_code, 0);

  ASSERT_EQ(::chmod(run.c_str(), 0777), 0);
  ferry = std::make_unique<Process>(std::vector<std::string>{ferry_binary(), "-c", conf});
  ASSERT_TRUE(ferry->wait_for_stderr("worker(s) serving")) << ferry->stderr_so_far();
  EXPECT_NE(ferry->stderr_so_far().find(run + " is writable by other users (mode 777)"),
            std::string::npos)
      << ferry->stderr_so_far();
  ferry->signal(SIGTERM);
  EXPECT_EQ(ferry->wait(seconds(10)).exit_code, 0);
}

// The control socket never shows at the mode bind() gives it (the umask's, here 0777): it appears
// in its folder only by a rename, 0600 already, at start and at every reload that moves it.
TEST(ControlFilesTest, TheControlSocketAppearsOnlyAt0600) {
  EchoServer backend;
  const std::string body = one_proxy_config(1, free_port(), backend.port());
  FerryInstance ferry(body);
  const std::string dir = ferry.dir().path();
  const std::string run = dir + "/run";
  ASSERT_EQ(::mkdir(run.c_str(), 0755), 0) << std::strerror(errno);
  const std::vector<std::string> sockets = {dir + "/ferry.ctl", run + "/moved.ctl"};
  event::UniqueFd watch(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  ASSERT_GE(watch.get(), 0) << std::strerror(errno);
  for (const std::string& folder : {dir, run}) {
    ASSERT_GE(::inotify_add_watch(watch.get(), folder.c_str(), IN_CREATE | IN_MOVED_TO), 0);
  }
  // Besides the events (which come after the fact), a look at the mode as often as can be.
  std::atomic<bool> done = false;
  std::atomic<int> wrong_mode = 0;
  std::thread looker([&] {
    while (!done) {
      for (const std::string& path : sockets) {
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0 && (st.st_mode & 07777) != 0600) {
          wrong_mode = static_cast<int>(st.st_mode & 07777);
        }
      }
      // Paced: a busy loop would take a core from the master it watches (the inotify events
      // below are the deterministic part).
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  const mode_t mask = ::umask(0);
  const bool started = ferry.start();
  ::umask(mask);
  ASSERT_TRUE(started) << ferry.log();
  for (int i = 1; i <= 6; ++i) {
    const std::string pid = i % 2 == 1 ? run + "/moved.pid" : dir + "/ferry.pid";
    ferry.dir().write("ferry.conf",
                      "pid_file = \"" + pid + "\";\nlog = { level = \"info\"; };\n" + body);
    ferry.signal(SIGHUP);
    ASSERT_TRUE(eventually([&] {
      ferry.drain_log();
      return count_of(ferry.log(), "pid file moved from") == static_cast<std::size_t>(i);
    })) << ferry.log();
  }
  done = true;
  looker.join();
  EXPECT_EQ(wrong_mode, 0) << "the control socket was seen at mode " << std::oct << wrong_mode;

  std::vector<std::string> created, renamed;
  alignas(inotify_event) char buf[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(watch.get(), buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t at = 0; at < n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
      const std::string name = e->len > 0 ? e->name : "";
      if (name.ends_with(".ctl")) ((e->mask & IN_CREATE) != 0 ? created : renamed).push_back(name);
      at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
    }
  }
  watch.reset();
  EXPECT_TRUE(created.empty()) << "bound in place " << created.size() << " time(s)";
  EXPECT_EQ(renamed.size(), 7U) << "one rename at start and one per move";
  std::size_t leftovers = 0;
  for (const std::string& folder : {dir, run}) {
    for (const auto& e : std::filesystem::directory_iterator(folder)) {
      leftovers += e.path().filename().string().starts_with(".ferry-ctl.") ? 1 : 0;
    }
  }
  EXPECT_EQ(leftovers, 0U) << "a private bind folder was left behind";
  const Finished stop = ferry.command("stop");
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
}

// The folder the socket is bound in is longer than the socket's own path: the socket is bound
// through /proc/self/fd, so a path that fits sun_path works however deep its folder is; one
// that does not is refused by `ferry -t` and at start, naming the limit.
TEST(ControlFilesTest, AControlSocketPathOfUpTo107BytesWorks) {
  EchoServer backend;
  const std::string body = one_proxy_config(1, free_port(), backend.port());
  FerryInstance ferry(body);
  const std::string top = ferry.dir().path();
  // A folder for which <folder>/ferry.ctl is 100 bytes.
  const std::string deep = top + "/" + std::string(100 - top.size() - 11, 'd');
  ASSERT_EQ(::mkdir(deep.c_str(), 0755), 0) << std::strerror(errno);
  ASSERT_EQ((deep + "/ferry.ctl").size(), 100U);
  ferry.dir().write("ferry.conf", "pid_file = \"" + deep + "/ferry.pid\";\n" + body);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  Finished f = ferry.command("status");
  EXPECT_EQ(f.exit_code, 0) << f.err;
  f = ferry.command("stop");
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();

  // 108 bytes: too long for any unix socket address.
  const std::string deeper = deep + "/" + std::string(7, 'e');
  ASSERT_EQ(::mkdir(deeper.c_str(), 0755), 0) << std::strerror(errno);
  ASSERT_EQ((deeper + "/ferry.ctl").size(), 108U);
  ferry.dir().write("ferry.conf", "pid_file = \"" + deeper + "/ferry.pid\";\n" + body);
  f = run_program({ferry_binary(), "-t", "-c", ferry.conf()});
  EXPECT_EQ(f.exit_code, 1) << f.err;
  EXPECT_NE(
      f.err.find("control socket " + deeper + "/ferry.ctl is 108 bytes long; at most 107 fit"),
      std::string::npos)
      << f.err;
  EXPECT_FALSE(ferry.start(std::chrono::seconds(5)));
  EXPECT_NE(ferry.log().find("is 108 bytes long; at most 107"), std::string::npos) << ferry.log();
}

// A master killed between making its private bind folder and renaming the socket out of it
// leaves the folder: the next master removes those whose pid is gone and that are older than a
// few seconds, and no other. A young one is a live master's whose pid this master cannot see
// (another pid namespace sharing the folder: kill() says ESRCH as for a dead one).
TEST(ControlFilesTest, StalePrivateBindFoldersAreRemovedAtStart) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()), "info");
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_GT(dead, 0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  const std::string stale = ferry.dir().path() + "/.ferry-ctl." + std::to_string(dead) + ".Ab12Cd";
  const std::string alive =
      ferry.dir().path() + "/.ferry-ctl." + std::to_string(::getpid()) + ".Ef34Gh";
  const std::string young = ferry.dir().path() + "/.ferry-ctl." + std::to_string(dead) + ".Ij56Kl";
  for (const std::string& folder : {stale, alive, young}) {
    ASSERT_EQ(::mkdir(folder.c_str(), 0700), 0) << std::strerror(errno);
    const event::UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, (folder + "/s").c_str(), sizeof sun.sun_path - 1);
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0)
        << std::strerror(errno);
  }
  // Made a minute ago, as a killed master's would have been; the young one now.
  const timespec minute_ago[2] = {{::time(nullptr) - 60, 0}, {::time(nullptr) - 60, 0}};
  for (const std::string& folder : {stale, alive}) {
    ASSERT_EQ(::utimensat(AT_FDCWD, folder.c_str(), minute_ago, 0), 0) << std::strerror(errno);
  }
  ASSERT_TRUE(ferry.start()) << ferry.log();
  struct stat st {};
  EXPECT_EQ(::lstat(stale.c_str(), &st), -1) << stale << " is still there";
  EXPECT_NE(ferry.log().find("removed " + stale + ", left by pid " + std::to_string(dead)),
            std::string::npos)
      << ferry.log();
  EXPECT_EQ(::lstat((alive + "/s").c_str(), &st), 0) << "the folder of a live pid was touched";
  EXPECT_EQ(::lstat((young + "/s").c_str(), &st), 0) << "a folder made just now was touched";
  for (const std::string& folder : {alive, young}) {
    EXPECT_EQ(::unlink((folder + "/s").c_str()), 0);
    EXPECT_EQ(::rmdir(folder.c_str()), 0);
  }
}

// The packaged service runs the master as User=ferry; root controls it (logrotate's postrotate
// `-s reopen`, postinst's `-s upgrade`, an operator's sudo).
TEST(ControlFilesTest, RootControlsAMasterRunningAsAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to start the master as another user";
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_EQ(::chown(ferry.dir().path().c_str(), nobody->pw_uid, nobody->pw_gid), 0);
  ASSERT_EQ(::chmod(ferry.conf().c_str(), 0644), 0);
  ferry.set_launcher({"/usr/bin/setpriv", "--reuid=" + std::to_string(nobody->pw_uid),
                      "--regid=" + std::to_string(nobody->pw_gid), "--clear-groups"});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  struct stat st {};
  ASSERT_EQ(::stat(ferry.pid_file().c_str(), &st), 0);
  ASSERT_EQ(st.st_uid, nobody->pw_uid) << "the master writes its pid file as its own user";

  Finished f = ferry.command("status");
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_NE(f.out.find("web"), std::string::npos) << f.out;
  f = ferry.command("reopen");
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_TRUE(ferry.wait_for_log("SIGUSR1: reopening logs")) << ferry.log();
  f = ferry.command("quit");
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
}

TEST(ControlSocketTest, OnlyItsOwnerMayConnect) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  struct stat st {};
  ASSERT_EQ(::stat(control_path(ferry).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());
}

// The peer check holds even where the mode would let another user in (an operator's chmod).
TEST(ControlSocketTest, APeerOfAnotherUidIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string path = control_path(ferry);
  ASSERT_EQ(::chmod(ferry.dir().path().c_str(), 0755), 0);

  // Exit 0: connect refused by the mode; 1: connected and refused by the master; 2: answered.
  const auto as_nobody = [&] {
    const pid_t child = ::fork();
    if (child == 0) {
      if (::setgid(nobody->pw_gid) == -1 || ::setuid(nobody->pw_uid) == -1) ::_exit(3);
      const int fd = connect_unix(path);
      if (fd == -1) ::_exit(errno == EACCES ? 0 : 4);
      // The refusal comes at once, before any request.
      const std::string reply = read_exactly(fd, 4096, seconds(5));
      ::_exit(reply.rfind("error\nferry: refused: uid " + std::to_string(nobody->pw_uid), 0) == 0
                  ? 1
                  : 2);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(as_nobody(), 0) << "mode 0600 keeps another user out";
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  EXPECT_EQ(as_nobody(), 1) << ferry.log();
  EXPECT_TRUE(ferry.wait_for_log("control socket: refused: uid " + std::to_string(nobody->pw_uid)))
      << ferry.log();
  EXPECT_EQ(ferry.command("status").exit_code, 0);
}

TEST(ControlSocketTest, AConnectionThatSendsNoRequestIsClosed) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  event::UniqueFd fd(connect_unix(control_path(ferry)));
  ASSERT_GE(fd.get(), 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(closed_by_peer(fd.get(), seconds(8)));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(2'500));
  fd.reset();
  EXPECT_TRUE(ferry.wait_for_log("control socket: no request within 3000 ms")) << ferry.log();
}

TEST(ControlSocketTest, AFloodOfIdleConnectionsDoesNotKeepAReloadOut) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<int> idle;
  for (int i = 0; i < 300; ++i) {
    const int fd = connect_unix(control_path(ferry));
    ASSERT_GE(fd, 0) << i << ": " << std::strerror(errno);
    idle.push_back(fd);
  }
  const Finished reload = ferry.command("reload");
  EXPECT_EQ(reload.exit_code, 0) << reload.err << ferry.log();
  EXPECT_EQ(ferry.command("status").exit_code, 0);
  for (int fd : idle) ::close(fd);
}

// The master out of descriptors with control connections waiting: it pauses accepting on the
// (level-triggered) control socket instead of waking up for it in a loop, and takes `-s`
// commands again once descriptors are free. Before the fix it spun at a whole core and wrote
// one error line per wake-up.
TEST(ControlSocketTest, AMasterOutOfDescriptorsDoesNotSpinOnTheControlSocket) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const pid_t master = ferry.master();
  int highest = 0;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(master) + "/fd")) {
    highest = std::max(highest, std::atoi(e.path().filename().c_str()));
  }
  // Room for two more descriptors; the third connection finds none.
  const std::string limit = std::to_string(highest + 3);
  const Finished set = run_program(
      {"prlimit", "--pid", std::to_string(master), "--nofile=" + limit + ":" + limit}, seconds(5));
  ASSERT_EQ(set.exit_code, 0) << set.err;
  std::vector<int> waiting;
  for (int i = 0; i < 6; ++i) {
    const int fd = connect_unix(control_path(ferry));
    ASSERT_GE(fd, 0) << i << ": " << std::strerror(errno);
    waiting.push_back(fd);
  }
  ASSERT_TRUE(ferry.wait_for_log("accept() on the control socket failed: Too many open files"))
      << ferry.log();
  const long before = cpu_ticks(master);
  std::this_thread::sleep_for(seconds(2));  // a measurement window, not a synchronisation
  const long used = cpu_ticks(master) - before;
  EXPECT_LT(used, ::sysconf(_SC_CLK_TCK) / 5) << "master CPU ticks in 2 s: " << used;
  ferry.drain_log();
  const std::string log = ferry.log();
  std::size_t lines = 0;
  for (std::size_t at = 0;
       (at = log.find("accept() on the control socket failed", at)) != std::string::npos; ++at) {
    ++lines;
  }
  EXPECT_LE(lines, 8U) << log.substr(0, 2000);
  for (int fd : waiting) ::close(fd);
  const Finished status = ferry.command("status");
  EXPECT_EQ(status.exit_code, 0) << status.err << ferry.log();
}

// `-s upgrade` tells "no master took the request" (exit 3: the Debian postinst restarts then)
// from "the upgrade failed and the old master stays in charge" (exit 1: it is left serving).
TEST(SignalUpgradeTest, ExitsThreeWhenNoMasterTakesTheRequest) {
  TempDir dir;
  const std::string pid_file = dir.path() + "/ferry.pid";
  const std::string conf = dir.write("f.conf", "pid_file = \"" + pid_file + "\";\n");
  Finished f = run_program({ferry_binary(), "-s", "upgrade", "-c", conf});
  EXPECT_EQ(f.exit_code, 3) << "no master runs: " << f.err;

  // An older master, which answers a request it does not know as ferry always has: this test
  // listens on the control socket and names itself in the pid file.
  event::UniqueFd listener(listen_as_the_master(dir, 8));
  ASSERT_GE(listener.get(), 0);
  std::thread older([listener = listener.get()] {
    const event::UniqueFd c(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (c.get() == -1) return;
    char buf[64];
    (void)::read(c.get(), buf, sizeof buf);
    const char answer[] = "error\nferry: unknown control request\n";
    (void)::write(c.get(), answer, sizeof answer - 1);
  });
  f = run_program({ferry_binary(), "-s", "upgrade", "-c", conf});
  older.join();
  listener.reset();
  EXPECT_EQ(f.exit_code, 3) << f.err;
  EXPECT_NE(f.err.find("does not know `upgrade`"), std::string::npos) << f.err;
}

// logrotate's postrotate runs `ferry -s reopen` once: during a binary upgrade it must reach the
// old master (ferry.pid.oldbin) too, which still writes its logs and whose workers still serve.
TEST(SignalUpgradeTest, ReopenReachesBothMastersOfAnUpgrade) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const auto pid_in = [](const std::string& file) {
    std::ifstream in(file);
    pid_t pid = 0;
    in >> pid;
    return pid;
  };
  ferry.signal(SIGUSR2);
  pid_t fresh = 0;
  ASSERT_TRUE(eventually([&] {
    fresh = pid_in(ferry.pid_file());
    return fresh > 0 && fresh != ferry.master() && children_of(fresh).size() == 1 &&
           pid_in(ferry.pid_file() + ".oldbin") == ferry.master();
  })) << ferry.log();
  const Finished f = ferry.command("reopen");
  EXPECT_EQ(f.exit_code, 0) << f.err;
  const auto reopened = [&] {
    ferry.drain_log();
    std::size_t n = 0;
    for (std::size_t at = 0;
         (at = ferry.log().find("SIGUSR1: reopening logs", at)) != std::string::npos; ++at) {
      ++n;
    }
    return n;
  };
  EXPECT_TRUE(eventually([&] { return reopened() == 2; })) << ferry.log();
  ::kill(fresh, SIGQUIT);
  EXPECT_TRUE(eventually([&] { return ::kill(fresh, 0) == -1; })) << ferry.log();
  ferry.signal(SIGQUIT);
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
}

// A PIDFILE.oldbin left behind (by a master killed with kill -9) may name any process by now:
// `-s reopen` signals it only as the parent of the master that answered.
TEST(SignalUpgradeTest, ReopenLeavesAStaleOldbinFileAlone) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  Process bystander({"/bin/sleep", "30"});
  ferry.dir().write("ferry.pid.oldbin", std::to_string(bystander.pid()) + "\n");
  const Finished f = ferry.command("reopen");
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_NE(f.err.find("a stale file; not signalled"), std::string::npos) << f.err;
  // USR1 would end it; it is our child, so a zombie until reaped: asked without reaping.
  const auto ended = [&] {
    siginfo_t info{};
    return ::waitid(P_PID, static_cast<id_t>(bystander.pid()), &info,
                    WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == bystander.pid();
  };
  EXPECT_FALSE(eventually(ended, std::chrono::milliseconds(500))) << "it was signalled";
}

// Between USR2's rename of the pid file and the new master's write of its own, or a rolled-back
// new master's exit (it removes its pid file) and the old master's rename of PIDFILE.oldbin back,
// no master answers at the pid file: a moment of a hand-over, not a service without a master.
// `-s upgrade` says "busy" (4), not 3 (the package would restart a serving service), and `-s
// reopen` reaches the old master (logrotate's postrotate must not fail).
TEST(SignalUpgradeTest, OnlyAnOldbinFileNamesAMasterUpgradeIsBusyReopenReachesIt) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(one_proxy_config(1, port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string oldbin = ferry.pid_file() + ".oldbin";
  ASSERT_EQ(::rename(ferry.pid_file().c_str(), oldbin.c_str()), 0);
  const Finished f = ferry.command("upgrade");
  EXPECT_EQ(f.exit_code, 4) << f.err;
  EXPECT_NE(f.err.find("is handing the service over or taking it back"), std::string::npos)
      << f.err;
  // -s reopen reaches the old master then (it still writes the logs).
  const Finished reopen = ferry.command("reopen");
  EXPECT_EQ(reopen.exit_code, 0) << reopen.err;
  EXPECT_TRUE(ferry.wait_for_log("SIGUSR1: reopening logs")) << ferry.log();
  ASSERT_EQ(::rename(oldbin.c_str(), ferry.pid_file().c_str()), 0);
  EXPECT_TRUE(served_through(port)) << "nothing changed";
}

// Issue 18 review: while PIDFILE names a master whose control socket is not its own (a rolled-
// back new master, its socket closed, before the old master took its files back), `-s reopen`
// failed (logrotate reports an error): it reaches the old master through PIDFILE.oldbin then.
TEST(SignalUpgradeTest, ReopenReachesTheOldMasterWhileThePidFileNamesAnotherProcess) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  Process other({"/bin/sleep", "30"});
  const std::string oldbin = ferry.pid_file() + ".oldbin";
  ASSERT_EQ(::rename(ferry.pid_file().c_str(), oldbin.c_str()), 0);
  ferry.dir().write("ferry.pid", std::to_string(other.pid()) + "\n");
  const Finished reopen = ferry.command("reopen");
  EXPECT_EQ(reopen.exit_code, 0) << reopen.err;
  EXPECT_TRUE(ferry.wait_for_log("SIGUSR1: reopening logs")) << ferry.log();
  ASSERT_EQ(::rename(oldbin.c_str(), ferry.pid_file().c_str()), 0);
}

}  // namespace
}  // namespace ferry::test
