// End-to-end tests of fastopen_connect (TCP_FASTOPEN_CONNECT on the server sockets): the
// client's first bytes reach a Fast Open server in the SYN, not without the setting, and a
// server refusing such a connect is counted failed so the next clients go elsewhere.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>

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

std::string config(int port, const std::vector<ServerSpec>& servers, bool fastopen) {
  return config_text("worker_processes = 1;",
                     {{.listen = {loopback(port)},
                       .upstream = "app",
                       .extra = fastopen ? "fastopen_connect = true;" : ""}},
                     {upstream_of(servers, "balance = \"round_robin\";")});
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
  const int gone = backend_;
  {
    // The cookie for 127.0.0.1 (the kernel keeps it per address, not per port).
    const int port = free_port();
    FerryInstance ferry(config(port, {server_at(gone)}, true));
    ASSERT_TRUE(ferry.start()) << ferry.log();
    ASSERT_TRUE(until_syn_data(port)) << "the kernel holds no cookie for 127.0.0.1";
    listener_.reset();
  }
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

}  // namespace
}  // namespace ferry::test
