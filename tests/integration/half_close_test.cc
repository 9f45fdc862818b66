// End-to-end tests of a side's end (its FIN): passed on while the other direction goes on
// (half_close, the default), or closing the session at once (half_close = false, nginx's
// default).
#include <sys/socket.h>

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

}  // namespace
}  // namespace ferry::test
