// End-to-end tests of the client-facing controls through the real binary: access rules (also
// against the address a PROXY header carries), max_conns_per_client across two workers and
// after a worker is killed, the worker_connections limit, and an access-log line for every way
// a session can end.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
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

using std::chrono::milliseconds;
using std::chrono::seconds;

ProxySpec proxy(const std::string& name, const std::string& listen, int backend_port,
                const std::string& extra) {
  return {name, {listen}, loopback(backend_port), extra};
}

std::string config(int workers, const std::vector<ProxySpec>& proxies,
                   const std::string& top = "") {
  return config_text("worker_processes = " + std::to_string(workers) + ";\n" + top, proxies);
}

// A session that gets through: the echo comes back.
bool served(int fd, const std::string& text = "ping") {
  return fd >= 0 && echo_round_trip(fd, text);
}

TEST(AccessRulesTest, FirstMatchDecidesForIpv4AndIpv6Clients) {
  EchoServer backend;
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  const int v4 = free_port();
  const int v6 = free_port();
  const std::string log = "access_log = \"" + access + "\"; ";
  FerryInstance ferry(config(
      1, {proxy("v4", "127.0.0.1:" + std::to_string(v4), backend.port(),
                log + "access = [ \"deny 127.0.0.2\", \"allow 127.0.0.0/16\", \"deny all\" ];"),
          proxy("v6", "[::1]:" + std::to_string(v6), backend.port(),
                log + "access = [ \"allow 127.0.0.1\", \"deny ::1/128\", \"allow all\" ];")}));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  const int ok1 = connect_from("127.0.0.1", "127.0.0.1", v4);
  EXPECT_TRUE(served(ok1)) << "127.0.0.1 matches allow 127.0.0.0/16";
  const int ok3 = connect_from("127.0.0.3", "127.0.0.1", v4);
  EXPECT_TRUE(served(ok3)) << "127.0.0.3 matches allow 127.0.0.0/16";
  const int accepted = backend.accepted();
  const int denied2 = connect_from("127.0.0.2", "127.0.0.1", v4);
  ASSERT_GE(denied2, 0);
  EXPECT_TRUE(closed_by_peer(denied2, seconds(3))) << "deny 127.0.0.2 comes first";
  const int denied_far = connect_from("127.1.0.1", "127.0.0.1", v4);
  ASSERT_GE(denied_far, 0);
  EXPECT_TRUE(closed_by_peer(denied_far, seconds(3))) << "outside /16: deny all";
  const int denied6 = connect_from("", "::1", v6);
  ASSERT_GE(denied6, 0);
  EXPECT_TRUE(closed_by_peer(denied6, seconds(3))) << "deny ::1/128";
  EXPECT_EQ(backend.accepted(), accepted) << "a denied client never reaches the server";
  EXPECT_TRUE(served(ok1, "still here")) << "the others are not disturbed";
  for (int fd : {ok1, ok3, denied2, denied_far, denied6}) ::close(fd);

  ASSERT_TRUE(eventually([&] { return count_of(read_file(access), " denied\n") == 3; }))
      << read_file(access);
  const std::string text = read_file(access);
  EXPECT_NE(text.find("127.0.0.2:"), std::string::npos) << text;
  EXPECT_NE(text.find("[::1]:"), std::string::npos) << text;
}

TEST(AccessRulesTest, RulesApplyToTheSenderAndToTheAddressItsProxyHeaderCarries) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(
      config(1, {proxy("pp", "127.0.0.1:" + std::to_string(port), backend.port(),
                       "accept_proxy_protocol = true; access_log = \"off\"; "
                       "access = [ \"allow 127.0.0.1\", \"allow 10.0.0.0/8\", \"deny all\" ];")}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const int inside = connect_from("127.0.0.1", "127.0.0.1", port);
  ASSERT_TRUE(send_all(inside, "PROXY TCP4 10.1.2.3 127.0.0.1 5555 80\r\n"));
  EXPECT_TRUE(served(inside)) << "10.1.2.3 matches allow 10.0.0.0/8";
  const int outside = connect_from("127.0.0.1", "127.0.0.1", port);
  ASSERT_TRUE(send_all(outside, "PROXY TCP4 192.0.2.1 127.0.0.1 5555 80\r\n"));
  EXPECT_TRUE(closed_by_peer(outside, seconds(3))) << "192.0.2.1: deny all";
  const int sender = connect_from("127.0.0.2", "127.0.0.1", port);
  ASSERT_GE(sender, 0);
  send_all(sender, "PROXY TCP4 10.1.2.3 127.0.0.1 5555 80\r\n");
  EXPECT_TRUE(closed_by_peer(sender, seconds(3)))
      << "the sender 127.0.0.2 is checked before its header is believed";
  for (int fd : {inside, outside, sender}) ::close(fd);
}

// Issue 17: a host holds a whole IPv6 /64 and may use any address of it, so
// max_conns_per_client counts per /64 by default (client_ipv6_prefix). Loopback has one IPv6
// address, so the clients come as the addresses of PROXY headers from a trusted sender.
TEST(ClientLimitTest, Ipv6ClientsOfOneSlash64ShareOneCount) {
  EchoServer backend;
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  const int by64 = free_port();
  const int by128 = free_port();
  const std::string common =
      "accept_proxy_protocol = true; accept_proxy_protocol_from = "
      "\"127.0.0.1\"; max_conns_per_client = 1; access_log = \"" +
      access + "\"; ";
  FerryInstance ferry(
      config(1, {proxy("by64", "127.0.0.1:" + std::to_string(by64), backend.port(), common),
                 proxy("by128", "127.0.0.1:" + std::to_string(by128), backend.port(),
                       common + "client_ipv6_prefix = 128;")}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  auto from = [&](int port, const std::string& ip) {
    const int fd = connect_from("127.0.0.1", "127.0.0.1", port);
    if (fd >= 0) send_all(fd, "PROXY TCP6 " + ip + " 2001:db8::80 5000 80\r\n");
    return fd;
  };

  const int first = from(by64, "2001:db8:1:2::1");
  EXPECT_TRUE(served(first));
  const int same64 = from(by64, "2001:db8:1:2:ffff::9");
  ASSERT_GE(same64, 0);
  EXPECT_TRUE(closed_by_peer(same64, seconds(3))) << "another address of the same /64";
  const int next64 = from(by64, "2001:db8:1:3::1");
  EXPECT_TRUE(served(next64)) << "another /64 is another client";

  const int exact = from(by128, "2001:db8:1:2::1");
  EXPECT_TRUE(served(exact));
  const int neighbour = from(by128, "2001:db8:1:2:ffff::9");
  EXPECT_TRUE(served(neighbour)) << "client_ipv6_prefix = 128 counts each address";
  for (int fd : {first, same64, next64, exact, neighbour}) ::close(fd);

  ASSERT_TRUE(eventually([&] { return count_of(read_file(access), " limit\n") == 1; }))
      << read_file(access);
  EXPECT_NE(read_file(access).find(" [2001:db8:1:2:ffff::9]:5000 "), std::string::npos)
      << read_file(access);
}

// The worker pids and, for each, how many TCP sockets it holds (listeners, channel, sessions).
std::vector<std::pair<pid_t, int>> sockets_per_worker(const FerryInstance& ferry) {
  std::vector<std::pair<pid_t, int>> out;
  for (pid_t pid : ferry.workers()) {
    int sockets = 0;
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
      std::error_code ignored;
      const auto target = std::filesystem::read_symlink(e.path(), ignored).string();
      if (target.rfind("socket:", 0) == 0) ++sockets;
    }
    out.emplace_back(pid, sockets);
  }
  return out;
}

std::vector<long> status_row(FerryInstance& ferry, const std::string& name) {
  return status_proxy_row(ferry.command("status").out, name);
}

TEST(ClientLimitTest, TheFourthSessionFromOneAddressIsRefusedAcrossWorkersAndKillRecovers) {
  EchoServer backend;
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  const int port = free_port();
  FerryInstance ferry(
      config(2, {proxy("lim", "127.0.0.1:" + std::to_string(port), backend.port(),
                       "max_conns_per_client = 3; access_log = \"" + access + "\";")}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_EQ(ferry.workers().size(), 2U);

  auto open_three = [&](std::vector<int>& fds) {
    for (int i = 0; i < 3; ++i) {
      const int fd = connect_from("127.0.0.1", "127.0.0.1", port);
      EXPECT_TRUE(served(fd)) << "session " << i + 1 << " of 3";
      fds.push_back(fd);
    }
  };
  std::vector<int> held;
  open_three(held);
  // Several tries: whichever worker takes it, the fourth is refused.
  for (int i = 0; i < 4; ++i) {
    const event::UniqueFd fourth(connect_from("127.0.0.1", "127.0.0.1", port));
    ASSERT_GE(fourth.get(), 0);
    EXPECT_TRUE(closed_by_peer(fourth.get(), seconds(3))) << "try " << i;
  }
  event::UniqueFd other(connect_from("127.0.0.2", "127.0.0.1", port));
  EXPECT_TRUE(served(other.get())) << "another address has its own count";
  other.reset();
  ASSERT_TRUE(eventually([&] { return count_of(read_file(access), " limit\n") == 4; }))
      << read_file(access);
  const std::vector<long> row = status_row(ferry, "lim");
  ASSERT_EQ(row.size(), 6U) << ferry.command("status").out;
  EXPECT_EQ(row[4], 4) << "limited";
  EXPECT_EQ(row[5], 0) << "no_connections";

  // kill -9 the worker holding most of the sessions (3 split 2-1 or 3-0: never even).
  auto counts = sockets_per_worker(ferry);
  ASSERT_EQ(counts.size(), 2U);
  const pid_t victim = counts[0].second > counts[1].second ? counts[0].first : counts[1].first;
  ::kill(victim, SIGKILL);
  ASSERT_TRUE(eventually([&] {
    const auto now = ferry.workers();
    return now.size() == 2 && now.count(victim) == 0;
  })) << ferry.log();
  // The survivors end normally; the killed worker's share must have been given back.
  for (int fd : held) ::close(fd);
  held.clear();
  // Until a full three are served again (the survivors' ends reach ferry a moment later);
  // those three are kept.
  ASSERT_TRUE(eventually([&] { return open_served("127.0.0.1", port, 3, held); }))
      << "the killed worker's sessions still count\n"
      << ferry.log();
  event::UniqueFd fourth(connect_from("127.0.0.1", "127.0.0.1", port));
  EXPECT_TRUE(closed_by_peer(fourth.get(), seconds(3))) << "and the limit still holds";
  fourth.reset();
  for (int fd : held) ::close(fd);
}

// worker_connections = 7: the channel to the master takes one connection, each session two,
// so three sessions fill the pool and the acceptor refuses the next clients; with 8, one is left
// for a client, and the session refuses it for want of one for the server. Either way the
// refusal is counted as no_connections, not as a per-client limit.
class WorkerConnectionsTest : public ::testing::TestWithParam<int> {};

TEST_P(WorkerConnectionsTest, AFullWorkerRefusesNewClientsAtOnceAndKeepsItsSessions) {
  EchoServer backend;
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  const int port = free_port();
  FerryInstance ferry(config(1,
                             {proxy("full", "127.0.0.1:" + std::to_string(port), backend.port(),
                                    "access_log = \"" + access + "\";")},
                             "worker_connections = " + std::to_string(GetParam()) + ";\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(connect_from("", "127.0.0.1", port));
    ASSERT_TRUE(served(held.back())) << "session " << i;
  }
  constexpr int kExtra = 20;
  for (int i = 0; i < kExtra; ++i) {
    const event::UniqueFd extra(connect_from("", "127.0.0.1", port));
    ASSERT_GE(extra.get(), 0);
    EXPECT_TRUE(closed_by_peer(extra.get(), seconds(2))) << "refused promptly, try " << i;
  }
  for (int fd : held) EXPECT_TRUE(served(fd, "unaffected"));
  EXPECT_TRUE(ferry.wait_for_log("worker_connections are not enough")) << ferry.log();
  ferry.drain_log();
  EXPECT_LE(count_of(ferry.log(), "worker_connections are not enough"), 2U)
      << "logged once per interval, not per client\n"
      << ferry.log();
  std::vector<long> row;
  EXPECT_TRUE(eventually([&] {
    row = status_row(ferry, "full");
    return row.size() == 6 && row[5] == kExtra;
  })) << ferry.command("status").out;
  if (row.size() == 6) {
    EXPECT_EQ(row[0], 3 + kExtra) << "accepted";
    EXPECT_EQ(row[1], kExtra) << "handled";
    EXPECT_EQ(row[4], 0) << "limited";
  }
  // The session that refused wrote its line; the acceptor, which had no session, none. (The
  // lines are written by the access log's own thread: waited for, not read once.)
  const std::size_t lines = GetParam() == 8 ? kExtra : 0;
  std::string log;
  EXPECT_TRUE(eventually([&] {
    log = read_file(access);
    return count_of(log, " no_connections\n") == lines;
  })) << log;
  EXPECT_EQ(count_of(log, " limit\n"), 0U) << log;
  ::close(held.back());
  held.pop_back();
  ASSERT_TRUE(eventually([&] {
    const event::UniqueFd fd(connect_from("", "127.0.0.1", port));
    const bool ok = served(fd.get());
    return ok;
  })) << "room again once a session ended";
  for (int fd : held) ::close(fd);
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, WorkerConnectionsTest, ::testing::Values(7, 8));

// A PROXY-protocol session holds only its client's connection while it waits for the header,
// so the pool can be empty when it opens the server side. worker_connections = 4: the channel
// and two waiting clients leave one, which the first to send its header takes for its server;
// the second then ends no_connections, not connect_failed (nothing is wrong with the server).
TEST(WorkerConnectionsAtConnectTest, APoolFoundEmptyWhenTheServerSideOpensEndsNoConnections) {
  EchoServer backend;
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  const int port = free_port();
  FerryInstance ferry(
      config(1,
             {proxy("pp", "127.0.0.1:" + std::to_string(port), backend.port(),
                    "accept_proxy_protocol = true; access_log = \"" + access + "\";")},
             "worker_connections = 4;\n"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const event::UniqueFd first(connect_from("127.0.0.1", "127.0.0.1", port));
  event::UniqueFd second(connect_from("127.0.0.1", "127.0.0.1", port));
  ASSERT_TRUE(first.valid() && second.valid());
  std::vector<long> row;
  ASSERT_TRUE(eventually([&] {
    row = status_row(ferry, "pp");
    return row.size() == 6 && row[0] == 2 && row[2] == 2;
  })) << "both clients wait for their header\n"
      << ferry.command("status").out;
  const std::string header = "PROXY TCP4 192.0.2.1 127.0.0.1 1111 80\r\n";
  ASSERT_TRUE(send_all(first.get(), header));
  EXPECT_TRUE(served(first.get())) << ferry.log();
  ASSERT_TRUE(send_all(second.get(), header + "ping"));
  EXPECT_TRUE(closed_by_peer(second.get(), seconds(3)));
  second.reset();
  std::string log;
  EXPECT_TRUE(eventually([&] {
    log = read_file(access);
    return count_of(log, " no_connections\n") == 1;
  })) << log;
  EXPECT_EQ(count_of(log, "connect_failed"), 0U) << log;
  EXPECT_TRUE(eventually([&] {
    row = status_row(ferry, "pp");
    return row.size() == 6 && row[5] == 1;
  })) << ferry.command("status").out;
  EXPECT_TRUE(served(first.get(), "still served"))
      << "the session that got the connection keeps it";
}

TEST(AccessLogTest, EveryWayASessionEndsIsLogged) {
  EchoServer backend;
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  const std::string log = "access_log = \"" + access + "\"; ";
  // A server that resets every connection once it has read something.
  int reset_port = 0;
  event::UniqueFd resetter(listen_on("127.0.0.1", reset_port));
  const int refused = free_port();  // nothing listens there
  const int p_plain = free_port();
  const int p_idle = free_port();
  const int p_refused = free_port();
  const int p_reset = free_port();
  const int p_rules = free_port();
  const int p_limit = free_port();
  const int p_pp = free_port();
  FerryInstance ferry(
      config(1, {proxy("plain", "127.0.0.1:" + std::to_string(p_plain), backend.port(), log),
                 proxy("idle", "127.0.0.1:" + std::to_string(p_idle), backend.port(),
                       log + "idle_timeout = \"300ms\";"),
                 proxy("refused", "127.0.0.1:" + std::to_string(p_refused), refused,
                       log + "connect_timeout = \"1s\";"),
                 proxy("reset", "127.0.0.1:" + std::to_string(p_reset), reset_port, log),
                 proxy("rules", "127.0.0.1:" + std::to_string(p_rules), backend.port(),
                       log + "access = [ \"deny all\" ];"),
                 proxy("limit", "127.0.0.1:" + std::to_string(p_limit), backend.port(),
                       log + "max_conns_per_client = 1;"),
                 proxy("pp", "127.0.0.1:" + std::to_string(p_pp), backend.port(),
                       log + "accept_proxy_protocol = true;")}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  auto wait_for = [&](const std::string& status) {
    return eventually(
        [&] { return read_file(access).find(" " + status + "\n") != std::string::npos; });
  };

  int fd = connect_from("", "127.0.0.1", p_plain);
  ASSERT_TRUE(served(fd));
  ::close(fd);
  EXPECT_TRUE(wait_for("closed")) << read_file(access);

  fd = connect_from("", "127.0.0.1", p_idle);
  ASSERT_TRUE(served(fd));
  EXPECT_TRUE(closed_by_peer(fd, seconds(3)));
  ::close(fd);
  EXPECT_TRUE(wait_for("idle_timeout")) << read_file(access);

  fd = connect_from("", "127.0.0.1", p_refused);
  EXPECT_TRUE(closed_by_peer(fd, seconds(5)));
  ::close(fd);
  EXPECT_TRUE(wait_for("connect_failed")) << read_file(access);

  fd = connect_from("", "127.0.0.1", p_reset);
  ASSERT_TRUE(send_all(fd, "x"));
  event::UniqueFd server_side(accept_within(resetter.get(), seconds(5)));
  ASSERT_GE(server_side.get(), 0);
  EXPECT_EQ(read_exactly(server_side.get(), 1, seconds(5)), "x");
  const linger abort{1, 0};
  ::setsockopt(server_side.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  server_side.reset();
  EXPECT_TRUE(closed_by_peer(fd, seconds(3)));
  ::close(fd);
  EXPECT_TRUE(wait_for("upstream_reset")) << read_file(access);

  fd = connect_from("", "127.0.0.1", p_plain);
  ASSERT_TRUE(served(fd));
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  ::close(fd);
  EXPECT_TRUE(wait_for("client_reset")) << read_file(access);

  fd = connect_from("", "127.0.0.1", p_rules);
  EXPECT_TRUE(closed_by_peer(fd, seconds(3)));
  ::close(fd);
  EXPECT_TRUE(wait_for("denied")) << read_file(access);

  event::UniqueFd first(connect_from("", "127.0.0.1", p_limit));
  ASSERT_TRUE(served(first.get()));
  fd = connect_from("", "127.0.0.1", p_limit);
  EXPECT_TRUE(closed_by_peer(fd, seconds(3)));
  ::close(fd);
  EXPECT_TRUE(wait_for("limit")) << read_file(access);

  fd = connect_from("", "127.0.0.1", p_pp);
  send_all(fd, "NOT A HEADER\r\n");
  EXPECT_TRUE(closed_by_peer(fd, seconds(3)));
  ::close(fd);
  EXPECT_TRUE(wait_for("bad_proxy_protocol")) << read_file(access);

  // `first` is still open: a fast stop ends it, and its line is written before the exit.
  ASSERT_EQ(ferry.command("stop").exit_code, 0);
  EXPECT_EQ(ferry.wait().exit_code, 0);
  first.reset();
  resetter.reset();
  EXPECT_TRUE(wait_for("shutdown")) << read_file(access);

  // One line per session, each with the spec's fields: time, client, listen, upstream, bytes
  // from and to the client, duration, ending.
  const std::string text = read_file(access);
  std::istringstream lines(text);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    EXPECT_EQ(f.size(), 8U) << line;
  }
  EXPECT_EQ(n, 9) << text;
}

TEST(AccessLogTest, ReopenStartsANewFileAfterRotation) {
  EchoServer backend;
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  const int port = free_port();
  FerryInstance ferry(config(1, {proxy("web", "127.0.0.1:" + std::to_string(port), backend.port(),
                                       "access_log = \"" + access + "\";")}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  int fd = connect_from("", "127.0.0.1", port);
  ASSERT_TRUE(served(fd, "before"));
  ::close(fd);
  ASSERT_TRUE(eventually([&] { return count_of(read_file(access), " closed\n") == 1; }));
  std::filesystem::rename(access, access + ".1");
  ASSERT_EQ(ferry.command("reopen").exit_code, 0);
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(access); }))
      << "the worker reopens its access log";
  fd = connect_from("", "127.0.0.1", port);
  ASSERT_TRUE(served(fd, "after"));
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return count_of(read_file(access), " closed\n") == 1; }))
      << read_file(access);
  EXPECT_EQ(count_of(read_file(access + ".1"), " closed\n"), 1U);
}

}  // namespace
}  // namespace ferry::test
