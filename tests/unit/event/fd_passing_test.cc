// Tests of event/fd_passing: a message and its fds over a real SOCK_SEQPACKET pair; refused
// messages leak no descriptor; a TCP socket passed keeps the bytes queued in the kernel.
#include "event/fd_passing.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/loop_helpers.h"

namespace ferry::event {
namespace {

std::pair<UniqueFd, UniqueFd> seqpacket_pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::pair<UniqueFd, UniqueFd> pipe_pair() {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

int open_fds() {
  int n = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  while (const dirent* e = ::readdir(dir)) n += e->d_name[0] != '.';
  ::closedir(dir);
  return n - 1;  // the folder's own
}

// What `fd` receives within a second.
std::string received(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 1000) != 1) return "";
  char data[64];
  const ssize_t n = ::recv(fd, data, sizeof data, MSG_DONTWAIT);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : "";
}

std::span<const std::byte> as_bytes(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

TEST(FdPassingTest, BytesAndFdsArriveTogetherAsOneMessage) {
  auto [a, b] = seqpacket_pair();
  auto [r, w] = pipe_pair();
  const std::array<int, 2> fds{r.get(), w.get()};
  ASSERT_FALSE(send_with_fds(a.get(), as_bytes("session 1"), fds));
  std::array<std::byte, 64> buf{};
  ReceivedMessage got;
  ASSERT_FALSE(receive_with_fds(b.get(), buf, 4, got));
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(buf.data()), got.bytes), "session 1");
  ASSERT_EQ(got.fds.size(), 2U);
  for (const auto& fd : got.fds) EXPECT_EQ(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  // The same pipe: written through the received end, read through the original.
  ASSERT_EQ(::write(got.fds[1].get(), "x", 1), 1);
  char c = 0;
  EXPECT_EQ(::read(r.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
}

TEST(FdPassingTest, AMessageWithoutFdsIsReceivedAsOne) {
  auto [a, b] = seqpacket_pair();
  ASSERT_FALSE(send_with_fds(a.get(), as_bytes("no fds"), {}));
  std::array<std::byte, 16> buf{};
  ReceivedMessage got;
  ASSERT_FALSE(receive_with_fds(b.get(), buf, 0, got));
  EXPECT_EQ(got.bytes, 6U);
  EXPECT_TRUE(got.fds.empty());
}

TEST(FdPassingTest, MoreFdsThanExpectedAreRefusedAndNoneLeaks) {
  auto [a, b] = seqpacket_pair();
  auto [r, w] = pipe_pair();
  const std::array<int, 3> fds{r.get(), w.get(), r.get()};
  ASSERT_FALSE(send_with_fds(a.get(), as_bytes("three"), fds));
  const int before = open_fds();
  std::array<std::byte, 16> buf{};
  ReceivedMessage got;
  EXPECT_EQ(receive_with_fds(b.get(), buf, 2, got), std::errc::message_size);
  EXPECT_TRUE(got.fds.empty());
  EXPECT_EQ(open_fds(), before) << "the fds that fitted were closed";
}

TEST(FdPassingTest, AMessageLongerThanTheBufferIsRefusedWithItsFdsClosed) {
  auto [a, b] = seqpacket_pair();
  auto [r, w] = pipe_pair();
  const std::array<int, 1> fds{w.get()};
  ASSERT_FALSE(send_with_fds(a.get(), as_bytes("a longer message than fits"), fds));
  const int before = open_fds();
  std::array<std::byte, 8> buf{};
  ReceivedMessage got;
  EXPECT_EQ(receive_with_fds(b.get(), buf, 1, got), std::errc::message_size);
  EXPECT_EQ(open_fds(), before);
  // The write end's only holder is ours again: closing it ends the pipe.
  w.reset();
  char c;
  EXPECT_EQ(::read(r.get(), &c, 1), 0);
}

TEST(FdPassingTest, EmptyQueuesAndClosedPeersAreToldApart) {
  auto [a, b] = seqpacket_pair();
  std::array<std::byte, 8> buf{};
  ReceivedMessage got;
  EXPECT_EQ(receive_with_fds(b.get(), buf, 1, got), std::errc::resource_unavailable_try_again);
  a.reset();
  EXPECT_FALSE(receive_with_fds(b.get(), buf, 1, got));
  EXPECT_EQ(got.bytes, 0U) << "an orderly close";
}

TEST(FdPassingTest, AFullQueueRefusesTheWholeMessage) {
  auto [a, b] = seqpacket_pair();
  int sent = 0;
  std::error_code ec;
  while (!(ec = send_with_fds(a.get(), as_bytes("fill"), {})) && sent < 100000) ++sent;
  EXPECT_EQ(ec, std::errc::resource_unavailable_try_again);
  EXPECT_GT(sent, 0);
}

TEST(FdPassingTest, BadArgumentsAreRefused) {
  auto [a, b] = seqpacket_pair();
  EXPECT_EQ(send_with_fds(a.get(), {}, {}), std::errc::invalid_argument);
  std::vector<int> many(kMaxPassedFds + 1, a.get());
  EXPECT_EQ(send_with_fds(a.get(), as_bytes("x"), many), std::errc::invalid_argument);
  std::array<std::byte, 8> buf{};
  ReceivedMessage got;
  EXPECT_EQ(receive_with_fds(b.get(), buf, kMaxPassedFds + 1, got), std::errc::invalid_argument);
}

// What a session hand-off rests on: a TCP socket passed to another holder keeps the bytes the
// kernel had queued for it, and goes on with the same connection.
TEST(FdPassingTest, APassedTcpSocketKeepsItsQueuedBytes) {
  auto [client, server] = test::tcp_pair();
  ASSERT_EQ(::send(client.get(), "queued", 6, 0), 6);
  auto [a, b] = seqpacket_pair();
  const std::array<int, 1> fds{server.get()};
  ASSERT_FALSE(send_with_fds(a.get(), as_bytes("tcp"), fds));
  server.reset();  // the sender lets go
  std::array<std::byte, 8> buf{};
  ReceivedMessage got;
  ASSERT_FALSE(receive_with_fds(b.get(), buf, 1, got));
  ASSERT_EQ(got.fds.size(), 1U);
  EXPECT_EQ(received(got.fds[0].get()), "queued");
  ASSERT_EQ(::send(got.fds[0].get(), "back", 4, MSG_NOSIGNAL), 4);
  EXPECT_EQ(received(client.get()), "back");
}

}  // namespace
}  // namespace ferry::event
