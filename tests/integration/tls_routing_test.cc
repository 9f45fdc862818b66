// End-to-end tests of routing by the TLS ClientHello (passthrough, issue 22): real TLS servers
// (`openssl s_server`) behind ferry, reached by `openssl s_client` through the route its server
// name or ALPN picks; every refusal with its end reason; malformed, cut, oversized and stalled
// hellos beside a session that keeps streaming; a routed session moved by a reload.
#include <sys/socket.h>
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
#include "tests/support/tls_tools.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const std::string& i : items) out += (out.size() > 1 ? ", \"" : "\"") + i + "\"";
  return out + "]";
}

struct RouteSpec {
  std::string name;
  std::vector<std::string> server_name;
  std::vector<std::string> alpn;
  std::string upstream;
};

std::string routes_text(const std::vector<RouteSpec>& routes) {
  std::string out = "routes = (";
  for (std::size_t i = 0; i < routes.size(); ++i) {
    const RouteSpec& r = routes[i];
    out += i > 0 ? ", {" : "{";
    if (!r.name.empty()) out += " name = \"" + r.name + "\";";
    if (!r.server_name.empty()) out += " server_name = " + quoted_list(r.server_name) + ";";
    if (!r.alpn.empty()) out += " alpn = " + quoted_list(r.alpn) + ";";
    out += " upstream = \"" + r.upstream + "\"; }";
  }
  return out + ");";
}

// A proxy "tls" on `port` with `routes`, its default upstream `fallback` ("": none), and an
// access log in `log`.
std::string routing_config(int port, const std::string& fallback,
                           const std::vector<RouteSpec>& routes, const std::string& log,
                           const std::string& extra = "", int workers = 1) {
  ProxySpec p{.name = "tls",
              .listen = {loopback(port)},
              .upstream = fallback,
              .extra = "access_log = \"" + log + "\"; " + routes_text(routes) + " " + extra};
  std::string text = config_text("worker_processes = " + std::to_string(workers) + ";", {p});
  if (fallback.empty()) {  // config_text always writes one: a routing proxy may have none
    const std::string none = "upstream = \"\"; ";
    if (const auto at = text.find(none); at != std::string::npos) text.erase(at, none.size());
  }
  return text;
}

std::string status_listen(int port) {
  return "status = { listen = \"" + loopback(port) + "\"; };\n";
}

// Lines of the access log at `path` once `n` are there (bounded).
std::string access_lines(const std::string& path, std::size_t n) {
  eventually([&] { return count_of(read_file(path), "\n") >= n; });
  return read_file(path);
}

class TlsRoutingTest : public ::testing::Test {
 protected:
  TempDir dir;
  std::string log = dir.path() + "/access.log";
};

TEST_F(TlsRoutingTest, RoutesByServerNameToTlsServersWithoutTerminating) {
  std::vector<std::unique_ptr<TlsServer>> servers;
  for (const char* cn : {"backend-a", "backend-b", "backend-c"}) {
    const CertFiles cert = self_signed(dir.path(), cn);
    ASSERT_FALSE(cert.cert.empty()) << "openssl req failed";
    servers.push_back(std::make_unique<TlsServer>(free_port(), cert));
    ASSERT_TRUE(servers.back()->started()) << cn;
  }
  const int port = free_port();
  FerryInstance ferry(
      routing_config(port, loopback(servers[2]->port()),
                     {{"alpha", {"a.test"}, {}, loopback(servers[0]->port())},
                      {"beta", {"*.b.test", "exact.test"}, {}, loopback(servers[1]->port())}},
                     log));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  const struct {
    std::string sni;
    std::string backend;
    std::string logged;
  } cases[] = {
      {"a.test", "backend-a", "sni=a.test route=alpha"},
      {"A.Test", "backend-a", "sni=a.test route=alpha"},
      {"x.b.test", "backend-b", "sni=x.b.test route=beta"},
      {"deep.x.b.test", "backend-b", "sni=deep.x.b.test route=beta"},
      {"exact.test", "backend-b", "sni=exact.test route=beta"},
      {"b.test", "backend-c", "sni=b.test route=default"},  // "*.b.test" is not b.test itself
      {"", "backend-c", "sni=- route=default"},
  };
  std::size_t lines = 0;
  for (const auto& c : cases) {
    const Finished f = s_client(port, c.sni);
    EXPECT_NE(peer_subject(f).find(c.backend), std::string::npos)
        << "sni " << c.sni << ": " << f.out << f.err;
    const std::string logged = access_lines(log, ++lines);
    EXPECT_NE(logged.find(c.logged), std::string::npos) << c.sni << ": " << logged;
  }
}

TEST_F(TlsRoutingTest, RoutesByAlpnBeforeTheName) {
  const CertFiles a = self_signed(dir.path(), "backend-a");
  const CertFiles h2 = self_signed(dir.path(), "backend-h2");
  TlsServer plain(free_port(), a, {"http/1.1"});
  TlsServer http2(free_port(), h2, {"h2"});
  ASSERT_TRUE(plain.started() && http2.started());
  const int port = free_port();
  FerryInstance ferry(routing_config(
      port, "",
      {{"h2", {}, {"h2"}, loopback(http2.port())}, {"web", {"a.test"}, {}, loopback(plain.port())}},
      log));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  const Finished with_h2 = s_client(port, "a.test", {"h2", "http/1.1"});
  EXPECT_NE(peer_subject(with_h2).find("backend-h2"), std::string::npos) << with_h2.out;
  EXPECT_NE(with_h2.out.find("ALPN protocol: h2"), std::string::npos) << with_h2.out;
  const Finished without = s_client(port, "a.test", {"http/1.1"});
  EXPECT_NE(peer_subject(without).find("backend-a"), std::string::npos) << without.out;
  const std::string logged = access_lines(log, 2);
  EXPECT_NE(logged.find("sni=a.test route=h2"), std::string::npos) << logged;
  EXPECT_NE(logged.find("sni=a.test route=web"), std::string::npos) << logged;
}

// Without a default route each way of not being routed ends with a reason of its own, and the
// client's connection is closed without a byte reaching any server.
TEST_F(TlsRoutingTest, WithoutADefaultRouteEachRefusalHasItsOwnReason) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(routing_config(port, "",
                                     {{"alpha", {"a.test"}, {}, loopback(backend.port())}}, log,
                                     "preread_timeout = \"300ms\";"));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  const std::string hello = client_hello_bytes("other.test");
  ASSERT_FALSE(hello.empty());
  const struct {
    std::string sent;
    std::string reason;
  } cases[] = {
      {hello, " no_route sni=other.test route=-"},
      {"GET / HTTP/1.1\r\n\r\n", " not_tls sni=- route=-"},
      {std::string("\x16\x03\x01\x00\x40", 5) + std::string(64, 'x'), " bad_client_hello sni=-"},
      {hello.substr(0, 20), " preread_timeout sni=-"},  // then nothing more
  };
  std::size_t lines = 0;
  for (const auto& c : cases) {
    const event::UniqueFd fd(connect_to_port(port));
    ASSERT_TRUE(send_all(fd.get(), c.sent));
    EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5))) << c.reason;
    const std::string logged = access_lines(log, ++lines);
    EXPECT_NE(logged.find(c.reason), std::string::npos) << logged;
  }
  EXPECT_EQ(backend.accepted(), 0);
}

// A routed session is relayed byte for byte: the hello reaches the server unchanged, and what
// follows streams both ways.
bool routed_round_trip(int fd, const std::string& hello, int rounds) {
  if (!echo_round_trip(fd, hello)) return false;
  for (int i = 0; i < rounds; ++i) {
    if (!echo_round_trip(fd, "round " + std::to_string(i))) return false;
  }
  return true;
}

TEST_F(TlsRoutingTest, BadHellosDoNotDisturbAStreamingSession) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(routing_config(port, "",
                                     {{"alpha", {"a.test"}, {}, loopback(backend.port())}}, log,
                                     "preread_timeout = \"2s\";"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string hello = client_hello_bytes("a.test", {"h2"});
  ASSERT_GT(hello.size(), 100u);

  const event::UniqueFd good(connect_to_port(port));
  ASSERT_TRUE(routed_round_trip(good.get(), hello, 1));
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::atomic<bool> broken{false};
  std::thread streaming([&] {
    while (!stop && !broken) {
      if (!echo_round_trip(good.get(), std::string(4096, 'g'))) broken = true;
      ++rounds;
    }
  });

  // Stalled mid-hello: held open while everything else happens.
  std::vector<event::UniqueFd> stalled;
  for (std::size_t cut : {std::size_t{3}, std::size_t{5}, hello.size() / 2}) {
    stalled.emplace_back(connect_to_port(port));
    ASSERT_TRUE(send_all(stalled.back().get(), hello.substr(0, cut)));
  }
  // Cut at every length, then closed: each is its own bad_client_hello (or not_tls for none).
  for (std::size_t cut = 1; cut < hello.size(); ++cut) {
    const event::UniqueFd fd(connect_to_port(port));
    ASSERT_TRUE(send_all(fd.get(), hello.substr(0, cut)));
    ::shutdown(fd.get(), SHUT_WR);
    ASSERT_TRUE(closed_by_peer(fd.get(), seconds(5))) << "cut at " << cut;
  }
  // Garbage after a valid record header; a hello of more than 16 KiB (records of a handshake
  // that declares 20,000 bytes); a renegotiation-like second hello is the server's business.
  const std::string garbage = std::string("\x16\x03\x01\x02\x00", 5) + std::string(512, '\xff');
  std::string huge = std::string("\x16\x03\x01\x40\x00", 5) + std::string("\x01\x00\x4e\x20", 4);
  huge += std::string(0x4000 - 4, 'a') + std::string("\x16\x03\x01\x10\x00", 5) +
          std::string(0x1000, 'b');
  for (const std::string& bad : {garbage, huge}) {
    const event::UniqueFd fd(connect_to_port(port));
    send_all(fd.get(), bad);  // ferry may close before all of it is in
    EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5)));
  }
  for (const auto& fd : stalled) EXPECT_TRUE(closed_by_peer(fd.get(), seconds(10)));
  const int before = rounds.load();
  EXPECT_TRUE(eventually([&] { return rounds.load() > before + 10 || broken; }));
  stop = true;
  streaming.join();
  EXPECT_FALSE(broken) << "the good session broke";
  EXPECT_EQ(backend.accepted(), 1) << "only the good session reached the server";
  const std::string logged = read_file(log);
  EXPECT_EQ(count_of(logged, " preread_timeout "), 3u) << logged;
  EXPECT_EQ(count_of(logged, " not_tls "), 0u) << logged;
}

TEST_F(TlsRoutingTest, ARoutedSessionMovesOnReload) {
  EchoServer alpha;
  EchoServer other;
  const int port = free_port();
  const int status = free_port();
  const std::string body =
      routing_config(port, loopback(other.port()),
                     {{"alpha", {"a.test"}, {}, loopback(alpha.port())}}, log) +
      status_listen(status);
  FerryInstance ferry(body);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string hello = client_hello_bytes("a.test");
  const event::UniqueFd fd(connect_to_port(port));
  ASSERT_TRUE(routed_round_trip(fd.get(), hello, 2));

  const std::set<pid_t> before = ferry.workers();
  ASSERT_EQ(ferry.command("reload").exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    const std::set<pid_t> now = ferry.workers();
    return now.size() == 1 && now != before;
  })) << ferry.log();
  EXPECT_TRUE(routed_round_trip(fd.get(), "after", 3));
  // Counted once, where it is now: the old worker gave its counts to the new one.
  const std::string alpha_labels = "{proxy=\"tls\",route=\"alpha\"}";
  std::string metrics = http_get(status, "/metrics");
  EXPECT_NE(metrics.find("ferry_route_sessions_total" + alpha_labels + " 1\n"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("ferry_route_active_sessions" + alpha_labels + " 1\n"), std::string::npos)
      << metrics;
  ::shutdown(fd.get(), SHUT_WR);
  EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5)));
  EXPECT_TRUE(eventually([&] {
    metrics = http_get(status, "/metrics");
    return metrics.find("ferry_route_active_sessions" + alpha_labels + " 0\n") != std::string::npos;
  })) << metrics;
  EXPECT_NE(metrics.find("ferry_route_sessions_total{proxy=\"tls\",route=\"default\"} 0\n"),
            std::string::npos)
      << metrics;
  const std::string table = ferry.command("status").out;
  EXPECT_NE(table.find("ROUTE"), std::string::npos) << table;
  EXPECT_NE(table.find("alpha"), std::string::npos) << table;
  const std::string json = http_get(status, "/status");
  EXPECT_NE(json.find("\"routes\":{\"tls\":{\"alpha\":{\"sessions\":1,\"active\":0}"),
            std::string::npos)
      << json;
  const std::string logged = access_lines(log, 1);
  EXPECT_NE(logged.find(" closed moves=1 sni=a.test route=alpha"), std::string::npos) << logged;
  EXPECT_EQ(alpha.accepted(), 1);
  EXPECT_EQ(other.accepted(), 0);
}

// A reload that points the route at another upstream: the session routed to the old one stays
// in the old worker (the new one has no such upstream) and goes on there, not moved.
TEST_F(TlsRoutingTest, ARoutedSessionWhoseUpstreamIsGoneStaysInTheOldWorker) {
  EchoServer first;
  EchoServer second;
  const int port = free_port();
  FerryInstance ferry(
      routing_config(port, "", {{"alpha", {"a.test"}, {}, loopback(first.port())}}, log));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string hello = client_hello_bytes("a.test");
  const event::UniqueFd fd(connect_to_port(port));
  ASSERT_TRUE(routed_round_trip(fd.get(), hello, 1));

  ferry.rewrite(
      routing_config(port, "", {{"alpha", {"a.test"}, {}, loopback(second.port())}}, log));
  ASSERT_EQ(ferry.command("reload").exit_code, 0);
  // The new worker serves (new sessions go to the second server) beside the old one.
  ASSERT_TRUE(eventually([&] {
    const event::UniqueFd other(connect_to_port(port));
    return routed_round_trip(other.get(), hello, 0) && second.accepted() > 0;
  })) << ferry.log();
  EXPECT_TRUE(routed_round_trip(fd.get(), "still here", 2));
  ::shutdown(fd.get(), SHUT_WR);
  EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5)));
  EXPECT_TRUE(eventually([&] { return count_of(read_file(log), " route=alpha") >= 2; }));
  const std::string logged = read_file(log);
  EXPECT_EQ(count_of(logged, "moves="), 0U) << logged;
  EXPECT_EQ(first.accepted(), 1);
}

}  // namespace
}  // namespace ferry::test
