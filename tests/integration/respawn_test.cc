// How the master replaces workers that fail at start, driven by the test-only hook
// FERRY_TEST_WORKER_FAIL=CODE:FIRST:COUNT (worker starts FIRST.. exit with CODE at once): the
// growing respawn delay, and exit code 2 ("cannot work"), which is never respawned.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(RespawnTest, AWorkerThatKeepsDyingAtStartIsRespawnedWithAGrowingDelay) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(one_proxy_config(1, port, backend.port()));
  ferry.set_options({.env = {"FERRY_TEST_WORKER_FAIL=1:0:4"}});
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(ferry.start(seconds(15))) << ferry.log();
  // 100 + 200 + 400 + 800 ms of delay before the fifth start serves.
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(1'500));
  std::size_t at = 0;
  for (const char* delay : {"100 ms", "200 ms", "400 ms", "800 ms"}) {
    at = ferry.log().find("respawning in " + std::string(delay), at);
    ASSERT_NE(at, std::string::npos) << delay << " missing, or out of order:\n" << ferry.log();
  }
  EXPECT_TRUE(served_through(port));

  // A worker that lived past a second is replaced at once: the back-off starts over.
  std::this_thread::sleep_for(milliseconds(1'100));
  ferry.drain_log();
  const std::size_t before = ferry.log().size();
  const pid_t worker = *ferry.workers().begin();
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(worker, SIGTERM), 0);
  // Only what the master logged after the kill counts: the first start's line is already there.
  const std::string restarted = "started worker 0 (generation 1)";
  ASSERT_TRUE(eventually(
      [&] {
        ferry.drain_log();
        return ferry.log().find(restarted, before) != std::string::npos;
      },
      seconds(5)))
      << ferry.log().substr(before);
  // Had the back-off gone on, the next delay would be 1600 ms.
  EXPECT_LT(std::chrono::steady_clock::now() - killed, milliseconds(1'500));
  EXPECT_EQ(ferry.log().find("respawning in", before), std::string::npos)
      << ferry.log().substr(before);
  EXPECT_TRUE(eventually([&] { return served_through(port); }, seconds(2)));
}

// The hook is test-only, but a typo in it must not pass for something else.
TEST(RespawnTest, AWorkerFailHookWithTrailingJunkIsIgnored) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(one_proxy_config(1, port, backend.port()));
  ferry.set_options({.env = {"FERRY_TEST_WORKER_FAIL=1:0:4xyz"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_NE(
      ferry.log().find("FERRY_TEST_WORKER_FAIL=\"1:0:4xyz\" is not CODE:FIRST:COUNT; ignored"),
      std::string::npos)
      << ferry.log();
  EXPECT_EQ(ferry.log().find("respawning in"), std::string::npos) << ferry.log();
}

TEST(FatalExitTest, FirstWorkersThatCannotWorkMakeTheMasterExitOne) {
  EchoServer backend;
  FerryInstance ferry(one_proxy_config(1, free_port(), backend.port()));
  ferry.set_options({.env = {"FERRY_TEST_WORKER_FAIL=2:0:1"}});
  EXPECT_FALSE(ferry.start(seconds(5)));
  const Finished f = ferry.wait(seconds(5));
  EXPECT_EQ(f.exit_code, 1) << f.err;
  EXPECT_NE(f.err.find("worker 0 cannot work (exit code 2) and no worker ever served: exiting"),
            std::string::npos)
      << f.err;
}

// After a generation served, a worker that cannot work leaves its slot empty (restarting it
// would fail the same way) until a reload brings a new generation.
TEST(FatalExitTest, AWorkerThatCannotWorkAfterServingIsNotRespawned) {
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(one_proxy_config(1, port, backend.port()));
  ferry.set_options({.env = {"FERRY_TEST_WORKER_FAIL=2:1:1"}});
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const pid_t first = *ferry.workers().begin();
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(ferry.wait_for_log("worker 0 cannot work (exit code 2): not respawning it"))
      << ferry.log();
  // Longer than any respawn delay of a quick death (100 ms): still no worker.
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_TRUE(ferry.workers().empty());
  EXPECT_EQ(ferry.command("status").exit_code, 0) << "the master stays";

  const Finished reload = ferry.command("reload");
  EXPECT_EQ(reload.exit_code, 0) << reload.err << ferry.log();
  EXPECT_TRUE(eventually([&] { return served_through(port); }, seconds(2)));
}

}  // namespace
}  // namespace ferry::test
