// End-to-end tests of deferred_accept (TCP_DEFER_ACCEPT on a proxy's listening socket): set at
// start, turned off and on again by reloads on the socket the master keeps, and proxying as
// before for a client that speaks first.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "event/socket_address.h"
#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

std::string config(int port, int backend, bool deferred) {
  return config_text(
      "worker_processes = 1;",
      {{.listen = {loopback(port)},
        .upstream = "app",
        .extra = std::string("deferred_accept = ") + (deferred ? "true;" : "false;")}},
      {upstream_of({server_at(backend)}, "")});
}

constexpr int kCannotLook = -2;

// TCP_DEFER_ACCEPT of the socket the master listens on `port` with (a duplicate of it, taken
// through pidfd_getfd); -1 when there is none, kCannotLook where this kernel or its policy
// (Linux < 5.6, yama ptrace_scope 2, a seccomp filter) refuses the duplicate.
int master_defer_accept(pid_t master, int port) {
  const event::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, master, 0)));
  if (!pidfd) return errno == ENOSYS || errno == EPERM ? kCannotLook : -1;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(master) + "/fd")) {
    const int target = std::stoi(entry.path().filename().string());
    const event::UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), target, 0)));
    if (!fd && (errno == ENOSYS || errno == EPERM)) return kCannotLook;
    if (!fd) continue;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == -1 ||
        listening == 0) {
      continue;
    }
    event::SocketAddress bound;
    if (::getsockname(fd.get(), bound.get(), bound.length_ptr()) == -1 || bound.port() != port) {
      continue;
    }
    int seconds = -1;
    len = sizeof seconds;
    if (::getsockopt(fd.get(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, &len) == -1) return -1;
    return seconds;
  }
  return -1;
}

#define SKIP_IF_CANNOT_LOOK(master, port)               \
  if (master_defer_accept(master, port) == kCannotLook) \
  GTEST_SKIP() << "pidfd_getfd is refused here: the master's socket cannot be looked at"

TEST(DeferredAcceptTest, SetAtStartAndByReloadsOnTheKeptSocket) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port(), true));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  SKIP_IF_CANNOT_LOOK(ferry.master(), port);
  EXPECT_GT(master_defer_accept(ferry.master(), port), 0);
  EXPECT_TRUE(served_through(port, "a client that speaks first"));

  ferry.rewrite(config(port, backend.port(), false));
  ASSERT_EQ(ferry.command("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] { return master_defer_accept(ferry.master(), port) == 0; }))
      << ferry.log();
  ferry.rewrite(config(port, backend.port(), true));
  ASSERT_EQ(ferry.command("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] { return master_defer_accept(ferry.master(), port) > 0; }))
      << ferry.log();
  EXPECT_TRUE(served_through(port, "still proxied"));
}

// A binary upgrade hands the socket to the new master, which reads the configuration anew: one
// that turns deferred_accept off turns it off on the inherited socket.
TEST(DeferredAcceptTest, ABinaryUpgradeAppliesTheNewConfiguration) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(port, backend.port(), true));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  SKIP_IF_CANNOT_LOOK(ferry.master(), port);
  ASSERT_GT(master_defer_accept(ferry.master(), port), 0);
  ferry.rewrite(config(port, backend.port(), false));
  const pid_t next = ferry.upgrade(1);
  ASSERT_GT(next, 0) << ferry.log();
  EXPECT_EQ(master_defer_accept(next, port), 0) << ferry.log();
  EXPECT_TRUE(served_through(port, "served"));
}

// Off by default: a server that greets first (SMTP, MySQL) would wait for a client waiting
// for it.
TEST(DeferredAcceptTest, OffByDefault) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config_text("worker_processes = 1;",
                                  {{.listen = {loopback(port)}, .upstream = "app", .extra = ""}},
                                  {upstream_of({server_at(backend.port())}, "")}));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  SKIP_IF_CANNOT_LOOK(ferry.master(), port);
  EXPECT_EQ(master_defer_accept(ferry.master(), port), 0);
}

}  // namespace
}  // namespace ferry::test
