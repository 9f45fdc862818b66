// End-to-end tests of fastopen_connect (TCP_FASTOPEN_CONNECT on the server sockets): the
// client's first bytes reach a Fast Open server in the SYN, not without the setting; a server
// refusing or not answering such a connect is counted failed so the next clients go elsewhere;
// a client's FIN waits for the server's answer, and a client gone without a byte ends cleanly.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <poll.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
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

using namespace std::chrono_literals;

constexpr const char* kFastOpenSysctl = "/proc/sys/net/ipv4/tcp_fastopen";
constexpr int kClientAndServer = 1 | 2;
// tcpi_options bit: the SYN carried data that was taken (linux/tcp.h's TCPI_OPT_SYN_DATA).
constexpr unsigned kSynData = 32;

// Turns on Fast Open for clients and servers (net.ipv4.tcp_fastopen bits 1 and 2) for the test,
// restoring the machine's value after; usable() is false where it cannot be written.
class FastOpenOn {
 public:
  FastOpenOn() {
    std::ifstream in(kFastOpenSysctl);
    if (!(in >> saved_)) return;
    if ((saved_ & kClientAndServer) == kClientAndServer) {
      usable_ = true;
      return;
    }
    std::ofstream out(kFastOpenSysctl);
    usable_ = static_cast<bool>(out << (saved_ | kClientAndServer) << '\n' << std::flush);
    changed_ = usable_;
  }
  ~FastOpenOn() {
    if (changed_) std::ofstream(kFastOpenSysctl) << saved_ << '\n';
  }
  FastOpenOn(const FastOpenOn&) = delete;
  FastOpenOn& operator=(const FastOpenOn&) = delete;
  [[nodiscard]] bool usable() const noexcept { return usable_; }

 private:
  int saved_ = 0;
  bool usable_ = false;
  bool changed_ = false;
};

// A listener on loopback that takes Fast Open SYNs.
event::UniqueFd fast_open_listener(int& port) {
  event::UniqueFd fd(listen_on("127.0.0.1", port));
  const int queue = 16;
  if (fd && ::setsockopt(fd.get(), IPPROTO_TCP, TCP_FASTOPEN, &queue, sizeof queue) == -1) {
    fd.reset();
  }
  return fd;
}

// One connection on `listener`: `request` read, `answer` sent back; whether its SYN carried the
// bytes (false also when nothing came).
bool serve_one(int listener, const std::string& request, const std::string& answer) {
  const event::UniqueFd fd(accept_within(listener, 10s));
  if (!fd || read_exactly(fd.get(), request.size(), 10s) != request) return false;
  tcp_info info{};
  socklen_t len = sizeof info;
  const bool syn_data = ::getsockopt(fd.get(), IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
                        (info.tcpi_options & kSynData) != 0;
  return send_all(fd.get(), answer) && syn_data;
}

// A client through ferry's `port` to the server on `listener`: whether the round trip worked,
// and in `syn_data` whether the server got the bytes in the SYN.
bool round_trip(int port, int listener, const std::string& text, bool& syn_data) {
  const event::UniqueFd client(connect_to_port(port));
  if (!client || !send_all(client.get(), text)) return false;
  syn_data = serve_one(listener, text, "re: " + text);
  return read_exactly(client.get(), 4 + text.size(), 10s) == "re: " + text;
}

// A listener whose queue one connection fills (a backlog of 0 queues one): its next SYNs are
// dropped until that one is accepted.
event::UniqueFd full_listener(int& port) {
  event::UniqueFd fd(listen_on("127.0.0.1", port));
  if (fd && ::listen(fd.get(), 0) != 0) fd.reset();
  return fd;
}

// The filler accepted, making room: the next SYN sent again (after about a second) gets in;
// that connection, or none.
event::UniqueFd accept_after_filler(int listener) {
  const event::UniqueFd filler(accept_within(listener, std::chrono::seconds(5)));
  if (!filler) return event::UniqueFd();
  return event::UniqueFd(accept_within(listener, std::chrono::seconds(10)));
}

std::string config(int port, const std::vector<ServerSpec>& servers, bool fastopen,
                   const std::string& extra = "") {
  return config_text("worker_processes = 1;",
                     {{.listen = {loopback(port)},
                       .upstream = "app",
                       .extra = (fastopen ? "fastopen_connect = true; " : "") + extra}},
                     {upstream_of(servers, "balance = \"round_robin\";")});
}

// Whether a socket of this machine to 127.0.0.1:`port` is in SYN_SENT with its SYN and `n`
// bytes unacknowledged: a Fast Open connect whose SYN has left with them (before its first send
// the count is meaningless, its first unacknowledged sequence number not set yet).
bool syn_sent_with_bytes(int port, unsigned long n) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the heading
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues;
    fields >> slot >> local >> remote >> state >> queues;
    if (remote.size() < 5 || std::stoi(remote.substr(remote.size() - 4), nullptr, 16) != port) {
      continue;
    }
    if (state == "02" && std::stoul(queues.substr(0, queues.find(':')), nullptr, 16) == 1 + n) {
      return true;
    }
  }
  return false;
}

// Each test has Fast Open on, and a server that takes it on `backend_`.
class FastOpenConnectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!on_.usable()) GTEST_SKIP() << "net.ipv4.tcp_fastopen cannot be turned on here";
    listener_ = fast_open_listener(backend_);
    ASSERT_TRUE(listener_.valid());
  }

  // Clients through ferry's `port` to the server until one's bytes reach it in the SYN (the
  // kernel asks for the cookie on the first connect to an address): whether one did within
  // three, all served.
  bool until_syn_data(int port) {
    bool syn_data = false;
    for (int i = 0; i < 3 && !syn_data; ++i) {
      if (!round_trip(port, listener_.get(), "client " + std::to_string(i), syn_data)) {
        return false;
      }
    }
    return syn_data;
  }

  // The kernel's cookie for 127.0.0.1 (kept per address, not per port, for every socket of
  // the machine), got by this process's own Fast Open connects to the server.
  bool seed_cookie() {
    for (int i = 0; i < 3; ++i) {
      const event::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      const int on = 1;
      sockaddr_in sin{};
      sin.sin_family = AF_INET;
      sin.sin_port = htons(static_cast<std::uint16_t>(backend_));
      sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (!fd || ::setsockopt(fd.get(), IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &on, sizeof on) != 0 ||
          ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
          !send_all(fd.get(), "seed")) {
        return false;
      }
      if (serve_one(listener_.get(), "seed", "")) return true;
    }
    return false;
  }

  FastOpenOn on_;
  int backend_ = 0;
  event::UniqueFd listener_;
};

// Once the kernel holds the server's cookie, every client's first bytes come in the SYN.
TEST_F(FastOpenConnectTest, TheClientsFirstBytesRideInTheSyn) {
  const int port = free_port();
  FerryInstance ferry(config(port, {server_at(backend_)}, true));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ASSERT_TRUE(until_syn_data(port)) << ferry.log();
  for (int i = 0; i < 2; ++i) {
    bool syn_data = false;
    ASSERT_TRUE(round_trip(port, listener_.get(), "then " + std::to_string(i), syn_data));
    EXPECT_TRUE(syn_data) << i;
  }
}

// Without the setting a server socket connects as usual, the cookie held or not.
TEST_F(FastOpenConnectTest, OffByDefault) {
  const int with = free_port();
  const int without = free_port();
  FerryInstance fast(config(with, {server_at(backend_)}, true));
  FerryInstance plain(config(without, {server_at(backend_)}, false));
  ASSERT_TRUE(fast.start()) << fast.log();
  ASSERT_TRUE(plain.start()) << plain.log();
  ASSERT_TRUE(until_syn_data(with)) << "the kernel holds no cookie for 127.0.0.1";
  for (int i = 0; i < 2; ++i) {
    bool syn_data = true;
    ASSERT_TRUE(round_trip(without, listener_.get(), "plain " + std::to_string(i), syn_data));
    EXPECT_FALSE(syn_data) << i;
  }
}

// With a cookie held, the connect to a server that is gone returns at once; its refusal comes
// after the client's bytes went in the SYN. That client's session ends (its bytes are spent,
// no next server can have them), and the server is counted failed (max_fails = 1): the next
// clients all go to the other server, none to the refusing one.
TEST_F(FastOpenConnectTest, ARefusedFastOpenConnectMarksTheServerFailed) {
  ASSERT_TRUE(seed_cookie()) << "the kernel holds no cookie for 127.0.0.1";
  // No longer listening, the port still bound (no other test can take it): connects are reset.
  const int gone = backend_;
  ASSERT_EQ(::shutdown(listener_.get(), SHUT_RD), 0);
  EchoServer other;
  const std::string passive = "max_fails = 1; fail_timeout = \"60s\";";
  const int port = free_port();
  FerryInstance ferry(
      config(port, {server_at(gone, passive), server_at(other.port(), passive)}, true));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  int failed = 0;
  for (int i = 0; i < 6; ++i) {
    if (!served_through(port, "client " + std::to_string(i))) ++failed;
  }
  EXPECT_EQ(failed, 1) << ferry.log();
  EXPECT_EQ(other.spoke(), 6 - failed);
  EXPECT_TRUE(ferry.wait_for_log("connect to 127.0.0.1:" + std::to_string(gone) + " failed"))
      << ferry.log();
}

// A server whose listen queue is full drops the SYN that carries the client's bytes: no answer.
// At connect_timeout the session ends and the server is counted failed; the next clients go
// to the other server.
TEST_F(FastOpenConnectTest, AnUnansweredFastOpenConnectTimesOut) {
  ASSERT_TRUE(seed_cookie()) << "the kernel holds no cookie for 127.0.0.1";
  const BlackHole silent;
  ASSERT_GT(silent.port(), 0);
  EchoServer other;
  const std::string passive = "max_fails = 1; fail_timeout = \"60s\";";
  const int port = free_port();
  FerryInstance ferry(config(port,
                             {server_at(silent.port(), passive), server_at(other.port(), passive)},
                             true, "connect_timeout = \"300ms\";"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  int failed = 0;
  for (int i = 0; i < 4; ++i) {
    if (!served_through(port, "client " + std::to_string(i))) ++failed;
  }
  EXPECT_EQ(failed, 1) << ferry.log();
  EXPECT_TRUE(
      ferry.wait_for_log("connect to 127.0.0.1:" + std::to_string(silent.port()) + " timed out"))
      << ferry.log();
}

// With a server whose listen queue is full, behind a ferry with Fast Open: connects to it go
// unanswered until accept_after_filler() makes room.
class FullServerTest : public FastOpenConnectTest {
 protected:
  void SetUp() override {
    FastOpenConnectTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_TRUE(seed_cookie()) << "the kernel holds no cookie for 127.0.0.1";
    server_ = full_listener(busy_);
    ASSERT_TRUE(server_.valid());
    filler_ = event::UniqueFd(connect_to_port(busy_));
    ASSERT_TRUE(filler_.valid());
    port_ = free_port();
    ferry_ = std::make_unique<FerryInstance>(
        config(port_, {server_at(busy_)}, true, "connect_timeout = \"20s\";"));
    ASSERT_TRUE(ferry_->start()) << ferry_->log();
  }

  int busy_ = 0;
  event::UniqueFd server_;
  event::UniqueFd filler_;
  int port_ = 0;
  std::unique_ptr<FerryInstance> ferry_;
};

// The client sends its request and its FIN at once, while the server has not answered the SYN
// (its listen queue full). A shutdown() in SYN_SENT would drop the connect: the FIN waits,
// the SYN is sent again once the queue has room, and the server gets the request, then EOF.
TEST_F(FullServerTest, TheClientsFinWaitsForTheServersAnswer) {
  const event::UniqueFd client(connect_to_port(port_));
  ASSERT_TRUE(client.valid());
  ASSERT_TRUE(send_all(client.get(), "request"));
  ASSERT_EQ(::shutdown(client.get(), SHUT_WR), 0);
  ASSERT_TRUE(eventually([&] { return syn_sent_with_bytes(busy_, 7); })) << ferry_->log();
  const event::UniqueFd relayed(accept_after_filler(server_.get()));
  ASSERT_TRUE(relayed.valid()) << ferry_->log();
  EXPECT_EQ(read_exactly(relayed.get(), 7, std::chrono::seconds(10)), "request");
  EXPECT_TRUE(closed_by_peer(relayed.get(), std::chrono::seconds(10))) << "no FIN";
  ASSERT_TRUE(send_all(relayed.get(), "answer"));
  ::shutdown(relayed.get(), SHUT_WR);
  EXPECT_EQ(read_exactly(client.get(), 6, std::chrono::seconds(10)), "answer") << ferry_->log();
  // The lost SYN counted against Fast Open to 127.0.0.1; a success resets the count (two in a
  // row would turn it off for minutes, failing a run of the tests that follows).
  EXPECT_TRUE(seed_cookie());
}

// A reload while the server has not answered the SYN (its queue full): the session cannot move
// yet (the new worker would not know to wait for the answer) and stays in the old worker; once
// answered it moves, and the old worker leaves while the session goes on.
TEST_F(FullServerTest, AnUnansweredSessionMovesOnceAnswered) {
  const std::set<pid_t> before = ferry_->workers();
  const event::UniqueFd client(connect_to_port(port_));
  ASSERT_TRUE(client.valid());
  ASSERT_TRUE(send_all(client.get(), "request"));
  ASSERT_TRUE(eventually([&] { return syn_sent_with_bytes(busy_, 7); })) << ferry_->log();
  ASSERT_EQ(ferry_->command("reload").exit_code, 0) << ferry_->log();
  const event::UniqueFd relayed(accept_after_filler(server_.get()));
  ASSERT_TRUE(relayed.valid()) << ferry_->log();
  EXPECT_EQ(read_exactly(relayed.get(), 7, std::chrono::seconds(10)), "request");
  ASSERT_TRUE(eventually([&] {
    for (const pid_t pid : ferry_->workers()) {
      if (before.count(pid) != 0) return false;
    }
    return true;
  })) << "the old worker stays"
      << ferry_->log();
  ASSERT_TRUE(send_all(relayed.get(), "answer"));
  EXPECT_EQ(read_exactly(client.get(), 6, std::chrono::seconds(10)), "answer") << ferry_->log();
  ASSERT_TRUE(send_all(client.get(), "more"));
  EXPECT_EQ(read_exactly(relayed.get(), 4, std::chrono::seconds(10)), "more") << ferry_->log();
  EXPECT_TRUE(seed_cookie());  // as in TheClientsFinWaitsForTheServersAnswer
}

// A client that connects and leaves without a byte (a TCP health check) before the Fast Open
// connect sent anything: the session ends cleanly, a FIN for the client, not a reset.
TEST_F(FastOpenConnectTest, AClientGoneWithoutAByteEndsCleanly) {
  ASSERT_TRUE(seed_cookie()) << "the kernel holds no cookie for 127.0.0.1";
  const int port = free_port();
  FerryInstance ferry(config(port, {server_at(backend_)}, true));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const event::UniqueFd client(connect_to_port(port));
  ASSERT_TRUE(client.valid());
  ASSERT_EQ(::shutdown(client.get(), SHUT_WR), 0);
  pollfd p{client.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10'000), 1) << ferry.log();
  char byte = 0;
  EXPECT_EQ(::recv(client.get(), &byte, 1, 0), 0) << std::strerror(errno) << ferry.log();
}

}  // namespace
}  // namespace ferry::test
