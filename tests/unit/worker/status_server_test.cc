// Tests of worker/status/status_server on a real loop with real sockets: the loop runs on the
// test's thread and serves a listening socket on 127.0.0.1:0 through an Acceptor; clients are
// blocking sockets in threads.
#include "worker/status/status_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "conf/values.h"
#include "event/acceptor.h"
#include "event/event_loop.h"
#include "tests/support/loop_helpers.h"

namespace ferry::worker {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct Response {
  int code = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;

  [[nodiscard]] std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "(none)" : it->second;
  }
};

// A blocking client; every receive gives up after 10 s so that a missing byte fails the test.
class Client {
 public:
  explicit Client(const event::SocketAddress& to, int rcvbuf = 0) {
    fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_TRUE(fd_.valid());
    const timeval tv{10, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (rcvbuf > 0) ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    EXPECT_EQ(::connect(fd_.get(), to.get(), to.length()), 0) << std::strerror(errno);
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Reads one response (its body by Content-Length unless `head`); nullopt when the connection
  // ended first. `chunk` and `pause`: read the body that much at a time, sleeping in between.
  std::optional<Response> response(bool head = false, std::size_t chunk = 64 * 1024,
                                   milliseconds pause = milliseconds(0),
                                   const std::function<void(std::size_t)>& progress = {}) {
    std::size_t end;
    while ((end = buffered_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill(4096)) return std::nullopt;
    }
    Response r;
    const std::string head_text = buffered_.substr(0, end + 2);
    buffered_.erase(0, end + 4);
    std::size_t line_end = head_text.find("\r\n");
    const std::string status_line = head_text.substr(0, line_end);
    EXPECT_EQ(status_line.rfind("HTTP/1.1 ", 0), 0U) << status_line;
    r.code = std::atoi(status_line.c_str() + 9);
    for (std::size_t pos = line_end + 2; pos < head_text.size(); pos = line_end + 2) {
      line_end = head_text.find("\r\n", pos);
      const std::string line = head_text.substr(pos, line_end - pos);
      const std::size_t colon = line.find(": ");
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      EXPECT_EQ(r.headers.count(name), 0U) << "repeated " << name;
      r.headers[name] = line.substr(colon + 2);
    }
    const std::size_t length = std::stoul(r.header("content-length"));
    if (head) return r;
    while (buffered_.size() < length) {
      if (pause.count() > 0) std::this_thread::sleep_for(pause);
      if (!fill(std::min(chunk, length - buffered_.size()))) return std::nullopt;
      if (progress) progress(buffered_.size());
    }
    r.body = buffered_.substr(0, length);
    buffered_.erase(0, length);
    return r;
  }

  // The server closed: EOF (or a reset) with nothing more to read, within 10 s.
  bool closed() {
    char byte;
    const ssize_t n = ::recv(fd_.get(), &byte, 1, 0);
    return buffered_.empty() && (n == 0 || (n == -1 && errno == ECONNRESET));
  }
  // Nothing, not even EOF, within `wait`.
  bool quiet(milliseconds wait) {
    pollfd p{fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(wait.count())) == 0;
  }
  [[nodiscard]] int fd() const { return fd_.get(); }

 private:
  bool fill(std::size_t most) {
    std::string chunk(most, '\0');
    const ssize_t n = ::recv(fd_.get(), chunk.data(), chunk.size(), 0);
    if (n <= 0) return false;
    buffered_.append(chunk, 0, static_cast<std::size_t>(n));
    return true;
  }

  event::UniqueFd fd_;
  std::string buffered_;
};

class StatusServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(loop.init({.connections = 256, .epoll_events = 64}));
    ls.address = *event::SocketAddress::parse_numeric("127.0.0.1:0");
    ls.status = true;
    ASSERT_FALSE(event::open_listening(ls));
    ls.data = &settings;
    bodies["/status"] = R"({"version":"test","workers":[]})";
    bodies["/metrics"] = "# HELP ferry_up 1\n# TYPE ferry_up gauge\nferry_up 1\n";
  }
  void TearDown() override {
    if (server) server->close_all();
    acceptor.close();
  }

  void start(const StatusServer::Options& options = {}, std::vector<const char*> rules = {}) {
    for (const char* text : rules) {
      settings.access.push_back(std::get<conf::AccessRule>(conf::parse_access_rule(text)));
    }
    server = std::make_unique<StatusServer>(
        settings,
        [this](std::string_view path) {
          rendered.emplace_back(path);
          return bodies[std::string(path)];
        },
        options);
    const event::Listening* list[] = {&ls};
    ASSERT_FALSE(acceptor.init(loop, list, {}, on_connection, this));
  }

  static void on_connection(event::Connection& c, void* ctx) {
    auto& self = *static_cast<StatusServerTest*>(ctx);
    ASSERT_TRUE(StatusServer::serves(*c.listening));
    self.server->start(self.loop, c);
  }

  // Runs `client` on a thread while the loop serves, until it returns.
  void serve(const std::function<void()>& client) {
    std::atomic<bool> done{false};
    std::thread t([&] {
      client();
      done = true;
    });
    const bool finished = test::run_until(
        loop, [&] { return done.load(); }, milliseconds(30'000));
    t.join();
    ASSERT_TRUE(finished);
  }

  // One request on its own connection, read to the server's close.
  std::optional<Response> exchange(const std::string& request, bool head = false) {
    std::optional<Response> r;
    bool closed = false;
    serve([&] {
      Client c(ls.address);
      ASSERT_TRUE(c.send(request));
      r = c.response(head);
      closed = c.closed();
    });
    EXPECT_TRUE(closed) << "the server must close after " << request;
    return r;
  }

  event::EventLoop loop;
  event::Listening ls;
  event::Acceptor acceptor;
  conf::StatusSettings settings;
  std::map<std::string, std::string> bodies;
  std::vector<std::string> rendered;
  std::unique_ptr<StatusServer> server;
};

TEST_F(StatusServerTest, StatusIsTheRenderersJsonWithItsLength) {
  start();
  const auto r = exchange("GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, 200);
  EXPECT_EQ(r->body, bodies["/status"]);
  EXPECT_EQ(r->header("content-length"), std::to_string(bodies["/status"].size()));
  EXPECT_EQ(r->header("content-type"), "application/json");
  EXPECT_EQ(r->header("cache-control"), "no-store");
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_EQ(r->header("date").size(), 29U) << r->header("date");
  EXPECT_EQ(rendered, std::vector<std::string>{"/status"});
  EXPECT_EQ(server->size(), 0U);
  EXPECT_EQ(server->stats().responses, 1U);
}

TEST_F(StatusServerTest, MetricsIsPrometheusText) {
  start();
  const auto r = exchange("GET /metrics?x=1 HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, 200);
  EXPECT_EQ(r->header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r->body, bodies["/metrics"]);
  EXPECT_EQ(r->header("connection"), "close");
}

TEST_F(StatusServerTest, HeadHasTheLengthButNoBody) {
  start();
  std::optional<Response> r;
  bool closed = false;
  serve([&] {
    Client c(ls.address);
    ASSERT_TRUE(c.send("HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    r = c.response(true);
    closed = c.closed();  // no body bytes before the EOF
  });
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, 200);
  EXPECT_EQ(r->header("content-length"), std::to_string(bodies["/metrics"].size()));
  EXPECT_TRUE(closed);
}

TEST_F(StatusServerTest, OtherPathsAre404AndOtherMethods405WithAllow) {
  start();
  for (const char* path : {"/", "/status/", "/statusx", "/Status", "/st%61tus", "/favicon.ico"}) {
    const auto r = exchange(std::string("GET ") + path +
                            " HTTP/1.1\r\nHost: x\r\nConnection: "
                            "close\r\n\r\n");
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->code, 404) << path;
    EXPECT_EQ(r->header("content-length"), std::to_string(r->body.size()));
  }
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS", "get"}) {
    const auto r = exchange(std::string(method) + " /metrics HTTP/1.0\r\n\r\n");
    ASSERT_TRUE(r) << method;
    EXPECT_EQ(r->code, 405) << method;
    EXPECT_EQ(r->header("allow"), "GET, HEAD") << method;
  }
  EXPECT_TRUE(rendered.empty());
}

TEST_F(StatusServerTest, MalformedRequestsAre400ThenClose) {
  start();
  for (const char* request :
       {"GET /status HTTP/1.1\nHost: x\n\n", "GET /status HTTP/1.1\r\n\r\n",
        "GET status HTTP/1.1\r\nHost: x\r\n\r\n", "GET /status HTTP/1.1\r\nHost: x\r\n y\r\n\r\n",
        "POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"}) {  // a TLS ClientHello
    const auto r = exchange(request);
    ASSERT_TRUE(r) << request;
    EXPECT_EQ(r->code, 400) << request;
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_NE(r->body.find("Bad Request"), std::string::npos);
  }
  EXPECT_EQ(server->stats().bad_requests, 6U);
  EXPECT_TRUE(rendered.empty());
}

// The 400 arrives whole although the client sent more than the server read: the server waits
// for the client's close instead of resetting the connection.
TEST_F(StatusServerTest, OversizedRequestsAre400AndTheResponseIsNotLostToAReset) {
  start();
  for (std::size_t size : {std::size_t{9000}, std::size_t{200'000}}) {
    const std::string request =
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Fill: " + std::string(size, 'a') + "\r\n\r\n";
    const auto r = exchange(request);
    ASSERT_TRUE(r) << size;
    EXPECT_EQ(r->code, 400);
    EXPECT_NE(r->body.find("too large"), std::string::npos) << r->body;
  }
}

TEST_F(StatusServerTest, ADeniedClientIsClosedWithoutAResponse) {
  start({}, {"allow 10.0.0.0/8", "deny 127.0.0.1"});
  bool closed = false;
  serve([&] {
    Client c(ls.address);
    c.send("GET /status HTTP/1.1\r\nHost: x\r\n\r\n");  // may fail: the server may be gone
    closed = c.closed();
  });
  EXPECT_TRUE(closed);
  EXPECT_EQ(server->stats().denied, 1U);
  EXPECT_EQ(server->stats().responses, 0U);
  EXPECT_TRUE(rendered.empty());
}

TEST_F(StatusServerTest, AllowedByARuleIsServed) {
  start({}, {"allow 127.0.0.0/8", "deny all"});
  const auto r = exchange("GET /status HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, 200);
}

// A client sending one byte a second is cut off when the request timeout ends, however much it
// has sent; another client is answered at once in the meantime.
TEST_F(StatusServerTest, ADribblingClientIsCutOffWhileAnotherIsAnswered) {
  StatusServer::Options options;
  options.request_timeout = milliseconds(2'500);
  start(options);
  const auto begin = Clock::now();
  milliseconds cut_after{0};
  milliseconds other_took{0};
  bool cut = false;
  std::optional<Response> other;
  serve([&] {
    std::thread fast([&] {
      std::this_thread::sleep_for(milliseconds(1'200));
      const auto t0 = Clock::now();
      Client c(ls.address);
      c.send("GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      other = c.response();
      other_took = std::chrono::duration_cast<milliseconds>(Clock::now() - t0);
    });
    Client slow(ls.address);
    const std::string request = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
    for (char byte : request) {
      if (!slow.send(std::string_view(&byte, 1))) break;
      if (!slow.quiet(milliseconds(1'000))) break;  // readable: EOF (or a reset)
    }
    cut = slow.closed();
    cut_after = std::chrono::duration_cast<milliseconds>(Clock::now() - begin);
    fast.join();
  });
  EXPECT_TRUE(cut);
  EXPECT_GE(cut_after.count(), 2'400);
  EXPECT_LE(cut_after.count(), 3'500);
  ASSERT_TRUE(other);
  EXPECT_EQ(other->code, 200);
  EXPECT_LT(other_took.count(), 500);
  EXPECT_EQ(server->stats().timed_out, 1U);
}

// 1 MiB through a 16 KiB socket buffer to a client reading 16 KiB at a time: it arrives whole,
// and the loop answers another client while the large response waits for the reader.
TEST_F(StatusServerTest, ALargeBodyReadSlowlyArrivesWholeWithoutBlockingTheLoop) {
  const int sndbuf = 16 * 1024;  // accepted sockets inherit it
  ASSERT_EQ(::setsockopt(ls.fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
  std::string big(1 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7919) % 26);
  bodies["/metrics"] = big;
  start();
  std::optional<Response> large;
  std::optional<Response> other;
  serve([&] {
    Client slow(ls.address, 16 * 1024);
    slow.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    bool asked = false;
    large = slow.response(false, 16 * 1024, milliseconds(2), [&](std::size_t got) {
      if (asked || got < 128 * 1024) return;
      // Most of the body still waits on the server: another client is served meanwhile.
      asked = true;
      Client c(ls.address);
      c.send("GET /status HTTP/1.0\r\n\r\n");
      other = c.response();
    });
  });
  ASSERT_TRUE(large);
  EXPECT_EQ(large->code, 200);
  EXPECT_EQ(large->header("content-length"), std::to_string(big.size()));
  EXPECT_TRUE(large->body == big) << "the body differs";
  ASSERT_TRUE(other);
  EXPECT_EQ(other->code, 200);
}

TEST_F(StatusServerTest, AClientThatReadsNothingIsDroppedAtTheSendTimeout) {
  const int sndbuf = 16 * 1024;
  ASSERT_EQ(::setsockopt(ls.fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
  bodies["/metrics"] = std::string(1 << 20, 'm');
  StatusServer::Options options;
  options.send_timeout = milliseconds(300);
  start(options);
  auto client = std::make_unique<Client>(ls.address, 16 * 1024);
  client->send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(test::run_until(loop, [&] { return server->stats().responses == 1; }));
  const auto t0 = Clock::now();
  ASSERT_TRUE(test::run_until(loop, [&] { return server->size() == 0; }));
  EXPECT_GE(Clock::now() - t0, milliseconds(250));
  EXPECT_EQ(server->stats().timed_out, 1U);
}

TEST_F(StatusServerTest, KeepAliveServesSeveralAndPipelinedRequestsUpToTheLimit) {
  StatusServer::Options options;
  options.max_requests = 4;
  start(options);
  std::vector<Response> got;
  bool closed = false;
  serve([&] {
    Client c(ls.address);
    c.send("GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    if (auto r = c.response()) got.push_back(*r);
    // Two at once, and a HEAD among them.
    c.send(
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.0\r\nConnection: "
        "keep-alive\r\n\r\n");
    if (auto r = c.response(true)) got.push_back(*r);
    if (auto r = c.response()) got.push_back(*r);
    c.send("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    if (auto r = c.response()) got.push_back(*r);
    closed = c.closed();
  });
  ASSERT_EQ(got.size(), 4U);
  EXPECT_EQ(got[0].code, 200);
  EXPECT_EQ(got[0].body, bodies["/status"]);
  EXPECT_EQ(got[0].header("connection"), "(none)");
  EXPECT_EQ(got[1].code, 200);
  EXPECT_EQ(got[1].body, "");
  EXPECT_EQ(got[2].body, bodies["/metrics"]);
  EXPECT_EQ(got[2].header("connection"), "keep-alive");  // an HTTP/1.0 client is told
  EXPECT_EQ(got[3].code, 404);
  EXPECT_EQ(got[3].header("connection"), "close");  // the 4th of max_requests = 4
  EXPECT_TRUE(closed);
}

TEST_F(StatusServerTest, AnIdleKeepAliveConnectionEndsAtTheRequestTimeout) {
  StatusServer::Options options;
  options.request_timeout = milliseconds(300);
  start(options);
  bool closed = false;
  milliseconds idle{0};
  serve([&] {
    Client c(ls.address);
    c.send("GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(c.response());
    const auto t0 = Clock::now();
    closed = c.closed();
    idle = std::chrono::duration_cast<milliseconds>(Clock::now() - t0);
  });
  EXPECT_TRUE(closed);
  EXPECT_GE(idle.count(), 250);
  EXPECT_EQ(server->stats().timed_out, 0U) << "idling between requests is not a fault";
}

TEST_F(StatusServerTest, ConnectionsBeyondTheLimitAreClosedAtOnce) {
  StatusServer::Options options;
  options.max_connections = 2;
  start(options);
  Client a(ls.address);
  Client b(ls.address);
  ASSERT_TRUE(test::run_until(loop, [&] { return server->size() == 2; }));
  bool refused = false;
  serve([&] {
    Client c(ls.address);
    refused = c.closed();
  });
  EXPECT_TRUE(refused);
  EXPECT_EQ(server->stats().refused, 1U);
  // The two held connections are still served.
  std::optional<Response> r;
  serve([&] {
    a.send("GET /status HTTP/1.0\r\n\r\n");
    r = a.response();
  });
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, 200);
  EXPECT_TRUE(b.quiet(milliseconds(0)));
}

TEST_F(StatusServerTest, CloseAllClosesEveryConnection) {
  start();
  Client a(ls.address);
  Client b(ls.address);
  ASSERT_TRUE(test::run_until(loop, [&] { return server->size() == 2; }));
  server->close_all();
  EXPECT_EQ(server->size(), 0U);
  EXPECT_TRUE(a.closed());
  EXPECT_TRUE(b.closed());
}

TEST_F(StatusServerTest, WithoutARendererTheStatusPathsAre503) {
  server = std::make_unique<StatusServer>(settings, StatusServer::Renderer{});
  const event::Listening* list[] = {&ls};
  ASSERT_FALSE(acceptor.init(loop, list, {}, on_connection, this));
  const auto r = exchange("GET /status HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, 503);
}

}  // namespace
}  // namespace ferry::worker
