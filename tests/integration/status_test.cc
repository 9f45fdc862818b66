// End-to-end tests of the status endpoint and `ferry -s status` through the real binary: exact
// totals after sessions through two workers (whichever worker answers), promtool's verdict on
// /metrics, JSON that parses with the documented keys, a server seen down then up, totals that
// never go back across a kill -9 and a reload, and bad or slow HTTP clients answered 400 or cut
// off without slowing proxied sessions.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <set>
#include <sstream>
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

struct Http {
  int status = 0;
  std::string headers;
  std::string body;
};

// One request on a fresh connection; the whole answer (the server closes, or Content-Length).
Http request(int port, const std::string& raw) {
  Http r;
  event::UniqueFd fd(connect_from("", "127.0.0.1", port));
  if (!fd.valid() || !send_all(fd.get(), raw)) {
    return r;
  }
  std::string all;
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string part = read_exactly(fd.get(), 65536, milliseconds(200));
    all += part;
    const auto end = all.find("\r\n\r\n");
    if (end != std::string::npos) {
      const auto cl = all.find("Content-Length: ");
      if (cl != std::string::npos && cl < end) {
        const std::size_t want = std::stoul(all.substr(cl + 16));
        if (all.size() >= end + 4 + want) break;
      }
    }
    if (part.empty() && closed_by_peer(fd.get(), milliseconds(1))) break;
  }
  fd.reset();
  if (all.rfind("HTTP/1.", 0) == 0 && all.size() > 12) r.status = std::stoi(all.substr(9, 3));
  const auto end = all.find("\r\n\r\n");
  if (end != std::string::npos) {
    r.headers = all.substr(0, end);
    r.body = all.substr(end + 4);
  }
  return r;
}

Http get(int port, const std::string& path) {
  return request(port, "GET " + path + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
}

// The value of a Prometheus sample line `name{labels} value` (-1 when absent).
double sample(const std::string& metrics, const std::string& series) {
  const auto at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + series.size() + 2));
}

// python3 evaluates `expr` on the parsed JSON `d` and prints it (the JSON must parse).
std::string json_eval(const std::string& json, const std::string& expr) {
  TempDir dir;
  const std::string file = dir.write("status.json", json);
  const Finished f =
      run_program({"python3", "-c",
                   "import json,sys; d=json.load(open(sys.argv[1])); print(" + expr + ")", file});
  if (f.exit_code != 0) return "(python3: " + f.err + ")";
  return f.out.substr(0, f.out.find_last_not_of('\n') + 1);
}

// `upstreams`: what one_server() gives, or none for a proxy naming "host:port".
std::string config(int workers, int port, int status_port,
                   const std::vector<UpstreamSpec>& upstreams,
                   const std::string& upstream = "app") {
  return config_text(
             "worker_processes = " + std::to_string(workers) + ";",
             {{.listen = {loopback(port)}, .upstream = upstream, .extra = "access_log = \"off\";"}},
             upstreams) +
         "status = { listen = \"" + loopback(status_port) +
         "\"; access = [ \"allow 127.0.0.1\", \"deny all\" ]; };\n";
}

std::vector<UpstreamSpec> one_server(int backend_port, const std::string& extra = "") {
  return {upstream_of({server_at(backend_port)}, extra)};
}

TEST(StatusTest, ExactTotalsAfterSessionsThroughTwoWorkers) {
  EchoServer backend;
  const int port = free_port();
  const int status_port = free_port();
  FerryInstance ferry(config(2, port, status_port, one_server(backend.port())));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  constexpr int kSessions = 40;
  std::uint64_t sent = 0;
  for (int i = 0; i < kSessions; ++i) {
    const event::UniqueFd fd(connect_from("", "127.0.0.1", port));
    const std::string text(100 + static_cast<std::size_t>(i), 'x');
    ASSERT_TRUE(echo_round_trip(fd.get(), text)) << i;
    sent += text.size();
  }
  const std::string web = "{proxy=\"web\"}";
  ASSERT_TRUE(eventually([&] {
    return sample(get(status_port, "/metrics").body, "ferry_proxy_handled_total" + web) ==
           kSessions;
  })) << get(status_port, "/metrics").body;
  // Several answers (either worker may take the connection): all the same totals.
  for (int i = 0; i < 6; ++i) {
    const std::string m = get(status_port, "/metrics").body;
    EXPECT_EQ(sample(m, "ferry_proxy_accepted_total" + web), kSessions) << m;
    EXPECT_EQ(sample(m, "ferry_proxy_handled_total" + web), kSessions);
    EXPECT_EQ(sample(m, "ferry_proxy_active_sessions" + web), 0);
    EXPECT_EQ(sample(m, "ferry_proxy_received_bytes_total" + web), static_cast<double>(sent));
    EXPECT_EQ(sample(m, "ferry_proxy_sent_bytes_total" + web), static_cast<double>(sent));
    const std::string server =
        "{upstream=\"app\",server=\"127.0.0.1:" + std::to_string(backend.port()) + "\"}";
    EXPECT_EQ(sample(m, "ferry_upstream_server_sessions_total" + server), kSessions) << m;
  }
  const Http status = get(status_port, "/status");
  EXPECT_EQ(status.status, 200);
  EXPECT_NE(status.headers.find("application/json"), std::string::npos) << status.headers;
  EXPECT_EQ(json_eval(status.body, "d['proxies']['web']['accepted']"), std::to_string(kSessions));
  EXPECT_EQ(json_eval(status.body, "d['proxies']['web']['bytes_from_clients']"),
            std::to_string(sent));
  EXPECT_EQ(json_eval(status.body, "d['proxies']['web']['active']"), "0");
  EXPECT_EQ(json_eval(status.body, "len(d['workers'])"), "2");
  EXPECT_EQ(json_eval(status.body, "d['upstreams']['app']['servers'][0]['state']"), "up");
  EXPECT_EQ(json_eval(status.body, "sorted(d.keys())"),
            "['generation', 'pid', 'proxies', 'reloads', 'routes', 'started', 'upstreams', "
            "'uptime_seconds', 'version', 'workers']");

  // An open session is active, in the endpoint and in `ferry -s status`.
  const event::UniqueFd open(connect_from("", "127.0.0.1", port));
  ASSERT_TRUE(echo_round_trip(open.get(), "held"));
  EXPECT_TRUE(eventually([&] {
    return sample(get(status_port, "/metrics").body, "ferry_proxy_active_sessions" + web) == 1;
  }));
  const Finished table = run_program({ferry_binary(), "-s", "status", "-c", ferry.conf()});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("web"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(std::to_string(kSessions + 1)), std::string::npos) << table.out;
}

TEST(StatusTest, PromtoolAcceptsTheMetrics) {
  if (run_program({"sh", "-c", "command -v promtool"}).exit_code != 0) {
    GTEST_SKIP() << "promtool (Debian package prometheus) is not installed";
  }
  EchoServer backend;
  const int port = free_port();
  const int status_port = free_port();
  FerryInstance ferry(config(2, port, status_port, one_server(backend.port())));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  event::UniqueFd fd(connect_from("", "127.0.0.1", port));
  ASSERT_TRUE(echo_round_trip(fd.get(), "one"));
  fd.reset();
  const Http m = get(status_port, "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.headers.find("text/plain; version=0.0.4"), std::string::npos) << m.headers;
  TempDir dir;
  const std::string file = dir.write("metrics.txt", m.body);
  const Finished check = run_program({"sh", "-c", "promtool check metrics < " + file});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err << "\n" << m.body;
}

TEST(StatusTest, AServerKilledShowsDownThenUpWithinTheCheckInterval) {
  auto backend = std::make_unique<EchoServer>();
  const int backend_port = backend->port();
  const int port = free_port();
  const int status_port = free_port();
  FerryInstance ferry(
      config(1, port, status_port,
             one_server(backend_port,
                        "health_check = { interval = \"200ms\"; timeout = \"200ms\"; fails = 1; "
                        "passes = 1; };")));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string server =
      "{upstream=\"app\",server=\"127.0.0.1:" + std::to_string(backend_port) + "\"}";
  auto up = [&] {
    return sample(get(status_port, "/metrics").body, "ferry_upstream_server_up" + server);
  };
  ASSERT_TRUE(eventually([&] { return up() == 1; }, seconds(5)));
  backend.reset();
  EXPECT_TRUE(eventually([&] { return up() == 0; }, seconds(5)))
      << get(status_port, "/metrics").body;
  EXPECT_EQ(
      json_eval(get(status_port, "/status").body, "d['upstreams']['app']['servers'][0]['state']"),
      "down");
  backend = std::make_unique<EchoServer>(backend_port);
  EXPECT_TRUE(eventually([&] { return up() == 1; }, seconds(5)))
      << get(status_port, "/metrics").body;
  EXPECT_EQ(json_eval(get(status_port, "/status").body,
                      "d['upstreams']['app']['servers'][0]['health']['last']"),
            "ok");
}

// A server that max_fails took out of rotation shows `failed` (not `up`) on /status and
// /metrics until a session gets through to it again.
TEST(StatusTest, AServerFailedByPassiveChecksShowsFailedUntilASessionGetsThrough) {
  const int backend_port = free_port();  // nothing listens there yet
  const int port = free_port();
  const int status_port = free_port();
  FerryInstance ferry(
      config(1, port, status_port,
             {upstream_of({server_at(backend_port, "max_fails = 1; fail_timeout = \"60s\";")})}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string server =
      "{upstream=\"app\",server=\"127.0.0.1:" + std::to_string(backend_port) + "\"";
  const auto state = [&] {
    return json_eval(get(status_port, "/status").body,
                     "d['upstreams']['app']['servers'][0]['state']");
  };
  EXPECT_EQ(state(), "up");
  event::UniqueFd refused(connect_from("", "127.0.0.1", port));
  EXPECT_FALSE(echo_round_trip(refused.get(), "nobody there"));
  refused.reset();
  EXPECT_TRUE(eventually([&] { return state() == "failed"; })) << state();
  const std::string m = get(status_port, "/metrics").body;
  EXPECT_EQ(sample(m, "ferry_upstream_server_up" + server + "}"), 0) << m;
  EXPECT_EQ(sample(m, "ferry_upstream_server_state" + server + ",state=\"failed\"}"), 1) << m;
  EXPECT_EQ(sample(m, "ferry_upstream_server_state" + server + ",state=\"up\"}"), 0) << m;

  EchoServer back(backend_port);
  event::UniqueFd fd(connect_from("", "127.0.0.1", port));
  EXPECT_TRUE(echo_round_trip(fd.get(), "back"));
  fd.reset();
  EXPECT_TRUE(eventually([&] { return state() == "up"; })) << state();
}

TEST(StatusTest, TotalsNeverGoBackAcrossAKilledWorkerAndAReload) {
  EchoServer backend;
  const int port = free_port();
  const int status_port = free_port();
  const std::string body = config(2, port, status_port, one_server(backend.port()));
  FerryInstance ferry(body);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string web = "{proxy=\"web\"}";
  auto handled = [&] {
    return sample(get(status_port, "/metrics").body, "ferry_proxy_handled_total" + web);
  };
  auto sessions = [&](int n) {
    for (int i = 0; i < n; ++i) {
      const event::UniqueFd fd(connect_from("", "127.0.0.1", port));
      EXPECT_TRUE(echo_round_trip(fd.get(), "some bytes"));
    }
  };
  sessions(10);
  ASSERT_TRUE(eventually([&] { return handled() == 10; }));
  ::kill(*ferry.workers().begin(), SIGKILL);
  ASSERT_TRUE(eventually([&] { return ferry.workers().size() == 2 && handled() >= 0; }));
  EXPECT_EQ(handled(), 10) << "a killed worker's counts are kept";
  sessions(5);
  ASSERT_TRUE(eventually([&] { return handled() == 15; }));
  ferry.rewrite(body);
  ASSERT_EQ(ferry.command("reload").exit_code, 0);
  EXPECT_EQ(handled(), 15) << "a reload keeps the totals";
  sessions(5);
  EXPECT_TRUE(eventually([&] { return handled() == 20; }));
  const std::string m = get(status_port, "/metrics").body;
  EXPECT_EQ(sample(m, "ferry_reloads_total{result=\"ok\"}"), 1) << m;
}

TEST(StatusTest, BytesCountAsTheyMoveAndAKilledWorkersSessionsStayBalanced) {
  EchoServer backend;
  const int port = free_port();
  const int status_port = free_port();
  FerryInstance ferry(config(1, port, status_port, one_server(backend.port())));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string web = "{proxy=\"web\"}";
  event::UniqueFd open(connect_from("", "127.0.0.1", port));
  const std::string block(100'000, 'b');
  ASSERT_TRUE(echo_round_trip(open.get(), block));
  // Still open: its bytes are already counted.
  EXPECT_TRUE(eventually([&] {
    const std::string m = get(status_port, "/metrics").body;
    return sample(m, "ferry_proxy_received_bytes_total" + web) == 100'000 &&
           sample(m, "ferry_proxy_sent_bytes_total" + web) == 100'000;
  })) << get(status_port, "/metrics").body;
  ::kill(*ferry.workers().begin(), SIGKILL);
  EXPECT_TRUE(closed_by_peer(open.get(), seconds(5)));
  open.reset();
  ASSERT_TRUE(eventually([&] { return ferry.workers().size() == 1; }));
  std::string m;
  EXPECT_TRUE(eventually([&] {
    m = get(status_port, "/metrics").body;
    return sample(m, "ferry_proxy_accepted_total" + web) == 1 &&
           sample(m, "ferry_proxy_handled_total" + web) == 1 &&
           sample(m, "ferry_proxy_active_sessions" + web) == 0;
  })) << "the killed worker's open session ended with it\n"
      << m;
  EXPECT_EQ(sample(m, "ferry_proxy_received_bytes_total" + web), 100'000) << m;
}

// `ferry -s status`'s row for proxy `name`: accepted, handled, active (empty when absent).
std::vector<long> status_row(FerryInstance& ferry, const std::string& name) {
  std::istringstream lines(ferry.command("status").out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string first;
    std::vector<long> row(3);
    if (fields >> first >> row[0] >> row[1] >> row[2] && first == name) return row;
  }
  return {};
}

// A worker that writes garbage over every statistics word it can (the test-only hook, for the
// first worker only): the registry stays read-only to it, and the master, which renders `-s
// status` and folds what a reaped worker leaves, keeps serving, says what it dropped, and counts
// the honest worker that replaces it exactly.
TEST(StatusTest, AWorkerWritingGarbageOverTheStatisticsDoesNotReachTheMaster) {
  EchoServer backend;
  const int port = free_port();
  const int status_port = free_port();
  FerryInstance ferry(config(1, port, status_port, one_server(backend.port())));
  ferry.set_options({.env = {"FERRY_TEST_SCRIBBLE_STATS=1"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_TRUE(ferry.wait_for_log("the registry stays read-only (mprotect: Permission denied)"))
      << ferry.log();
  const pid_t master = ferry.master();
  const auto sessions = [&](int n) {
    for (int i = 0; i < n; ++i) {
      const event::UniqueFd fd(connect_from("", "127.0.0.1", port));
      EXPECT_TRUE(echo_round_trip(fd.get(), "some bytes"));
    }
  };
  sessions(3);
  const std::set<pid_t> before = ferry.workers();
  ASSERT_EQ(before.size(), 1u);
  ::kill(*before.begin(), SIGKILL);
  ASSERT_TRUE(
      ferry.wait_for_log("statistics counter(s) that cannot be true: its counts are "
                         "dropped"))
      << ferry.log();
  ASSERT_TRUE(eventually([&] {
    const std::set<pid_t> now = ferry.workers();
    return now.size() == 1 && now != before;
  }));
  // The hook was the first worker's only: its replacement is honest, and exactly its sessions
  // count (the first worker's were dropped with its garbage).
  sessions(3);
  std::vector<long> row;
  EXPECT_TRUE(eventually([&] {
    row = status_row(ferry, "web");
    return row == std::vector<long>{3, 3, 0};
  })) << ferry.command("status").out;
  EXPECT_EQ(ferry.master(), master);
  EXPECT_EQ(::kill(master, 0), 0) << "the master is alive";
  EXPECT_EQ(get(status_port, "/metrics").status, 200);
}

// The connections gauge follows what a worker holds, not only session starts and ends: status
// clients that have sent nothing yet show within a second or so.
TEST(StatusTest, TheConnectionsGaugeIsCurrent) {
  EchoServer backend;
  const int port = free_port();
  const int status_port = free_port();
  FerryInstance ferry(config(1, port, status_port, one_server(backend.port())));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::set<pid_t> workers = ferry.workers();
  ASSERT_EQ(workers.size(), 1u);
  const std::string pid = std::to_string(*workers.begin());
  const auto connections = [&] {
    std::istringstream lines(ferry.command("status").out);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream fields(line);
      std::string first, generation, up;
      long n = -1;
      if (fields >> first >> generation >> up >> n && first == pid) return n;
    }
    return -1L;
  };
  std::vector<int> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(connect_from("", "127.0.0.1", status_port));
  EXPECT_TRUE(eventually([&] { return connections() == 4; }, seconds(3)))
      << "the channel to the master and 3 status clients\n"
      << ferry.command("status").out;
  for (int fd : idle) ::close(fd);
  EXPECT_TRUE(eventually([&] { return connections() == 1; }, seconds(3)))
      << ferry.command("status").out;
}

TEST(StatusTest, BadAndSlowHttpClientsDoNotSlowProxiedSessions) {
  EchoServer backend;
  const int port = free_port();
  const int status_port = free_port();
  FerryInstance ferry(config(1, port, status_port, one_server(backend.port())));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  event::UniqueFd good(connect_from("", "127.0.0.1", port));
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::atomic<bool> failed{false};
  std::thread streamer([&] {
    const std::string block(8192, 's');
    while (!stop.load()) {
      if (!echo_round_trip(good.get(), block)) {
        failed = true;
        return;
      }
      ++rounds;
    }
  });

  EXPECT_EQ(get(status_port, "/nope").status, 404);
  EXPECT_EQ(request(status_port, "POST /status HTTP/1.1\r\nHost: x\r\n\r\n").status / 100, 4);
  EXPECT_EQ(request(status_port, "GARBAGE\r\n\r\n").status, 400);
  EXPECT_EQ(request(status_port, "GET /status HTTP/1.1\r\nBad Header\r\n\r\n").status, 400);
  const Http huge = request(
      status_port, "GET /status HTTP/1.1\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n");
  EXPECT_TRUE(huge.status == 400 || huge.status == 431) << huge.status;

  // One byte a second: cut off by the read timeout, while /status answers meanwhile.
  const event::UniqueFd slow(connect_from("", "127.0.0.1", status_port));
  std::thread dripper([&] {
    const std::string req = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
    for (char ch : req) {
      if (::send(slow.get(), &ch, 1, MSG_NOSIGNAL) != 1) return;
      if (closed_by_peer(slow.get(), seconds(1))) return;
    }
  });
  EXPECT_EQ(get(status_port, "/status").status, 200) << "answered beside the slow client";
  const auto dripping_since = std::chrono::steady_clock::now();
  dripper.join();
  EXPECT_LT(std::chrono::steady_clock::now() - dripping_since, seconds(20))
      << "the slow client was cut off";

  const int before = rounds.load();
  EXPECT_TRUE(eventually([&] { return rounds.load() > before + 10; }));
  stop = true;
  streamer.join();
  EXPECT_FALSE(failed.load()) << "the proxied session was disturbed";
  good.reset();
}

// A registry that holds 2 proxies and 2 servers (test hook), and reloads that each bring a new
// proxy and a new upstream: the newest are counted and shown, the oldest give their places up
// (once no worker of theirs is left) and their totals show under "(reclaimed)".
TEST(StatusTest, FreshNamesBeyondAFullRegistryReclaimTheOldestAndAreCounted) {
  EchoServer backend;
  const int port = free_port();
  const auto body = [&](int k) {
    const std::string n = std::to_string(k);
    return config_text("worker_processes = 1;",
                       {{.name = "p" + n,
                         .listen = {loopback(port)},
                         .upstream = "u" + n,
                         .extra = "access_log = \"off\";"}},
                       {upstream_of({server_at(backend.port())}, "", "u" + n)});
  };
  FerryInstance ferry(body(1));
  ferry.set_options({.env = {"FERRY_TEST_STATS_CAPACITY=2:2"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const auto session = [&] {
    const event::UniqueFd fd(connect_to_port(port));
    const bool ok = fd.valid() && echo_round_trip(fd.get(), "ping");
    return ok;
  };
  for (int k = 1; k <= 6; ++k) {
    if (k > 1) {
      const std::set<pid_t> old = ferry.workers();
      ferry.rewrite(body(k));
      ASSERT_EQ(ferry.command("reload").exit_code, 0) << ferry.log();
      // The last generation's worker gone: its names are free to reclaim at the next reload.
      ASSERT_TRUE(eventually([&] {
        const std::set<pid_t> now = ferry.workers();
        return now.size() == 1 && old.count(*now.begin()) == 0;
      })) << ferry.log();
    }
    ASSERT_TRUE(session());
    ASSERT_TRUE(eventually([&] {
      const auto row = status_proxy_row(ferry.command("status").out, "p" + std::to_string(k));
      return row.size() == 6 && row[0] == 1 && row[1] == 1;
    })) << "p"
        << k << " is counted\n"
        << ferry.command("status").out;
  }
  const std::string status = ferry.command("status").out;
  const auto p5 = status.find("p5 (removed)");
  ASSERT_NE(p5, std::string::npos) << status;
  EXPECT_EQ(std::stol(status.substr(p5 + 12)), 1) << status;
  EXPECT_EQ(status.find("p3 "), std::string::npos) << status;
  // The table shows "(reclaimed) (removed)": its counts follow two words.
  const auto reclaimed = status.find("(reclaimed) (removed)");
  ASSERT_NE(reclaimed, std::string::npos) << status;
  EXPECT_EQ(std::stol(status.substr(reclaimed + 21)), 4) << "p1 to p4's sessions\n" << status;
  EXPECT_NE(status.find("u6 "), std::string::npos) << status;
  EXPECT_EQ(status.find("u3 "), std::string::npos) << status;
  // The reclaimed servers' sessions: upstream and address both "(reclaimed)", state removed.
  std::istringstream lines(status);
  bool found = false;
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string upstream, address, state, admin, weight;
    long sessions = 0;
    fields >> upstream >> address >> state >> admin >> weight >> sessions;
    if (upstream == "(reclaimed)" && address == "(reclaimed)") {
      found = true;
      EXPECT_EQ(state, "removed");
      EXPECT_EQ(sessions, 4) << status;
    }
  }
  EXPECT_TRUE(found) << status;

  // A binary upgrade adds the old master's reclaimed totals to the new one's: one line still.
  ASSERT_EQ(ferry.command("upgrade").exit_code, 0) << ferry.log();
  const KillOnExit new_master{pid_in(ferry.pid_file())};
  EXPECT_EQ(ferry.wait().exit_code, 0);
  std::string after;
  EXPECT_TRUE(eventually([&] {
    after = ferry.command("status").out;
    const auto at = after.find("(reclaimed) (removed)");
    return at != std::string::npos && std::stol(after.substr(at + 21)) == 4 &&
           after.find("(reclaimed) (removed)", at + 1) == std::string::npos;
  })) << after;
}

}  // namespace
}  // namespace ferry::test
