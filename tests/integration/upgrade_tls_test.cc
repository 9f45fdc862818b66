// A binary upgrade keeps TLS session tickets resuming: the new master derives its ticket keys
// from the secret the old master passed (a sealed memfd), so a ticket an old worker issued is
// resumed by the new workers once the upgrade is complete (USR2, WINCH, QUIT); the new workers
// keep no fd of that secret.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

#include <gtest/gtest.h>

#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"
#include "tests/support/test_ca.h"
#include "tests/support/tls_tools.h"

namespace ferry::test {
namespace {

// How many of `pid`'s descriptors are the memfd named `name`.
int memfds_named(pid_t pid, const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  int n = 0;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    if (fs::read_symlink(entry.path(), ec).string().starts_with("/memfd:" + name)) ++n;
  }
  return n;
}

TEST(UpgradeTlsTest, ATicketOfTheOldBinaryResumesWithTheNewOne) {
  TempDir dir;
  const std::string log = dir.path() + "/access.log";
  TestCa ca{dir.path()};
  EchoServer backend;
  const int port = free_port();
  const Issued a = ca.issue("a", {"a.test"});
  FerryInstance ferry(terminating_config(port, backend.port(), {a}, log, "", 2));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  SSL_SESSION* session = nullptr;
  {
    // Closed before the upgrade: a terminated session would keep its old worker draining.
    TlsClient first(port, options([](TlsClientOptions& o) { o.sni = "a.test"; }));
    ASSERT_TRUE(first.connected()) << first.error();
    EXPECT_EQ(first.version(), "TLSv1.3");
    ASSERT_TRUE(first.round_trip("first"));  // the tickets come after the handshake
    session = first.take_session();
  }
  ASSERT_NE(session, nullptr);
  EXPECT_EQ(memfds_named(ferry.master(), "ferry-ticket-secret"), 1);
  for (const pid_t worker : ferry.workers()) {
    EXPECT_EQ(memfds_named(worker, "ferry-ticket-secret"), 0) << "worker " << worker;
  }

  const pid_t fresh = ferry.upgrade(2);
  ASSERT_GT(fresh, 0) << ferry.log();
  EXPECT_TRUE(ferry.wait_for_log("ticket secret taken over from the old master")) << ferry.log();
  ferry.signal(SIGWINCH);
  ASSERT_TRUE(eventually([&] { return ferry.own_workers().empty(); }))
      << "the old workers must leave";
  ferry.signal(SIGQUIT);
  EXPECT_EQ(ferry.wait().exit_code, 0) << ferry.log();
  ASSERT_TRUE(alive(fresh));

  // Only the new master's workers are left to serve; every connection offering the old ticket
  // is resumed, whichever of them takes it.
  int resumed = 0;
  for (int i = 0; i < 10; ++i) {
    TlsClient again(port, options([&](TlsClientOptions& o) {
                      o.sni = "a.test";
                      o.resume = session;
                    }));
    ASSERT_TRUE(again.connected()) << again.error();
    EXPECT_TRUE(again.round_trip("again"));
    resumed += again.resumed() ? 1 : 0;
  }
  SSL_SESSION_free(session);
  EXPECT_EQ(resumed, 10) << ferry.log();
  EXPECT_EQ(memfds_named(fresh, "ferry-ticket-secret"), 1) << "kept for the next upgrade";
  for (const pid_t worker : children_of(fresh)) {
    EXPECT_EQ(memfds_named(worker, "ferry-ticket-secret"), 0) << "worker " << worker;
  }
}

}  // namespace
}  // namespace ferry::test
