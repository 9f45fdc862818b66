// Host names of upstream servers, resolved through a test DNS server in a sandbox with its own
// resolv.conf and /etc/hosts (tests/support/dns_server.h), so no test depends on the machine's:
// lookups cut short by a stop or reload, names with several addresses, names that do not
// resolve yet, and a master that keeps answering while a DNS server does not.
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/dns_server.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string one_server_config(const std::string& address, int listen_port,
                              const std::string& resolve_interval = "100ms") {
  return config_text(
      "worker_processes = 1;",
      {{.listen = {loopback(listen_port)}, .upstream = "app", .extra = "access_log = \"off\";"}},
      {upstream_of({{address, ""}}, "resolve_interval = \"" + resolve_interval + "\";")});
}

// Counts the occurrences of `what` in `text`.
std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = 0; (at = text.find(what, at)) != std::string::npos; ++at) ++n;
  return n;
}

// execv makes a program dumpable again: a master (here a plain start; a binary upgrade's new
// master alike, holding the old one's listeners) is out of reach of its own uid from the first,
// not only once its configuration is read (a DNS lookup there can take seconds).
TEST(ResolveTest, TheMasterIsNotDumpableWhileItReadsItsConfiguration) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to start the master as another user";
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  const uid_t uid = nobody->pw_uid;
  const gid_t gid = nobody->pw_gid;
  DnsServer dns;
  dns.set_mode(DnsServer::Mode::silent);  // the lookup at start waits for glibc's timeout
  TempDir dir;
  const std::string conf = dir.write(
      "ferry.conf", "pid_file = \"" + dir.path() + "/ferry.pid\";\n" +
                        one_server_config("slow.test:" + std::to_string(free_port()), free_port()));
  ASSERT_EQ(::chown(dir.path().c_str(), uid, gid), 0);
  ASSERT_EQ(::chmod(conf.c_str(), 0644), 0);
  std::vector<std::string> argv = resolv_sandbox(dns, HostsLayout::ipv4_only, dir.path());
  argv.insert(argv.end(),
              {"/usr/bin/setpriv", "--reuid=" + std::to_string(uid),
               "--regid=" + std::to_string(gid), "--clear-groups", ferry_binary(), "-c", conf});
  Process master(argv);
  ASSERT_TRUE(eventually([&] { return dns.queries() > 0; })) << master.stderr_so_far();
  const int err = open_errno_as(uid, gid, "/proc/" + std::to_string(master.pid()) + "/mem");
  EXPECT_TRUE(err == EACCES || err == EPERM)
      << "open(/proc/MASTER/mem) during the lookup: " << std::strerror(err);
  // Yama (ptrace_scope >= 1) refuses that open anyway: the kernel's own mark of a process that
  // is not dumpable is its /proc files (mem among them) owned by root, whoever it runs as.
  struct stat st {};
  ASSERT_EQ(::stat(("/proc/" + std::to_string(master.pid()) + "/mem").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0U) << "the master (uid " << uid << ") is dumpable during the lookup";
  EXPECT_TRUE(children_of(master.pid()).empty()) << "looked at only once the workers ran";
  master.signal(SIGTERM);
  master.wait(seconds(20));
}

// A worker that stops (QUIT, or a reload replacing it) while getaddrinfo runs on its thread
// pool must join the pool before it frees the lookups the answer is written into (ASan sees the
// write otherwise).
class StopDuringLookup : public ::testing::TestWithParam<bool> {};

TEST_P(StopDuringLookup, TheWorkerJoinsItsResolverThreadsFirst) {
  const bool by_reload = GetParam();
  DnsServer dns;
  dns.set("app.test", {"127.0.0.1"});
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(one_server_config("app.test:" + std::to_string(backend.port()), port),
                      "debug");
  ferry.set_launcher(resolv_sandbox(dns, HostsLayout::ipv4_only, ferry.dir().path()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_TRUE(ferry.wait_for_log("resolved, unchanged")) << ferry.log();

  // From now on a lookup hangs in the pool until glibc's one-second timeout.
  dns.set_mode(DnsServer::Mode::silent);
  const int before = dns.queries();
  ASSERT_TRUE(eventually([&] { return dns.queries() > before; })) << ferry.log();
  if (by_reload) {
    ferry.rewrite(one_server_config("127.0.0.1:" + std::to_string(backend.port()), port));
    ferry.signal(SIGHUP);
    ASSERT_TRUE(ferry.wait_for_log(") exited with code", seconds(10))) << ferry.log();
  } else {
    ferry.signal(SIGQUIT);
    const Finished f = ferry.wait(seconds(10));
    EXPECT_EQ(f.exit_code, 0) << f.err;
  }
  ferry.drain_log();
  EXPECT_EQ(ferry.log().find("AddressSanitizer"), std::string::npos) << ferry.log();
  EXPECT_EQ(ferry.log().find("killed by signal"), std::string::npos) << ferry.log();
  EXPECT_NE(ferry.log().find(") exited with code 0"), std::string::npos) << ferry.log();
}

INSTANTIATE_TEST_SUITE_P(ResolveTest, StopDuringLookup, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Reload" : "Quit"; });

// `localhost` as a server, under both /etc/hosts layouts: on Debian's, getaddrinfo returns ::1
// first while the backend listens on 127.0.0.1 only; every address of the name is a server, so
// sessions reach the backend either way. Re-resolving every resolve_interval happens off the
// loop (on the worker's thread pool) while sessions go on.
class HostsLayouts : public ::testing::TestWithParam<HostsLayout> {};

TEST_P(HostsLayouts, ALocalhostServerIsReachedAndResolvedAgainOffTheLoop) {
  DnsServer dns;
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(one_server_config("localhost:" + std::to_string(backend.port()), port),
                      "debug");
  ferry.set_launcher(resolv_sandbox(dns, GetParam(), ferry.dir().path()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const auto until = std::chrono::steady_clock::now() + milliseconds(500);
  int sessions = 0;
  while (std::chrono::steady_clock::now() < until) {
    event::UniqueFd fd(connect_to_port(port));
    ASSERT_GE(fd.get(), 0);
    ASSERT_TRUE(echo_round_trip(fd.get(), "by name")) << ferry.log();
    fd.reset();
    ++sessions;
    ferry.drain_log();
  }
  EXPECT_EQ(backend.accepted(), sessions);
  EXPECT_GE(count_of(ferry.log(), "resolved, unchanged"), 2U)
      << "localhost should have been re-resolved every 100 ms:\n"
      << ferry.log();
}

INSTANTIATE_TEST_SUITE_P(ResolveTest, HostsLayouts,
                         ::testing::Values(HostsLayout::ipv4_only, HostsLayout::ipv6_first),
                         [](const auto& info) {
                           return info.param == HostsLayout::ipv6_first ? "Ipv6First" : "Ipv4Only";
                         });

// A name that does not resolve does not stop the proxy: the upstream's other server serves,
// and the name's addresses join once it resolves.
TEST(ResolveTest, AnUnresolvableServerIsAWarningAndJoinsOnceItResolves) {
  DnsServer dns;
  EchoServer backend;
  EchoServer other;
  const int port = free_port();
  FerryInstance ferry(config_text(
      "worker_processes = 1;",
      {{.listen = {loopback(port)}, .upstream = "app", .extra = "access_log = \"off\";"}},
      {upstream_of({{"later.test:" + std::to_string(backend.port()), ""}, server_at(other.port())},
                   "resolve_interval = \"100ms\";")}));
  const auto sandbox = resolv_sandbox(dns, HostsLayout::ipv4_only, ferry.dir().path());
  std::vector<std::string> check = sandbox;
  check.insert(check.end(), {ferry_binary(), "-t", "-c", ferry.conf()});
  const Finished t = run_program(check);
  EXPECT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.err.find("later.test"), std::string::npos) << t.err;

  ferry.set_launcher(sandbox);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_NE(ferry.log().find("stays unavailable until the name resolves"), std::string::npos)
      << ferry.log();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(served_through(port)) << ferry.log();
  EXPECT_EQ(backend.accepted(), 0);
  EXPECT_EQ(other.accepted(), 4);

  dns.set("later.test", {"127.0.0.1"});
  ASSERT_TRUE(ferry.wait_for_log("later.test:" + std::to_string(backend.port()) +
                                 " now resolves to 127.0.0.1"))
      << ferry.log();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(served_through(port)) << ferry.log();
  EXPECT_EQ(backend.accepted(), 2) << "round robin over both servers";
}

// The only server's name does not resolve: ferry starts, clients fail until it resolves (and
// with resolve_interval "0" it is still retried, every Resolver::kUnresolvedRetry).
class OnlyServerUnresolved : public ::testing::TestWithParam<std::string> {};

TEST_P(OnlyServerUnresolved, ClientsFailUntilItResolves) {
  DnsServer dns;
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(
      one_server_config("later.test:" + std::to_string(backend.port()), port, GetParam()));
  ferry.set_launcher(resolv_sandbox(dns, HostsLayout::ipv4_only, ferry.dir().path()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_FALSE(served_through(port));
  dns.set("later.test", {"127.0.0.1"});
  EXPECT_TRUE(eventually([&] { return served_through(port); }, seconds(10))) << ferry.log();
}

INSTANTIATE_TEST_SUITE_P(ResolveTest, OnlyServerUnresolved, ::testing::Values("100ms", "0"),
                         [](const auto& info) {
                           return info.param == "0" ? "IntervalZero" : "Interval100ms";
                         });

// resolve_required keeps nginx's strict rule for operators who want it.
TEST(ResolveTest, ResolveRequiredRefusesAnUnresolvableName) {
  DnsServer dns;
  FerryInstance ferry(config_text(
      "",
      {{.listen = {loopback(free_port())}, .upstream = "app", .extra = "access_log = \"off\";"}},
      {upstream_of({{"later.test:80", ""}}, "resolve_required = true;")}));
  std::vector<std::string> check = resolv_sandbox(dns, HostsLayout::ipv4_only, ferry.dir().path());
  check.insert(check.end(), {ferry_binary(), "-t", "-c", ferry.conf()});
  const Finished t = run_program(check);
  EXPECT_NE(t.exit_code, 0) << t.err;
  EXPECT_NE(t.err.find("resolve_required"), std::string::npos) << t.err;
}

// Every address of a name is a server, and re-resolution adds and removes them.
TEST(ResolveTest, ReResolutionAddsAndRemovesAddresses) {
  DnsServer dns;
  dns.set("app.test", {"127.0.0.3"});  // nothing listens there
  EchoServer backend;
  const int port = free_port();
  const std::string server = "app.test:" + std::to_string(backend.port());
  FerryInstance ferry(one_server_config(server, port));
  ferry.set_launcher(resolv_sandbox(dns, HostsLayout::ipv4_only, ferry.dir().path()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_FALSE(served_through(port));

  dns.set("app.test", {"127.0.0.3", "127.0.0.1"});
  ASSERT_TRUE(ferry.wait_for_log(server + " now resolves to")) << ferry.log();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(served_through(port)) << "failover to the added address";

  dns.set("app.test", {"127.0.0.3"});
  ASSERT_TRUE(eventually([&] {
    ferry.drain_log();
    return count_of(ferry.log(), " now resolves to ") == 2;
  })) << ferry.log();
  const int before = backend.accepted();
  EXPECT_FALSE(served_through(port));
  EXPECT_EQ(backend.accepted(), before) << "the removed address is not used";
}

// One upstream of three names (each set to 127.0.0.1 in `dns`) at `backend`, re-resolved hourly;
// the proxy "web" on `port`, and `more_proxies` after it.
std::string three_names_config(DnsServer& dns, int backend, int port,
                               const std::vector<ProxySpec>& more_proxies = {}) {
  std::vector<ServerSpec> servers;
  for (const char* name : {"one.test", "two.test", "three.test"}) {
    dns.set(name, {"127.0.0.1"});
    servers.push_back({std::string(name) + ":" + std::to_string(backend), ""});
  }
  std::vector<ProxySpec> proxies = {
      {.listen = {loopback(port)}, .upstream = "app", .extra = "access_log = \"off\";"}};
  proxies.insert(proxies.end(), more_proxies.begin(), more_proxies.end());
  return config_text("worker_processes = 1;", proxies,
                     {upstream_of(servers, "resolve_interval = \"1h\";")});
}

// The master reads a reloaded configuration, and resolves its names, off its event loop: while
// the DNS server does not answer, `-s status` and QUIT are still answered at once — and `-s`,
// run where the same DNS server answers, does not resolve the names itself.
TEST(ResolveTest, TheMasterAnswersWhileAReloadWaitsForTheDnsServer) {
  DnsServer dns;
  EchoServer backend;
  FerryInstance ferry(three_names_config(dns, backend.port(), free_port()));
  const auto sandbox = resolv_sandbox(dns, HostsLayout::ipv4_only, ferry.dir().path());
  ferry.set_launcher(sandbox);
  ferry.set_command_launcher(sandbox);
  ASSERT_TRUE(ferry.start()) << ferry.log();

  // Each name now costs glibc its one-second timeout: the reload's load takes about 3 s.
  dns.set_mode(DnsServer::Mode::silent);
  const int before = dns.queries();
  ferry.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return dns.queries() > before; })) << ferry.log();

  auto started = std::chrono::steady_clock::now();
  const Finished status = ferry.command("status");
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(1)) << "-s status was held up";

  started = std::chrono::steady_clock::now();
  ferry.signal(SIGQUIT);
  EXPECT_TRUE(ferry.wait_for_log("SIGQUIT: graceful stop", seconds(1))) << ferry.log();
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(1)) << "QUIT was held up";
  const Finished f = ferry.wait(seconds(15));
  EXPECT_EQ(f.exit_code, 0) << f.err;
}

// A worker that dies while a reload's file is read (its thread waiting on the DNS server) is
// replaced only once that thread is gone: a fork beside it would leave the child any lock the
// thread held (the resolver's, the allocator's) held for ever. Before the fix the killed worker
// was replaced at once, beside the reading thread.
TEST(ResolveTest, AWorkerDiedDuringAReadIsReplacedOnlyOnceTheReadThreadIsGone) {
  DnsServer dns;
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(three_names_config(dns, backend.port(), port));
  const auto sandbox = resolv_sandbox(dns, HostsLayout::ipv4_only, ferry.dir().path());
  ferry.set_launcher(sandbox);
  ferry.set_command_launcher(sandbox);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const pid_t master = ferry.master();
  const std::set<pid_t> first = ferry.workers();
  ASSERT_EQ(first.size(), 1U);

  // Each name now costs glibc its one-second timeout: the read takes about 3 s.
  dns.set_mode(DnsServer::Mode::silent);
  const int before = dns.queries();
  ferry.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return dns.queries() > before; })) << ferry.log();
  ASSERT_EQ(::kill(*first.begin(), SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return ferry.workers().count(*first.begin()) == 0; }));
  // Workers read before threads: a worker seen while the thread still runs was forked beside it.
  bool thread_seen_gone = false;
  const auto limit = std::chrono::steady_clock::now() + seconds(15);
  while (!thread_seen_gone && std::chrono::steady_clock::now() < limit) {
    const std::size_t workers = ferry.workers().size();
    const std::size_t threads = thread_count(master);
    ASSERT_FALSE(workers > 0 && threads > 1) << "a worker was forked beside the reload thread\n"
                                             << ferry.log();
    thread_seen_gone = threads == 1;
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_TRUE(thread_seen_gone) << ferry.log();
  dns.set_mode(DnsServer::Mode::answer);
  EXPECT_TRUE(eventually([&] { return ferry.workers().size() == 1; }, seconds(10))) << ferry.log();
}

// A reload asked for while the file is being read waits for that read; when the file read is
// rejected (an error in it, or an address it cannot listen on), the waiting reload still runs,
// and finds the file fixed.
enum class BadFile { invalid_setting, address_in_use };
class QueuedBehindARejectedRead : public ::testing::TestWithParam<BadFile> {};

TEST_P(QueuedBehindARejectedRead, TheQueuedReloadStillRuns) {
  DnsServer dns;
  EchoServer backend;
  const HeldPort taken;
  const int port = free_port();
  const std::string good = three_names_config(dns, backend.port(), port);
  FerryInstance ferry(good);
  const auto sandbox = resolv_sandbox(dns, HostsLayout::ipv4_only, ferry.dir().path());
  ferry.set_launcher(sandbox);
  ferry.set_command_launcher(sandbox);
  ASSERT_TRUE(ferry.start()) << ferry.log();

  ferry.rewrite(GetParam() == BadFile::invalid_setting
                    ? good + "no_such_setting = 1;\n"
                    : three_names_config(dns, backend.port(), port,
                                         {{"taken", {loopback(taken.port())}, "app", ""}}));
  // Each answer now takes 800 ms: reading the file takes over two seconds.
  dns.set_delay(milliseconds(800));
  const int before = dns.queries();
  ferry.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return dns.queries() > before; })) << ferry.log();
  ferry.rewrite(good);  // the file being read was read before its names were looked up
  Process reload(ferry.command_line("reload"));
  const Finished f = reload.wait(seconds(20));
  EXPECT_EQ(f.exit_code, 0) << f.err << ferry.log();
  ferry.drain_log();
  const auto asked = ferry.log().find("reload requested on the control socket");
  const auto rejected = ferry.log().find("reload rejected");
  ASSERT_NE(rejected, std::string::npos) << ferry.log();
  EXPECT_LT(asked, rejected) << "the second reload should have been asked for during the read";
  EXPECT_NE(ferry.log().find("reload complete: generation 2 serving"), std::string::npos)
      << ferry.log();
}

// WINCH (to the old master of a binary upgrade) while the file is being read stops the workers
// for good: the end of the read starts none (nor does it, after a HUP brought the old workers
// back, start a second generation).
class WinchDuringARead : public ::testing::TestWithParam<bool> {};

TEST_P(WinchDuringARead, TheReadStartsNoWorkers) {
  const bool hup_after = GetParam();
  DnsServer dns;
  EchoServer backend;
  FerryInstance ferry(three_names_config(dns, backend.port(), free_port()));
  ferry.set_launcher(resolv_sandbox(dns, HostsLayout::ipv4_only, ferry.dir().path()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_GT(ferry.upgrade(1), 0) << ferry.log();  // before the read: USR2 is refused during one

  dns.set_delay(milliseconds(800));  // reading the file takes over two seconds
  const int before = dns.queries();
  ferry.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return dns.queries() > before; })) << ferry.log();
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] { return ferry.own_workers().empty(); })) << ferry.log();
  if (hup_after) {
    ferry.signal(SIGHUP);
    ASSERT_TRUE(ferry.wait_for_log("SIGHUP: restarting the workers")) << ferry.log();
  }
  EXPECT_TRUE(ferry.wait_for_log("its result is dropped")) << ferry.log();
  EXPECT_TRUE(eventually([&] { return ferry.own_workers().size() == (hup_after ? 1U : 0U); }))
      << ferry.log();
  ferry.drain_log();
  EXPECT_EQ(ferry.log().find("generation 3"), std::string::npos) << ferry.log();
  EXPECT_EQ(ferry.own_workers().size(), hup_after ? 1U : 0U) << ferry.log();
}

INSTANTIATE_TEST_SUITE_P(ResolveTest, WinchDuringARead, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "ThenHup" : "Only"; });

INSTANTIATE_TEST_SUITE_P(ResolveTest, QueuedBehindARejectedRead,
                         ::testing::Values(BadFile::invalid_setting, BadFile::address_in_use),
                         [](const auto& info) {
                           return info.param == BadFile::invalid_setting ? "InvalidSetting"
                                                                         : "AddressInUse";
                         });

}  // namespace
}  // namespace ferry::test
