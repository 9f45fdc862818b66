// End-to-end tests of the operator's runtime server commands (`ferry ctl`, issue 21): drain,
// maint with --kill, ready, weights, servers added and removed under load, what lasts across a
// reload and a restart (state_file and its precedence), who may write, malformed commands, and
// what /status, /metrics and `-s status` show.
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
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
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string server_name(int port) { return "app/127.0.0.1:" + std::to_string(port); }

// Two workers, proxy "web" on `port` to upstream "app" of `backends`.
std::string config(int port, const std::vector<int>& backends, const std::string& top = "",
                   const std::string& proxy_extra = "access_log = \"off\";",
                   const std::vector<std::string>& server_extra = {}) {
  std::vector<ServerSpec> servers;
  for (std::size_t i = 0; i < backends.size(); ++i) {
    servers.push_back(server_at(backends[i], i < server_extra.size() ? server_extra[i] : ""));
  }
  return config_text("worker_processes = 2;\n" + top,
                     {{.listen = {loopback(port)}, .upstream = "app", .extra = proxy_extra}},
                     {upstream_of(servers)});
}

// `show servers --json` evaluated by python3 with `expr` on the list `d`.
std::string servers_eval(FerryInstance& ferry, const std::string& expr) {
  const Finished shown = ferry.ctl("show servers --json");
  if (shown.exit_code != 0) return "(ctl: " + shown.err + ")";
  TempDir dir;
  const std::string file = dir.write("servers.json", shown.out);
  const Finished f =
      run_program({"python3", "-c",
                   "import json,sys; d=json.load(open(sys.argv[1])); print(" + expr + ")", file});
  if (f.exit_code != 0) return "(python3: " + f.err + ")";
  return f.out.substr(0, f.out.find_last_not_of('\n') + 1);
}

std::string field_of(FerryInstance& ferry, int port, const std::string& field) {
  return servers_eval(ferry, "[s['" + field + "'] for s in d if s['server'] == '127.0.0.1:" +
                                 std::to_string(port) + "'][0]");
}

// Holds sessions through `port` until `backend` has `want` of them (at most 40 tries).
std::vector<event::UniqueFd> hold_until(int port, const EchoServer& backend, int want) {
  std::vector<event::UniqueFd> held;
  for (int i = 0; i < 40 && backend.accepted() < want; ++i) {
    event::UniqueFd fd(connect_to_port(port));
    if (!fd.valid() || !echo_round_trip(fd.get(), "hold " + std::to_string(i))) break;
    held.push_back(std::move(fd));
  }
  return held;
}

TEST(RuntimeServersTest, ADrainedServerTakesNoNewSessionsAndItsOpenOnesGoOn) {
  EchoServer a, b;
  const int port = free_port();
  FerryInstance ferry(config(port, {a.port(), b.port()}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<event::UniqueFd> held = hold_until(port, b, 2);
  ASSERT_EQ(b.accepted(), 2);

  const Finished drained = ferry.ctl("set server " + server_name(b.port()) + " state drain");
  ASSERT_EQ(drained.exit_code, 0) << drained.err;
  // Answered once every worker applied it: the very next sessions see it.
  EXPECT_NE(drained.out.find("applied by 2 worker(s)"), std::string::npos) << drained.out;
  const int before = b.accepted();
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(served_through(port, "new " + std::to_string(i)));
  EXPECT_EQ(b.accepted(), before) << "a drained server took a new session";
  for (std::size_t i = 0; i < held.size(); ++i) {
    EXPECT_TRUE(echo_round_trip(held[i].get(), "still " + std::to_string(i))) << i;
  }
  EXPECT_EQ(field_of(ferry, b.port(), "admin"), "drain");
  EXPECT_EQ(field_of(ferry, b.port(), "effective_weight"), "0");
  EXPECT_TRUE(ferry.wait_for_log("set server " + server_name(b.port()) + " state drain"));

  ASSERT_EQ(ferry.ctl("set server " + server_name(b.port()) + " state ready").exit_code, 0);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(served_through(port, "back " + std::to_string(i)));
  EXPECT_GE(b.accepted(), before + 4) << "ready brings it back";
}

TEST(RuntimeServersTest, MaintWithKillClosesItsSessionsWithTheirOwnEndReason) {
  EchoServer a, b;
  const int port = free_port();
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  FerryInstance ferry(config(port, {a.port(), b.port()}, "", "access_log = \"" + access + "\";"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<event::UniqueFd> held = hold_until(port, b, 3);
  ASSERT_EQ(b.accepted(), 3);
  const std::size_t on_a = held.size() - 3;

  const Finished maint = ferry.ctl("set server " + server_name(b.port()) + " state maint --kill");
  ASSERT_EQ(maint.exit_code, 0) << maint.err;
  std::size_t closed = 0;
  for (auto& fd : held) {
    if (closed_by_peer(fd.get(), milliseconds(300))) ++closed;
  }
  EXPECT_EQ(closed, 3u);
  EXPECT_TRUE(eventually([&] { return count_of(read_file(access), " killed") == 3; }))
      << read_file(access);
  std::size_t alive = 0;
  for (auto& fd : held) alive += echo_round_trip(fd.get(), "alive") ? 1 : 0;
  EXPECT_EQ(alive, on_a);
  const int before = b.accepted();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(served_through(port));
  EXPECT_EQ(b.accepted(), before);
  EXPECT_EQ(field_of(ferry, b.port(), "admin"), "maint");
}

// In maintenance a server is not probed (it may be down on purpose); ready resumes the checks.
TEST(RuntimeServersTest, MaintPausesTheServersHealthChecks) {
  EchoServer a, b;
  const int port = free_port();
  std::string body = config(port, {a.port(), b.port()});
  const std::string upstream = "name = \"app\";";
  body.replace(body.find(upstream), upstream.size(),
               upstream + " health_check = { interval = \"100ms\"; timeout = \"1s\"; };");
  FerryInstance ferry(body);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_TRUE(eventually([&] { return b.accepted() >= 2; })) << "probed";
  ASSERT_EQ(ferry.ctl("set server " + server_name(b.port()) + " state maint").exit_code, 0);
  ASSERT_TRUE(ferry.wait_for_log("health checks of server 127.0.0.1:" + std::to_string(b.port()) +
                                 " paused (maint)"))
      << ferry.log();
  const int paused_at = b.accepted();
  // Ten intervals: at most the probe under way when it paused.
  const auto until = std::chrono::steady_clock::now() + milliseconds(1000);
  while (std::chrono::steady_clock::now() < until) ::usleep(50'000);
  EXPECT_LE(b.accepted(), paused_at + 1) << "probed in maintenance";
  const int probes_of_a = a.accepted();
  EXPECT_GE(probes_of_a, 5) << "the other server is still probed";
  ASSERT_EQ(ferry.ctl("set server " + server_name(b.port()) + " state ready").exit_code, 0);
  EXPECT_TRUE(eventually([&] { return b.accepted() >= paused_at + 3; })) << "probes resume";
}

TEST(RuntimeServersTest, WeightsShiftTheDistributionOver2000Connections) {
  EchoServer a, b;
  const int port = free_port();
  FerryInstance ferry(config(port, {a.port(), b.port()}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_EQ(ferry.ctl("set server " + server_name(b.port()) + " weight 3").exit_code, 0);
  EXPECT_EQ(field_of(ferry, b.port(), "weight"), "3");
  constexpr int kConnections = 2000;
  for (int i = 0; i < kConnections; ++i) ASSERT_TRUE(served_through(port, "w")) << i;
  const double share = static_cast<double>(b.accepted()) / kConnections;
  EXPECT_NEAR(share, 0.75, 0.05) << a.accepted() << " / " << b.accepted();
}

TEST(RuntimeServersTest, ServersAddedAndRemovedUnderLoadLoseNoClient) {
  EchoServer a, b, c;
  const int port = free_port();
  FerryInstance ferry(config(port, {a.port(), b.port()}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::atomic<bool> stop{false};
  std::atomic<int> served{0}, failed{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 2; ++t) {
    clients.emplace_back([&] {
      while (!stop.load()) (served_through(port, "load") ? served : failed)++;
    });
  }
  ASSERT_TRUE(eventually([&] { return served.load() > 100; }));
  const Finished added = ferry.ctl("add server app/127.0.0.1:" + std::to_string(c.port()));
  EXPECT_EQ(added.exit_code, 0) << added.err;
  EXPECT_TRUE(eventually([&] { return c.accepted() > 20; })) << "the added server serves";
  const Finished removed = ferry.ctl("del server " + server_name(b.port()));
  EXPECT_EQ(removed.exit_code, 0) << removed.err;
  const int b_after = b.accepted();
  const int served_after = served.load();
  ASSERT_TRUE(eventually([&] { return served.load() > served_after + 200; }));
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(b.accepted(), b_after) << "a removed server took new sessions";
  EXPECT_EQ(field_of(ferry, c.port(), "added"), "True");
  EXPECT_EQ(field_of(ferry, b.port(), "admin"), "removed");
}

TEST(RuntimeServersTest, ChangesLastAcrossAReloadAndARestartWithTheDocumentedPrecedence) {
  EchoServer a, b, c;
  const int port = free_port();
  TempDir state;
  const std::string state_file = state.path() + "/servers.state";
  const std::string top = "state_file = \"" + state_file + "\";\n";
  {
    FerryInstance ferry(config(port, {a.port(), b.port()}, top));
    ASSERT_TRUE(ferry.start()) << ferry.log();
    ASSERT_EQ(ferry.ctl("set server " + server_name(a.port()) + " weight 5").exit_code, 0);
    ASSERT_EQ(ferry.ctl("set server " + server_name(b.port()) + " weight 7").exit_code, 0);
    ASSERT_EQ(ferry.ctl("set server " + server_name(b.port()) + " state drain").exit_code, 0);
    ASSERT_EQ(
        ferry.ctl("add server app/127.0.0.1:" + std::to_string(c.port()) + " weight 2").exit_code,
        0);
    // A reload keeps them all.
    ASSERT_EQ(ferry.command("reload").exit_code, 0) << ferry.log();
    EXPECT_EQ(field_of(ferry, a.port(), "weight"), "5");
    EXPECT_EQ(field_of(ferry, b.port(), "admin"), "drain");
    EXPECT_EQ(field_of(ferry, c.port(), "weight"), "2");
    // The configuration's weight of b edited: the edit wins over the older runtime weight; a's
    // entry untouched keeps its runtime weight.
    ferry.rewrite(
        config(port, {a.port(), b.port()}, top, "access_log = \"off\";", {"", "weight = 4;"}));
    ASSERT_EQ(ferry.command("reload").exit_code, 0) << ferry.log();
    EXPECT_EQ(field_of(ferry, a.port(), "weight"), "5");
    EXPECT_EQ(field_of(ferry, b.port(), "weight"), "4");
    EXPECT_EQ(field_of(ferry, b.port(), "admin"), "drain") << "the admin state stays";
    EXPECT_TRUE(ferry.wait_for_log("the configuration's weight 4 (edited since) wins"));
    ASSERT_EQ(ferry.command("stop").exit_code, 0);
    ferry.wait();
  }
  // A restart reads the state file.
  FerryInstance again(
      config(port, {a.port(), b.port()}, top, "access_log = \"off\";", {"", "weight = 4;"}));
  ASSERT_TRUE(again.start()) << again.log();
  EXPECT_EQ(field_of(again, a.port(), "weight"), "5");
  EXPECT_EQ(field_of(again, b.port(), "admin"), "drain");
  EXPECT_EQ(field_of(again, c.port(), "weight"), "2");
  const int before = b.accepted();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(served_through(port));
  EXPECT_EQ(b.accepted(), before) << "still drained after the restart";
  EXPECT_GT(c.accepted(), 0) << "the added server came back with the restart";
}

// Telling workers of a change is not telling them to stop: a reload after one still retires
// the old workers (they were taken for told already, and kept serving for ever).
TEST(RuntimeServersTest, AReloadAfterAChangeStillRetiresTheOldWorkers) {
  EchoServer a, b;
  const int port = free_port();
  FerryInstance ferry(config(port, {a.port(), b.port()}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::set<pid_t> old_workers = ferry.workers();
  ASSERT_EQ(ferry.ctl("set server " + server_name(b.port()) + " weight 2").exit_code, 0);
  ASSERT_EQ(ferry.command("reload").exit_code, 0) << ferry.log();
  EXPECT_TRUE(eventually([&] {
    for (pid_t w : ferry.workers()) {
      if (old_workers.contains(w)) return false;
    }
    return true;
  })) << ferry.log();
  EXPECT_EQ(field_of(ferry, b.port(), "weight"), "2");
}

// Readers (control_readers) may look but not change; each refusal is logged with uid and pid.
TEST(RuntimeServersTest, AWriteCommandFromAUidThatMayOnlyReadIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  EchoServer a, b;
  const int port = free_port();
  FerryInstance ferry(config(port, {a.port(), b.port()}, "control_readers = [\"nobody\"];\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_EQ(::chmod(ferry.dir().path().c_str(), 0755), 0);
  const std::string socket = ferry.pid_file().substr(0, ferry.pid_file().size() - 4) + ".ctl";
  ASSERT_EQ(::chmod(socket.c_str(), 0666), 0);
  // As nobody: the answer's first line.
  const auto as_nobody = [&](const std::string& line) {
    int pipe_fds[2];  // a socket pair: read_exactly() receives
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pipe_fds) != 0) {
      return std::string("(socketpair)");
    }
    const pid_t child = ::fork();
    if (child == 0) {
      ::close(pipe_fds[0]);
      if (::setgid(nobody->pw_gid) == -1 || ::setuid(nobody->pw_uid) == -1) ::_exit(3);
      const int fd = connect_unix(socket);
      if (fd == -1) ::_exit(4);
      (void)send_all(fd, line + "\n");
      const std::string reply = read_exactly(fd, 65536, seconds(5));
      (void)send_all(pipe_fds[1], reply);
      ::_exit(0);
    }
    ::close(pipe_fds[1]);
    const std::string reply = read_exactly(pipe_fds[0], 65536, seconds(10));
    ::close(pipe_fds[0]);
    ::waitpid(child, nullptr, 0);
    return reply;
  };
  EXPECT_EQ(as_nobody("show servers").rfind("ok ", 0), 0u);
  const std::string refused = as_nobody("set server " + server_name(b.port()) + " state drain");
  EXPECT_EQ(refused.rfind("error\nferry: refused: uid " + std::to_string(nobody->pw_uid), 0), 0u)
      << refused;
  EXPECT_EQ(as_nobody("reload").rfind("error\nferry: refused", 0), 0u);
  EXPECT_TRUE(ferry.wait_for_log("refused \"set server " + server_name(b.port()) +
                                 " state drain\": uid " + std::to_string(nobody->pw_uid)))
      << ferry.log();
  EXPECT_EQ(field_of(ferry, b.port(), "admin"), "ready") << "nothing changed";
}

TEST(RuntimeServersTest, MalformedCommandsGetOneClearErrorLineAndChangeNothing) {
  EchoServer a, b;
  const int port = free_port();
  FerryInstance ferry(config(port, {a.port(), b.port()}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string b_name = server_name(b.port());
  const std::string before = ferry.ctl("show servers --json").out;
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"set", "set what?"},
      {"set server", "set what?"},
      {"set server app", "is not UPSTREAM/SERVER"},
      {"set server app/127.0.0.1:1 state drain", "has no server"},
      {"set server nope/127.0.0.1:1 state drain", "no upstream named \"nope\""},
      {"set server " + b_name + " state sleepy", "is not a state"},
      {"set server " + b_name + " state removed", "is not a state"},
      {"set server " + b_name + " state drain --kill", "--kill goes with maint only"},
      {"set server " + b_name + " state drain extra", "unexpected \"extra\""},
      {"set server " + b_name + " weight 0", "out of range"},
      {"set server " + b_name + " weight 1001", "out of range"},
      {"set server " + b_name + " weight heavy", "is not a weight"},
      {"set server " + b_name + " colour red", "neither state nor weight"},
      {"add server app/not-an-address", ""},
      {"add server app/db.example:0", "port must be 1-65535"},
      {"add server " + b_name, "already has server"},
      {"add server app/127.0.0.1:9 weight", "unexpected \"weight\""},
      {"add server app/127.0.0.1:9 slow_start soon", ""},
      {"del server app/127.0.0.1:1", "has no server"},
      {"kill sessions", "kill what?"},
      {"show clients", "show what?"},
      {"show servers nope", "no upstream named \"nope\""},
      {"frobnicate", ""},
  };
  for (const auto& [line, why] : bad) {
    const Finished f = ferry.ctl(line);
    EXPECT_EQ(f.exit_code, 1) << line;
    EXPECT_EQ(f.err.rfind("ferry: ", 0), 0u) << line << ": " << f.err;
    EXPECT_EQ(count_of(f.err, "\n"), 1u) << line << ": " << f.err;
    if (!why.empty()) {
      EXPECT_NE(f.err.find(why), std::string::npos) << line << ": " << f.err;
    }
  }
  // A line past the limit, straight on the socket (as socat would send it).
  const std::string socket = ferry.pid_file().substr(0, ferry.pid_file().size() - 4) + ".ctl";
  event::UniqueFd fd(connect_unix(socket));
  ASSERT_TRUE(fd.valid());
  ASSERT_TRUE(send_all(fd.get(), "show servers " + std::string(2000, 'x') + "\n"));
  EXPECT_EQ(read_exactly(fd.get(), 4096, seconds(5)).rfind("error\nferry: a request line", 0), 0u);
  EXPECT_EQ(ferry.ctl("show servers --json").out, before) << "a bad command changed something";
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(served_through(port)) << "serving on";
}

// The change reaches every worker before the command returns; /status, /metrics and -s status
// show the admin state and the weights.
TEST(RuntimeServersTest, StatusMetricsAndStatusCommandShowAdminStateAndWeights) {
  EchoServer a, b;
  const int port = free_port();
  const int status_port = free_port();
  FerryInstance ferry(config(port, {a.port(), b.port()}) + "status = { listen = \"" +
                      loopback(status_port) + "\"; };\n");
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_EQ(ferry.ctl("set server " + server_name(b.port()) + " state maint").exit_code, 0);
  ASSERT_EQ(ferry.ctl("set server " + server_name(a.port()) + " weight 9").exit_code, 0);
  const std::string status = ferry.command("status").out;
  EXPECT_NE(status.find("maint"), std::string::npos) << status;
  EXPECT_NE(status.find("ADMIN"), std::string::npos) << status;

  const auto get = [&](const std::string& path) { return http_get(status_port, path); };
  const std::string json = get("/status");
  EXPECT_NE(json.find("\"admin\":\"maint\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"weight\":9"), std::string::npos) << json;
  const std::string metrics = get("/metrics");
  const std::string b_labels =
      "upstream=\"app\",server=\"127.0.0.1:" + std::to_string(b.port()) + "\"";
  EXPECT_NE(metrics.find("ferry_upstream_server_admin_state{" + b_labels + ",state=\"maint\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("ferry_upstream_server_effective_weight{" + b_labels + "} 0"),
            std::string::npos)
      << metrics;
}

}  // namespace
}  // namespace ferry::test
