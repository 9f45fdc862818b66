// Bad input to everything ferry reads (issue 10): random, truncated, oversized and reset input on
// a plain proxy, a PROXY-protocol proxy and the status endpoint while a good session streams;
// configuration files of binary junk, huge numbers, deep nesting, include loops and devices, by
// `ferry -t` and by a reload that must keep the running configuration.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <random>
#include <set>
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
using Clock = std::chrono::steady_clock;

// Every bad connection must be closed within this (generous: CI runs tests side by side).
constexpr auto kPrompt = seconds(10);

std::string bytes_of(std::initializer_list<int> bytes) {
  std::string out;
  for (int v : bytes) out += static_cast<char>(v);
  return out;
}
std::string be16(int v) {
  return {static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
}

const std::string kSig =
    bytes_of({0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A});

std::string random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

struct Outcome {
  std::string reply;
  bool closed = false;  // the peer closed (EOF or reset) within the limit
  Clock::duration took{};
};

// The longest a bad connection waited to be closed, over the whole listener test.
std::atomic<std::int64_t> slowest_close_us{0};

// Sends `data` (as much as the peer takes) while reading what comes back, until the peer closes,
// `want` bytes arrived, or `limit` passed; `half_close` shuts the write side once all is sent.
Outcome talk(int fd, const std::string& data, bool half_close, std::size_t want = SIZE_MAX,
             std::chrono::milliseconds limit = kPrompt) {
  Outcome out;
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::size_t sent = 0;
  bool writing = true;
  if (data.empty()) {
    writing = false;
    if (half_close) ::shutdown(fd, SHUT_WR);
  }
  const auto begin = Clock::now();
  const auto deadline = begin + limit;
  char buf[65536];
  while (out.reply.size() < want) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, static_cast<short>(POLLIN | (writing ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        out.reply.append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        out.closed = true;
        out.took = Clock::now() - begin;
        const std::int64_t us =
            std::chrono::duration_cast<std::chrono::microseconds>(out.took).count();
        for (std::int64_t seen = slowest_close_us.load();
             us > seen && !slowest_close_us.compare_exchange_weak(seen, us);) {
        }
        break;
      }
    }
    if (writing && (p.revents & POLLOUT)) {
      const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<std::size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EINTR) writing = false;  // refused: read on
      if (sent == data.size()) {
        writing = false;
        if (half_close) ::shutdown(fd, SHUT_WR);
      }
    }
  }
  return out;
}

// SO_LINGER 0: close() sends a reset instead of a FIN.
void reset(int fd) {
  const linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

// The value of a Prometheus sample `series value` (-1 when absent).
double sample(const std::string& metrics, const std::string& series) {
  const auto at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + series.size() + 2));
}

// A whole HTTP exchange on a fresh connection to the status port: the answer until close.
std::string http(int port, const std::string& raw) {
  const event::UniqueFd fd(connect_from("", "127.0.0.1", port));
  if (!fd.valid()) return "(no connection)";
  const Outcome o = talk(fd.get(), raw, false);
  return o.reply;
}
std::string metrics(int port) {
  const std::string r = http(port, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  const auto end = r.find("\r\n\r\n");
  return end == std::string::npos ? "" : "\n" + r.substr(end + 4);
}

// One ferry, 2 workers: "plain" and "pp" (accept_proxy_protocol) proxies to one echo backend,
// and the status endpoint; access logs in the instance's folder.
class BadListenerInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ferry_.start(seconds(30))) << ferry_.log();
    ASSERT_TRUE(eventually([&] { return ferry_.workers().size() == 2; }));
  }

  // Runs `each(i)` for i in [0, n) over 4 threads.
  static void spread(int n, const std::function<void(int)>& each) {
    std::atomic<int> next{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i; (i = next++) < n;) each(i);
      });
    }
    for (auto& t : threads) t.join();
  }

  EchoServer backend_;
  TempDir logs_;
  const std::string plain_log_ = logs_.path() + "/plain.log";
  const std::string pp_log_ = logs_.path() + "/pp.log";
  const int plain_ = free_port();
  const int pp_ = free_port();
  const int status_ = free_port();
  FerryInstance ferry_{
      "worker_processes = 2;\n"
      "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:" +
      std::to_string(backend_.port()) +
      "\"; } ); } );\n"
      "proxies = (\n"
      "  { name = \"plain\"; listen = \"127.0.0.1:" +
      std::to_string(plain_) + "\"; upstream = \"app\"; access_log = \"" + plain_log_ +
      "\"; },\n"
      "  { name = \"pp\"; listen = \"127.0.0.1:" +
      std::to_string(pp_) +
      "\"; upstream = \"app\"; accept_proxy_protocol = true; connect_timeout = \"2s\"; "
      "access_log = \"" +
      pp_log_ +
      "\"; }\n);\n"
      "status = { listen = \"127.0.0.1:" +
      std::to_string(status_) + "\"; };\n"};
};

TEST_F(BadListenerInputTest, EveryListenerSurvivesRandomTruncatedOversizedAndResetInput) {
  const std::set<pid_t> workers = ferry_.workers();

  // The good session: blocks cut from a random pattern at moving offsets, each echoed back and
  // compared, for the whole test and at least 64 MiB.
  std::mt19937_64 pattern_rng(1);
  const std::string pattern = random_bytes(pattern_rng, 1 << 20);
  event::UniqueFd good(connect_from("", "127.0.0.1", plain_));
  ASSERT_GE(good.get(), 0);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> good_bytes{0};
  std::atomic<bool> good_failed{false};
  std::thread streamer([&] {
    constexpr std::size_t kBlock = 64 * 1024;
    for (std::size_t round = 0; !stop.load() || good_bytes.load() < (64U << 20); ++round) {
      const std::size_t at = (round * 7919) % (pattern.size() - kBlock);
      if (!echo_round_trip(good.get(), pattern.substr(at, kBlock))) {
        good_failed = true;
        return;
      }
      good_bytes += kBlock;
    }
  });
  ASSERT_TRUE(eventually([&] { return good_bytes.load() > 0 || good_failed.load(); }));

  // How much the good session carried while the bad input came.
  const std::uint64_t good_before = good_bytes.load();
  std::atomic<int> failures{0};
  std::atomic<std::uint64_t> plain_bytes{0};
  int plain_sessions = 1;  // the good one
  int pp_sessions = 0;
  int status_sessions = 0;
  auto fail = [&](const std::string& what) {
    if (failures++ < 20) ADD_FAILURE() << what;
  };

  // 1. Random bytes: data on the plain proxy (echoed back intact), garbage elsewhere.
  constexpr int kRandom = 700;
  spread(kRandom, [&](int i) {
    std::mt19937_64 rng(1000 + static_cast<std::uint64_t>(i));
    const std::string junk = random_bytes(rng, 1 + rng() % 8192);
    const event::UniqueFd fd(connect_from("", "127.0.0.1", plain_));
    const Outcome o = talk(fd.get(), junk, false, junk.size());
    if (o.reply != junk) fail("plain: random bytes " + std::to_string(i) + " came back changed");
    plain_bytes += junk.size();
  });
  plain_sessions += kRandom;
  spread(kRandom, [&](int i) {
    std::mt19937_64 rng(2000 + static_cast<std::uint64_t>(i));
    const event::UniqueFd fd(connect_from("", "127.0.0.1", pp_));
    const Outcome o = talk(fd.get(), random_bytes(rng, 1 + rng() % 8192), false);
    if (!o.closed || !o.reply.empty())
      fail("pp: random bytes " + std::to_string(i) + " not closed");
  });
  pp_sessions += kRandom;
  // After a valid header, random bytes are the client's data: they arrive intact.
  constexpr int kRandomAfterHeader = 200;
  std::atomic<std::uint64_t> pp_bytes{0};
  spread(kRandomAfterHeader, [&](int i) {
    std::mt19937_64 rng(5000 + static_cast<std::uint64_t>(i));
    const std::string header =
        i % 2 == 0 ? "PROXY TCP4 192.0.2.7 127.0.0.1 40000 80\r\n"
                   : kSig + bytes_of({0x21, 0x11}) + be16(12) +
                         bytes_of({0xC0, 0x00, 0x02, 0x07, 0x7F, 0x00, 0x00, 0x01}) + be16(40000) +
                         be16(80);
    const std::string junk = random_bytes(rng, 1 + rng() % 8192);
    const event::UniqueFd fd(connect_from("", "127.0.0.1", pp_));
    if (talk(fd.get(), header + junk, false, junk.size()).reply != junk) {
      fail("pp: random bytes after header " + std::to_string(i) + " came back changed");
    }
    pp_bytes += junk.size();
  });
  pp_sessions += kRandomAfterHeader;
  spread(kRandom, [&](int i) {
    std::mt19937_64 rng(3000 + static_cast<std::uint64_t>(i));
    // At least 16 bytes: fewer could still be the start of a request, which waits for more.
    const event::UniqueFd fd(connect_from("", "127.0.0.1", status_));
    const Outcome o = talk(fd.get(), random_bytes(rng, 16 + rng() % 8192), false);
    if (!o.closed || o.reply.rfind("HTTP/1.1 400 ", 0) != 0) {
      fail("status: random bytes " + std::to_string(i) + " answered \"" + o.reply.substr(0, 40) +
           "\"");
    }
  });
  status_sessions += kRandom;

  // 2. Truncated: valid PROXY headers and an HTTP request cut at every length, then closed or
  // half-closed (alternately).
  const std::vector<std::string> headers = {
      "PROXY TCP4 192.0.2.1 198.51.100.2 1234 80\r\n",
      "PROXY TCP6 2001:db8::1 2001:db8::2 5000 443\r\n",
      kSig + bytes_of({0x21, 0x11}) + be16(12) + bytes_of({0xC0, 0x00, 0x02, 0x01}) +
          bytes_of({0xC6, 0x33, 0x64, 0x02}) + be16(1234) + be16(80),
      kSig + bytes_of({0x21, 0x21}) + be16(36 + 5) + std::string(32, '\x20') + be16(1) + be16(2) +
          bytes_of({0x04, 0x00, 0x02, 0x00, 0x00}),
  };
  int truncated_pp = 0;
  for (const std::string& header : headers) {
    for (std::size_t cut = 0; cut < header.size(); ++cut, ++truncated_pp) {
      const event::UniqueFd fd(connect_from("", "127.0.0.1", pp_));
      if (cut % 2 == 1) {
        send_all(fd.get(), header.substr(0, cut));  // and gone: nothing to see but the log line
      } else if (!talk(fd.get(), header.substr(0, cut), true).closed) {
        fail("pp: a header cut at " + std::to_string(cut) + " and half-closed stayed open");
      }
    }
  }
  pp_sessions += truncated_pp;
  const std::string request = "GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
  for (std::size_t cut = 0; cut < request.size(); ++cut) {
    const event::UniqueFd fd(connect_from("", "127.0.0.1", status_));
    if (cut % 2 == 1) {
      send_all(fd.get(), request.substr(0, cut));
    } else if (const Outcome o = talk(fd.get(), request.substr(0, cut), true);
               !o.closed || !o.reply.empty()) {
      // Closed without an answer: there is no request to answer.
      fail("status: a request cut at " + std::to_string(cut) + " got \"" + o.reply + "\"");
    }
  }
  status_sessions += static_cast<int>(request.size());

  // 3. Oversized.
  const std::vector<std::pair<std::string, std::string>> big_pp = {
      {"v2 length 65535, all sent", kSig + bytes_of({0x21, 0x11}) + be16(65535) +
                                        std::string(12, '\x01') + std::string(65535 - 12, '\0')},
      {"v1 without CRLF, 200 bytes", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2" + std::string(170, ' ')},
      {"v1 without CRLF, 1 MiB", "PROXY TCP4 " + std::string(1 << 20, '1')},
      {"v1 of 108 bytes", "PROXY UNKNOWN " + std::string(108 - 16, 'x') + "\r\n"},
  };
  for (const auto& [name, bytes] : big_pp) {
    const event::UniqueFd fd(connect_from("", "127.0.0.1", pp_));
    const Outcome o = talk(fd.get(), bytes, false);
    if (!o.closed || !o.reply.empty()) fail("pp: " + name + " not closed");
  }
  pp_sessions += static_cast<int>(big_pp.size());
  std::string many_headers = "GET /status HTTP/1.1\r\nHost: t\r\n";
  for (int i = 0; i < 5000; ++i) many_headers += "X-" + std::to_string(i) + ": v\r\n";
  const std::vector<std::pair<std::string, std::string>> big_http = {
      {"64 KiB head", "GET /status HTTP/1.1\r\nX-Big: " + std::string(64 << 10, 'a') + "\r\n\r\n"},
      {"1 MiB head", "GET /status HTTP/1.1\r\nX-Big: " + std::string(1 << 20, 'a') + "\r\n\r\n"},
      {"100 KiB request line", "GET /" + std::string(100 << 10, 'p') + " HTTP/1.1\r\n\r\n"},
      {"5000 headers", many_headers + "\r\n"},
  };
  for (const auto& [name, bytes] : big_http) {
    const event::UniqueFd fd(connect_from("", "127.0.0.1", status_));
    const Outcome o = talk(fd.get(), bytes, false);
    if (!o.closed || o.reply.rfind("HTTP/1.1 400 ", 0) != 0) {
      fail("status: " + name + " answered \"" + o.reply.substr(0, 40) + "\"");
    }
  }
  status_sessions += static_cast<int>(big_http.size());
  // A 1 MiB burst on the plain proxy is just data.
  {
    std::mt19937_64 rng(4);
    const std::string burst = random_bytes(rng, 1 << 20);
    event::UniqueFd fd(connect_from("", "127.0.0.1", plain_));
    if (talk(fd.get(), burst, false, burst.size(), seconds(30)).reply != burst) {
      fail("plain: a 1 MiB burst came back changed");
    }
    plain_bytes += burst.size();
    fd.reset();
    ++plain_sessions;
  }

  // 4. Resets (SO_LINGER 0): right after connect, mid-header or mid-request, and after data.
  constexpr int kResets = 100;
  spread(kResets, [&](int i) {
    const int fd = connect_from("", "127.0.0.1", pp_);
    if (i % 2 == 1) send_all(fd, "PROXY TCP4 1.2.3.4 ");
    reset(fd);
  });
  pp_sessions += kResets;
  spread(kResets, [&](int i) {
    const int fd = connect_from("", "127.0.0.1", status_);
    if (i % 2 == 1) send_all(fd, "GET /status HTTP/1.1\r\nHo");
    reset(fd);
  });
  status_sessions += kResets;
  spread(kResets, [&](int i) {
    const int fd = connect_from("", "127.0.0.1", plain_);
    if (i % 2 == 1) {
      const std::string data(1000 + static_cast<std::size_t>(i), 'r');
      if (!echo_round_trip(fd, data)) fail("plain: no echo before the reset");
      plain_bytes += data.size();
    }
    reset(fd);
  });
  plain_sessions += kResets;

  EXPECT_EQ(failures.load(), 0);
  const std::uint64_t good_during = good_bytes.load() - good_before;
  EXPECT_GT(good_during, 0U) << "the good session stalled while the bad input came";
  // The good session saw everything through, untouched.
  stop = true;
  streamer.join();
  EXPECT_FALSE(good_failed.load()) << "the good session was disturbed\n" << ferry_.log();
  const std::uint64_t good_total = good_bytes.load();
  plain_bytes += good_total;
  good.reset();

  // Every connection had its ending logged: the PROXY ones as bad_proxy_protocol (a reset before
  // a header is the client's), and nothing reached the server from them.
  EXPECT_TRUE(eventually(
      [&] {
        ferry_.drain_log();
        return count_of(read_file(pp_log_), "\n") == static_cast<std::size_t>(pp_sessions) &&
               count_of(read_file(plain_log_), "\n") == static_cast<std::size_t>(plain_sessions);
      },
      seconds(30)))
      << count_of(read_file(pp_log_), "\n") << " of " << pp_sessions << " PROXY sessions and "
      << count_of(read_file(plain_log_), "\n") << " of " << plain_sessions << " plain logged";
  const std::string pp_log = read_file(pp_log_);
  const std::size_t bad_pp = count_of(pp_log, " bad_proxy_protocol\n");
  const std::size_t reset_pp = count_of(pp_log, " client_reset\n");
  const std::size_t closed_pp = count_of(pp_log, " closed\n");
  EXPECT_EQ(closed_pp, static_cast<std::size_t>(kRandomAfterHeader)) << pp_log.substr(0, 2000);
  EXPECT_GE(bad_pp, static_cast<std::size_t>(pp_sessions - kRandomAfterHeader - kResets))
      << pp_log.substr(0, 2000);
  EXPECT_EQ(bad_pp + reset_pp + closed_pp, static_cast<std::size_t>(pp_sessions))
      << pp_log.substr(0, 2000);
  EXPECT_EQ(backend_.accepted(), plain_sessions + kRandomAfterHeader)
      << "only plain sessions and valid headers reached the server";

  // Workers never crashed, and the status endpoint answers with counters that add up.
  ferry_.drain_log();
  EXPECT_EQ(ferry_.workers(), workers) << ferry_.log();
  EXPECT_EQ(ferry_.log().find("killed by signal"), std::string::npos) << ferry_.log();
  EXPECT_EQ(ferry_.log().find("exited"), std::string::npos) << ferry_.log();
  const std::string m = metrics(status_);
  const std::string plain = "{proxy=\"plain\"}";
  const std::string pp = "{proxy=\"pp\"}";
  EXPECT_EQ(sample(m, "ferry_proxy_accepted_total" + plain), plain_sessions) << m;
  EXPECT_EQ(sample(m, "ferry_proxy_handled_total" + plain), plain_sessions);
  EXPECT_EQ(sample(m, "ferry_proxy_active_sessions" + plain), 0);
  EXPECT_EQ(sample(m, "ferry_proxy_received_bytes_total" + plain),
            static_cast<double>(plain_bytes.load()));
  EXPECT_EQ(sample(m, "ferry_proxy_sent_bytes_total" + plain),
            static_cast<double>(plain_bytes.load()));
  EXPECT_EQ(sample(m, "ferry_proxy_accepted_total" + pp), pp_sessions);
  EXPECT_EQ(sample(m, "ferry_proxy_handled_total" + pp), pp_sessions);
  EXPECT_EQ(sample(m, "ferry_proxy_active_sessions" + pp), 0);
  // The headers are not the client's data.
  EXPECT_EQ(sample(m, "ferry_proxy_received_bytes_total" + pp),
            static_cast<double>(pp_bytes.load()));
  EXPECT_EQ(sample(m, "ferry_proxy_sent_bytes_total" + pp), static_cast<double>(pp_bytes.load()));
  EXPECT_EQ(http(status_, "GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .rfind("HTTP/1.1 200 ", 0),
            0U);

  std::cout << "reliability: bad input (listeners): " << 3 * kRandom << " random-byte connections ("
            << kRandom << " each to a plain proxy, echoed intact; "
            << "a PROXY-protocol proxy; the status endpoint, each answered 400) and "
            << kRandomAfterHeader << " after a valid PROXY header (echoed intact), " << truncated_pp
            << " truncated PROXY v1/v2 headers and " << request.size()
            << " truncated HTTP requests (closed or half-closed), "
            << big_pp.size() + big_http.size()
            << " oversized inputs (PROXY v2 length 65535, v1 lines of 200 B and 1 MiB, HTTP heads "
               "of 64 KiB and 1 MiB, a 100 KiB request line, 5000 headers), "
            << 3 * kResets << " resets; 0 worker crashes, good session " << (good_total >> 20)
            << " MiB intact (" << (good_during >> 20)
            << " MiB of it during the bad input), each bad connection closed within "
            << slowest_close_us.load() / 1000 << " ms, " << pp_sessions << " PROXY endings logged ("
            << bad_pp << " bad_proxy_protocol, " << reset_pp << " client_reset, " << closed_pp
            << " closed)\n";
}

// A bad configuration: its files (name → content, the first is the one given to ferry) and what
// ferry must say about it, "{dir}" standing for their folder.
struct BadConfig {
  std::string name;
  std::vector<std::pair<std::string, std::string>> files;
  std::string expected;
};

std::string nested(const std::string& open, const std::string& close, int depth) {
  std::string text = "a = ";
  for (int i = 0; i < depth; ++i) text += open;
  for (int i = 0; i < depth; ++i) text += close;
  return text + ";\n";
}

std::vector<BadConfig> bad_configs() {
  std::mt19937_64 rng(10);
  const std::string proxy =
      "proxies = ( { name = \"a\"; listen = \"127.0.0.1:1\"; upstream = \"127.0.0.1:2\"; ";
  std::string many;
  for (int i = 0; i < 30'000; ++i)
    many += "x" + std::to_string(i) + " = " + std::to_string(i) + ";\n";
  std::string huge = "worker_processes = 1;\n";
  const std::string comment =
      "# a comment line to make the file large" + std::string(60, '.') + "\n";
  while (huge.size() < (50U << 20)) huge += comment;
  return {
      {"random bytes", {{"a.conf", random_bytes(rng, 4096)}}, "{dir}/a.conf:1: contains "},
      {"random printable junk",
       {{"a.conf",
         [&] {
           std::string t;
           for (int i = 0; i < 4096; ++i) t += static_cast<char>(' ' + rng() % 95);
           return t;
         }()}},
       "{dir}/a.conf:"},
      {"a NUL after a good line",
       {{"a.conf", std::string("worker_processes = 1;\n\0garbage (((\n", 36)}},
       "{dir}/a.conf:2: contains a NUL byte"},
      {"not UTF-8",
       {{"a.conf", "worker_processes = 1;\npid_file = \"/tmp/\xff\xfe.pid\";\n"}},
       "{dir}/a.conf:2: contains bytes that are not UTF-8 text"},
      {"20 digits",
       {{"a.conf", "worker_processes = 99999999999999999999;\n"}},
       "{dir}/a.conf:1: 99999999999999999999 is out of the 32-bit integer range"},
      {"2^63",
       {{"a.conf", "\nworker_processes = 9223372036854775808;\n"}},
       "{dir}/a.conf:2: 9223372036854775808 is out of the 32-bit integer range"},
      {"2^32 + 2 (libconfig reads 2)",
       {{"a.conf", "worker_processes = 4294967298;\n"}},
       "{dir}/a.conf:1: 4294967298 is out of the 32-bit integer range"},
      {"negative",
       {{"a.conf", "worker_processes = -1;\n"}},
       "{dir}/a.conf:1: worker_processes: -1 is out of range (1-1024)"},
      {"huge size",
       {{"a.conf", proxy + "buffer_size = \"99999999999999999999k\"; } );\n"}},
       "{dir}/a.conf:1: proxies.[0].buffer_size: \"99999999999999999999k\" is not a size"},
      {"overflowing duration",
       {{"a.conf", proxy + "idle_timeout = \"9223372036854775807ms\"; } );\n"}},
       "{dir}/a.conf:1: proxies.[0].idle_timeout: \"9223372036854775807ms\" is too long"},
      {"port 65536",
       {{"a.conf", "status = { listen = \"127.0.0.1:65536\"; };\n"}},
       "{dir}/a.conf:1: status.listen: \"127.0.0.1:65536\": port must be 1-65535"},
      {"100,000 nested groups",
       {{"a.conf", nested("{ b = ", "};", 100'000)}},
       "{dir}/a.conf:1: groups, lists and arrays nested deeper than 64 levels"},
      {"100,000 nested lists",
       {{"a.conf", nested("(", ")", 100'000)}},
       "{dir}/a.conf:1: groups, lists and arrays nested deeper than 64 levels"},
      {"100,000 unclosed arrays",
       {{"a.conf", "\n\na = " + std::string(100'000, '[')}},
       "{dir}/a.conf:3: groups, lists and arrays nested deeper than 64 levels"},
      {"30,000 settings", {{"a.conf", many}}, "{dir}/a.conf:1001: more than 1000 settings"},
      {"includes itself",
       {{"a.conf", "worker_processes = 1;\n@include \"a.conf\"\n"}},
       "{dir}/a.conf:2: @include: \"a.conf\" includes itself (loop)"},
      {"A includes B includes A",
       {{"a.conf", "@include \"b.conf\"\n"},
        {"b.conf", "worker_processes = 1;\n@include \"a.conf\"\n"}},
       "{dir}/b.conf:2: @include: \"a.conf\" includes itself (loop)"},
      {"missing include",
       {{"a.conf", "@include \"nope.conf\"\n"}},
       "{dir}/a.conf:1: @include: cannot read \"{dir}/nope.conf\": No such file or directory"},
      {"include of a folder",
       {{"a.conf", "\n@include \"sub\"\n"}, {"sub/x.conf", ""}},
       "{dir}/a.conf:2: @include: cannot read \"{dir}/sub\": it is a directory"},
      {"include of /dev/zero",
       {{"a.conf", "@include \"/dev/zero\"\n"}},
       "{dir}/a.conf:1: @include: cannot read \"/dev/zero\": not a regular file"},
      {"include of /dev/urandom",
       {{"a.conf", "@include \"/dev/urandom\"\n"}},
       "{dir}/a.conf:1: @include: cannot read \"/dev/urandom\": not a regular file"},
      {"50 MiB",
       {{"a.conf", huge}},
       "{dir}/a.conf: cannot read the configuration file: larger than 8 MiB"},
  };
}

std::string replace_dir(std::string text, const std::string& dir) {
  for (std::size_t at; (at = text.find("{dir}")) != std::string::npos;) text.replace(at, 5, dir);
  return text;
}

void write_files(const TempDir& dir, const BadConfig& c) {
  for (const auto& [name, content] : c.files) {
    if (const auto slash = name.find('/'); slash != std::string::npos) {
      ::mkdir((dir.path() + "/" + name.substr(0, slash)).c_str(), 0755);
    }
    dir.write(name, content);
  }
}

TEST(BadConfigTest, FerryTestRefusesEachWithFileLineAndReason) {
  std::size_t bytes = 0;
  auto slowest = Clock::duration::zero();
  const auto cases = bad_configs();
  for (const BadConfig& c : cases) {
    TempDir dir;
    write_files(dir, c);
    for (const auto& [name, content] : c.files) bytes += content.size();
    const std::string file = dir.path() + "/" + c.files[0].first;
    const auto start = Clock::now();
    const Finished f = run_program({ferry_binary(), "-t", "-c", file}, seconds(60));
    slowest = std::max(slowest, Clock::now() - start);
    EXPECT_EQ(f.signal, 0) << c.name << ": a crash\n" << f.err;
    EXPECT_EQ(f.exit_code, 1) << c.name << "\n" << f.err;
    EXPECT_NE(f.err.find(replace_dir(c.expected, dir.path())), std::string::npos)
        << c.name << ": expected \"" << replace_dir(c.expected, dir.path()) << "\"; ferry said:\n"
        << f.err.substr(0, 2000);
    EXPECT_NE(f.err.find("ferry: configuration file " + file + " test failed"), std::string::npos)
        << c.name << "\n"
        << f.err.substr(0, 2000);
    EXPECT_LT(Clock::now() - start, seconds(30)) << c.name << ": no hang";
  }
  // An empty file is a valid configuration: every default, nothing to proxy.
  TempDir dir;
  const Finished empty = run_program({ferry_binary(), "-t", "-c", dir.write("e.conf", "")});
  EXPECT_EQ(empty.exit_code, 0) << empty.err;
  std::cout << "reliability: bad input (configuration): " << cases.size() << " bad files ("
            << (bytes >> 20)
            << " MiB in all: binary junk, NULs, bad UTF-8, integers past 32 and 64 bits, "
               "overflowing sizes, durations and ports, 100,000-deep nesting, 30,000 settings, "
               "include loops, a missing include, a folder, /dev/zero and /dev/urandom included, "
               "50 MiB) each refused by ferry -t with exit code 1 and its file and line; 0 "
               "crashes, slowest "
            << std::chrono::duration_cast<milliseconds>(slowest).count() << " ms\n";
}

TEST(BadConfigTest, AReloadWithEachKeepsTheRunningConfiguration) {
  EchoServer backend;
  const int port = free_port();
  const std::string good =
      "worker_processes = 1;\nproxies = ( { name = \"w\"; listen = \"127.0.0.1:" +
      std::to_string(port) + "\"; upstream = \"127.0.0.1:" + std::to_string(backend.port()) +
      "\"; access_log = \"off\"; } );\n";
  FerryInstance ferry(good);
  ASSERT_TRUE(ferry.start(seconds(30))) << ferry.log();
  const std::set<pid_t> workers = ferry.workers();
  event::UniqueFd session(connect_from("", "127.0.0.1", port));
  ASSERT_TRUE(echo_round_trip(session.get(), "before"));
  std::size_t rejected = 0;
  for (const BadConfig& c : bad_configs()) {
    // The instance's own file is the one reloaded; the others go beside it.
    BadConfig here = c;
    const std::string main = here.files[0].second;
    here.files.erase(here.files.begin());
    write_files(ferry.dir(), here);
    std::string body = main;
    // Includes that name the first file name the instance's file instead.
    for (std::size_t at; (at = body.find("\"a.conf\"")) != std::string::npos;) {
      body.replace(at, 8, "\"ferry.conf\"");
    }
    for (auto& [name, content] : here.files) {
      for (std::size_t at; (at = content.find("\"a.conf\"")) != std::string::npos;) {
        content.replace(at, 8, "\"ferry.conf\"");
      }
      ferry.dir().write(name, content);
    }
    ferry.rewrite(body);
    ferry.signal(SIGHUP);
    ++rejected;
    EXPECT_TRUE(eventually(
        [&] {
          ferry.drain_log();
          return count_of(ferry.log(), "reload rejected") == rejected;
        },
        seconds(30)))
        << c.name << "\n"
        << ferry.log().substr(ferry.log().size() > 3000 ? ferry.log().size() - 3000 : 0);
    EXPECT_EQ(ferry.workers(), workers) << c.name;
    EXPECT_TRUE(echo_round_trip(session.get(), "still " + c.name)) << c.name;
    const event::UniqueFd fresh(connect_from("", "127.0.0.1", port));
    EXPECT_TRUE(echo_round_trip(fresh.get(), "new " + c.name)) << c.name;
  }
  ferry.drain_log();
  EXPECT_EQ(ferry.log().find("killed by signal"), std::string::npos) << ferry.log();
  EXPECT_EQ(ferry.log().find("exited"), std::string::npos) << ferry.log();
  // And a good one is still taken.
  ferry.rewrite(good);
  const Finished r = ferry.command("reload");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  session.reset();
  std::cout << "reliability: bad input (configuration): " << rejected
            << " reloads with those files rejected, the running configuration kept (same worker, "
               "a session open across all of them and a new one after each)\n";
}

}  // namespace
}  // namespace ferry::test
