// End-to-end tests of ferry's run mode: it listens on the configured address, serves (for now:
// accepts and closes) connections, and exits cleanly on SIGTERM, SIGINT and SIGQUIT.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "tests/support/process.h"

namespace ferry::test {
namespace {

std::string config_for(int port) {
  return "worker_processes = 1;\n"
         "worker_connections = 64;\n"
         "pid_file = \"/tmp/ferry-test-unused.pid\";\n"
         "log = { level = \"info\"; };\n"
         "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9\"; } ); } );\n"
         "proxies = ( { name = \"web\"; listen = [ \"127.0.0.1:" +
         std::to_string(port) + "\" ]; upstream = \"app\"; access_log = \"off\"; } );\n";
}

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class RunTest : public ::testing::TestWithParam<int> {};

TEST_P(RunTest, ListensServesAndExitsCleanlyOnSignal) {
  TempDir dir;
  const int port = free_port();
  const std::string conf = dir.write("ferry.conf", config_for(port));
  Process ferry({ferry_binary(), "-c", conf});
  ASSERT_TRUE(ferry.wait_for_stderr("started")) << ferry.stderr_so_far();

  for (int i = 0; i < 3; ++i) {
    const int fd = connect_loopback(port);
    ASSERT_GE(fd, 0) << "connect to ferry failed: " << std::strerror(errno);
    char byte;
    EXPECT_EQ(::recv(fd, &byte, 1, 0), 0) << "ferry should close the connection";
    ::close(fd);
  }
  EXPECT_TRUE(ferry.wait_for_stderr("accepted 127.0.0.1:"));

  ferry.signal(GetParam());
  const Finished f = ferry.wait();
  EXPECT_EQ(f.signal, 0) << "killed by signal " << f.signal;
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_NE(f.err.find("exiting"), std::string::npos) << f.err;
  // The port is free again: the listening socket was closed.
  EXPECT_EQ(connect_loopback(port), -1);
}

INSTANTIATE_TEST_SUITE_P(StopSignals, RunTest, ::testing::Values(SIGTERM, SIGINT, SIGQUIT),
                         [](const auto& info) { return std::string(sigabbrev_np(info.param)); });

TEST(RunErrorsTest, AnInvalidConfigurationDoesNotStart) {
  TempDir dir;
  const std::string conf = dir.write("ferry.conf", "worker_connections = \"many\";\n");
  const Finished f = run_program({ferry_binary(), "-c", conf});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find(conf + ":1: worker_connections: expected an integer"), std::string::npos)
      << f.err;
}

TEST(RunErrorsTest, AnAddressInUseIsReportedAndExitsOne) {
  TempDir dir;
  const HeldPort taken;
  const std::string conf = dir.write("ferry.conf", config_for(taken.port()));
  const Finished f = run_program({ferry_binary(), "-c", conf});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find("cannot listen on 127.0.0.1:" + std::to_string(taken.port()) +
                       ": Address already in use"),
            std::string::npos)
      << f.err;
}

}  // namespace
}  // namespace ferry::test
