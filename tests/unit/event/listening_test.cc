// Tests of event/listening and event/socket_address: flags on the socket, port 0, v6only,
// a clear error on a taken address, numeric parsing and printing.
#include "event/listening.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

namespace ferry::event {
namespace {

TEST(ListeningTest, OpensNonBlockingCloseOnExecAndResolvesPortZero) {
  Listening ls;
  ls.address = *SocketAddress::parse_numeric("127.0.0.1:0");
  ls.backlog = 16;
  ASSERT_FALSE(open_listening(ls));
  EXPECT_NE(ls.address.port(), 0);
  EXPECT_TRUE(::fcntl(ls.fd.get(), F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(ls.fd.get(), F_GETFD) & FD_CLOEXEC);
  int on = 0;
  socklen_t len = sizeof on;
  ASSERT_EQ(::getsockopt(ls.fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &on, &len), 0);
  EXPECT_EQ(on, 1);
}

TEST(ListeningTest, ATakenAddressIsAnErrorAndNoFdIsKept) {
  Listening first;
  first.address = *SocketAddress::parse_numeric("127.0.0.1:0");
  ASSERT_FALSE(open_listening(first));
  Listening second;
  second.address = first.address;
  EXPECT_EQ(open_listening(second), std::errc::address_in_use);
  EXPECT_FALSE(second.fd.valid());
}

TEST(ListeningTest, ReuseportLetsTwoSocketsShareAnAddress) {
  Listening a;
  a.address = *SocketAddress::parse_numeric("127.0.0.1:0");
  a.reuseport = true;
  ASSERT_FALSE(open_listening(a));
  Listening b;
  b.address = a.address;
  b.reuseport = true;
  EXPECT_FALSE(open_listening(b));
}

TEST(ListeningTest, Ipv6AnyIsV6OnlySoTheIpv4WildcardCanShareThePort) {
  Listening v6;
  v6.address = *SocketAddress::parse_numeric("[::]:0");
  if (auto ec = open_listening(v6); ec == std::errc::address_family_not_supported) {
    GTEST_SKIP() << "no IPv6 here";
  } else {
    ASSERT_FALSE(ec);
  }
  Listening v4;
  v4.address = *SocketAddress::parse_numeric("*:" + std::to_string(v6.address.port()));
  EXPECT_FALSE(open_listening(v4));
}

TEST(SocketAddressTest, ParsesAndPrintsNumericForms) {
  EXPECT_EQ(SocketAddress::parse_numeric("127.0.0.1:8080")->to_string(), "127.0.0.1:8080");
  EXPECT_EQ(SocketAddress::parse_numeric("*:80")->to_string(), "0.0.0.0:80");
  EXPECT_EQ(SocketAddress::parse_numeric("[::1]:443")->to_string(), "[::1]:443");
  EXPECT_EQ(SocketAddress::parse_numeric("[::1]:443")->family(), AF_INET6);
  EXPECT_EQ(SocketAddress::parse_numeric("10.1.2.3:65535")->port(), 65535);
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "1.2.3:80", "[::1:80",
                          "::1:80", "host:80", "127.0.0.1:8x"}) {
    EXPECT_FALSE(SocketAddress::parse_numeric(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace ferry::event
