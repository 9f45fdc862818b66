// End-to-end tests of proxying through the real binary with real backends: byte-exact bulk
// transfer, half-close, balancing over weighted servers, failover past a refusing server, the
// fast failure when no server is left, and the access-log line.
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string servers(const std::vector<std::pair<int, int>>& port_weight) {
  std::string out;
  for (const auto& [port, weight] : port_weight) {
    out += (out.empty() ? "" : ", ") + std::string("{ address = \"127.0.0.1:") +
           std::to_string(port) + "\"; weight = " + std::to_string(weight) + "; }";
  }
  return out;
}

std::string config(int workers, int port, const std::string& server_list,
                   const std::string& balance = "round_robin",
                   const std::string& proxy_extra = "") {
  return "worker_processes = " + std::to_string(workers) +
         ";\n"
         "upstreams = ( { name = \"app\"; balance = \"" +
         balance + "\"; servers = ( " + server_list +
         " ); } );\n"
         "proxies = ( { name = \"web\"; listen = \"127.0.0.1:" +
         std::to_string(port) + "\"; upstream = \"app\"; " + proxy_extra + "} );\n";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class BulkTest : public ::testing::TestWithParam<int> {};

TEST_P(BulkTest, SixteenMebibytesEachWayArriveByteExact) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(GetParam(), port, servers({{backend.port(), 1}}), "round_robin",
                             "access_log = \"off\"; "));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<char> payload(16 << 20);
  std::mt19937_64 rng(42);
  for (auto& c : payload) c = static_cast<char>(rng());
  const int fd = connect_to_port(port);
  ASSERT_GE(fd, 0);
  std::thread writer([&] {
    std::size_t off = 0;
    while (off < payload.size()) {
      const ssize_t n = ::send(fd, payload.data() + off, payload.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    ::shutdown(fd, SHUT_WR);
  });
  std::vector<char> got;
  got.reserve(payload.size());
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.insert(got.end(), buf, buf + n);
  }
  writer.join();
  ::close(fd);
  EXPECT_EQ(got.size(), payload.size());
  EXPECT_TRUE(got == payload) << "the echo differs from what was sent";
}

INSTANTIATE_TEST_SUITE_P(Workers, BulkTest, ::testing::Values(1, 2, 4));

TEST(ProxyTest, HalfCloseLetsTheBackendAnswerAfterTheClientsFin) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(1, port, servers({{backend.port(), 1}})));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const int fd = connect_to_port(port);
  ASSERT_GE(fd, 0);
  const std::string request = "the whole request, then FIN";
  ASSERT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  ASSERT_EQ(::shutdown(fd, SHUT_WR), 0);
  std::string answer;
  char buf[256];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, n);
  ::close(fd);
  EXPECT_EQ(answer, request) << "the answer sent after the client's FIN must arrive whole";
}

TEST(ProxyTest, WeightedRoundRobinSplitsSessionsByWeight) {
  EchoServer a, b, c;
  const int port = free_port();
  FerryInstance ferry(config(2, port, servers({{a.port(), 1}, {b.port(), 1}, {c.port(), 2}})));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  constexpr int kSessions = 4000;
  for (int i = 0; i < kSessions; ++i) {
    const int fd = connect_to_port(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(echo_round_trip(fd, "rr")) << i;
    ::close(fd);
  }
  std::printf("[ split ] %d / %d / %d\n", a.accepted(), b.accepted(), c.accepted());
  EXPECT_NEAR(a.accepted(), kSessions * 25 / 100, kSessions * 3 / 100);
  EXPECT_NEAR(b.accepted(), kSessions * 25 / 100, kSessions * 3 / 100);
  EXPECT_NEAR(c.accepted(), kSessions * 50 / 100, kSessions * 3 / 100);
}

TEST(ProxyTest, ARefusingServerIsSkippedAndEveryClientSucceeds) {
  EchoServer a, b;
  const int refusing = free_port();  // nothing listens there
  const int port = free_port();
  FerryInstance ferry(config(2, port, servers({{refusing, 1}, {a.port(), 1}, {b.port(), 1}}),
                             "round_robin", "access_log = \"off\"; "));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (int i = 0; i < 200; ++i) {
    const int fd = connect_to_port(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(echo_round_trip(fd, "failover " + std::to_string(i))) << i;
    ::close(fd);
  }
  EXPECT_EQ(a.accepted() + b.accepted(), 200);
  EXPECT_TRUE(ferry.wait_for_log("trying the next server"));
}

TEST(ProxyTest, WithEveryServerDownTheClientIsClosedAtOnceAndTheLogSaysSo) {
  const int down1 = free_port();
  const int down2 = free_port();
  const int port = free_port();
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  FerryInstance ferry(config(1, port, servers({{down1, 1}, {down2, 1}}), "round_robin",
                             "access_log = \"" + access + "\"; "));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const int fd = connect_to_port(port);
  ASSERT_GE(fd, 0);
  const auto start = std::chrono::steady_clock::now();
  char byte;
  const ssize_t n = ::recv(fd, &byte, 1, 0);
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_LE(n, 0);
  EXPECT_LT(took, milliseconds(100));
  EXPECT_TRUE(eventually([&] {
    return read_file(access).find("connect_failed") != std::string::npos;
  })) << read_file(access);
  EXPECT_NE(read_file(access).find(" - 0 0 "), std::string::npos)
      << "no upstream and no bytes: " << read_file(access);
}

TEST(ProxyTest, EachSessionWritesOneAccessLogLine) {
  EchoServer backend;
  const int port = free_port();
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  FerryInstance ferry(config(1, port, servers({{backend.port(), 1}}), "round_robin",
                             "access_log = \"" + access + "\"; "));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (int i = 0; i < 3; ++i) {
    const int fd = connect_to_port(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(echo_round_trip(fd, "12345"));
    ::shutdown(fd, SHUT_WR);
    char byte;
    ASSERT_EQ(::recv(fd, &byte, 1, 0), 0);
    ::close(fd);
  }
  ASSERT_TRUE(eventually([&] {
    const std::string text = read_file(access);
    return std::count(text.begin(), text.end(), '\n') == 3;
  })) << read_file(access);
  std::istringstream lines(read_file(access));
  for (std::string line; std::getline(lines, line);) {
    std::istringstream f(line);
    std::string when, client, listen, upstream, in, out, duration, status;
    f >> when >> client >> listen >> upstream >> in >> out >> duration >> status;
    EXPECT_EQ(client.rfind("127.0.0.1:", 0), 0U) << line;
    EXPECT_EQ(listen, "127.0.0.1:" + std::to_string(port)) << line;
    EXPECT_EQ(upstream, "127.0.0.1:" + std::to_string(backend.port())) << line;
    EXPECT_EQ(in, "5") << line;
    EXPECT_EQ(out, "5") << line;
    EXPECT_EQ(status, "closed") << line;
    EXPECT_EQ(when.size(), std::string("2026-11-22T08:55:35.123+0000").size()) << line;
  }
}

}  // namespace
}  // namespace ferry::test
