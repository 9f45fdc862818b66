// End-to-end tests of a side's end (its FIN): passed on while the other direction goes on
// (half_close, the default), or closing the session at once (half_close = false, nginx's
// default).
#include <linux/tcp.h>  // tcp_info with tcpi_segs_in (glibc's stops before it)
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
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

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string config(int port, int backend, const std::string& proxy_extra = "") {
  return config_text("worker_processes = 1;",
                     {{.listen = {loopback(port)}, .upstream = "app", .extra = proxy_extra}},
                     {upstream_of({server_at(backend)}, "")});
}

TEST(HalfCloseTest, TheBackendAnswersAfterTheClientsFin) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  event::UniqueFd fd(connect_to_port(port));
  ASSERT_GE(fd.get(), 0);
  const std::string request = "the whole request, then FIN";
  ASSERT_TRUE(send_all(fd.get(), request));
  ASSERT_EQ(::shutdown(fd.get(), SHUT_WR), 0);
  std::string answer;
  char buf[256];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) answer.append(buf, n);
  fd.reset();
  EXPECT_EQ(answer, request) << "the answer sent after the client's FIN must arrive whole";
}

// half_close = false: the client's FIN, once its bytes are the server's, closes the session;
// the server, which would keep its side open, sees the bytes and the end, and so does the
// client. The access log says closed.
TEST(HalfCloseTest, WithoutHalfCloseTheFirstEndClosesTheSession) {
  int backend_port = 0;
  const event::UniqueFd listener(listen_on("127.0.0.1", backend_port));
  ASSERT_TRUE(listener.valid());
  const int port = free_port();
  TempDir logs;
  const std::string access = logs.path() + "/access.log";
  FerryInstance ferry(
      config(port, backend_port, "half_close = false; access_log = \"" + access + "\";"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const event::UniqueFd fd(connect_to_port(port));
  ASSERT_TRUE(fd.valid());
  const event::UniqueFd server(accept_within(listener.get(), seconds(5)));
  ASSERT_TRUE(server.valid());
  ASSERT_TRUE(send_all(fd.get(), "last words"));
  ASSERT_EQ(::shutdown(fd.get(), SHUT_WR), 0);
  // The server keeps its side open: only ferry's close ends the client's stream.
  EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5))) << "the client's FIN closes the session";
  EXPECT_EQ(read_exactly(server.get(), 10, seconds(5)), "last words");
  EXPECT_TRUE(closed_by_peer(server.get(), seconds(5)));
  EXPECT_TRUE(eventually([&] { return count_of(read_file(access), " closed") == 1; }))
      << read_file(access);
}

// Segments `fd` has received so far (ACKs included).
std::uint32_t segments_in(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == -1) return 0;
  return info.tcpi_segs_in;
}

bool all_acknowledged(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  return ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 && info.tcpi_unacked == 0;
}

// A server that answers and closes (its bytes and FIN in one segment): the client gets the
// bytes and the FIN in one segment too (the last send goes with MSG_MORE, the FIN rides in
// it), whether the FIN is passed on (the client still sending) or sent by the close (the
// client ended first). Without it: two segments, a packet more through both kernels.
class LastBytesTest : public ::testing::TestWithParam<bool> {};

TEST_P(LastBytesTest, TheLastBytesAndTheFinReachTheClientInOneSegment) {
  const bool client_ended_first = GetParam();
  int backend_port = 0;
  const event::UniqueFd listener(listen_on("127.0.0.1", backend_port));
  ASSERT_TRUE(listener.valid());
  const int port = free_port();
  FerryInstance ferry(config(port, backend_port));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const event::UniqueFd fd(connect_to_port(port));
  ASSERT_TRUE(fd.valid());
  const event::UniqueFd server(accept_within(listener.get(), seconds(5)));
  ASSERT_TRUE(server.valid());
  ASSERT_TRUE(send_all(fd.get(), "request"));
  if (client_ended_first) {
    ASSERT_EQ(::shutdown(fd.get(), SHUT_WR), 0);
  }
  EXPECT_EQ(read_exactly(server.get(), 7, seconds(5)), "request");
  if (client_ended_first) {
    EXPECT_TRUE(closed_by_peer(server.get(), seconds(5)));
  }
  // Everything the client sent is acknowledged: from here it receives only the answer.
  ASSERT_TRUE(eventually([&] { return all_acknowledged(fd.get()); }));
  const std::uint32_t before = segments_in(fd.get());
  const std::string answer = "the whole answer";
  ASSERT_EQ(::send(server.get(), answer.data(), answer.size(), MSG_MORE),
            static_cast<ssize_t>(answer.size()));
  ASSERT_EQ(::shutdown(server.get(), SHUT_WR), 0);  // one segment: bytes and FIN
  EXPECT_EQ(read_exactly(fd.get(), answer.size(), seconds(5)), answer);
  EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5)));
  EXPECT_EQ(segments_in(fd.get()) - before, 1U) << "the FIN came in a segment of its own";
}

INSTANTIATE_TEST_SUITE_P(Ends, LastBytesTest, ::testing::Bool(), [](const auto& info) {
  return info.param ? "ClientEndedFirst" : "ClientStillSending";
});

}  // namespace
}  // namespace ferry::test
