// Tests of what the master trusts in worker/stats: a worker cannot write the registry (not by
// mprotect, not through /proc/self/mem), and garbage in a worker's block is left out of the
// totals and dropped by the fold, while honest counts, a dead worker's half-closed session
// among them, are kept.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "worker/stats/stats_table.h"

namespace ferry::worker {
namespace {

class StatsTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stats_ = StatsTable::create("1.2.3", 4242, 1000);
    ASSERT_NE(stats_, nullptr);
    ASSERT_EQ(stats_->register_proxy("web"), 0u);
    ASSERT_EQ(stats_->register_server("app", "h:1"), 0u);
  }

  // Runs `child` in a forked process that has become a worker; returns its wait status.
  template <typename Child>
  int in_worker(Child&& child) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (!stats_->enter_worker()) ::_exit(100);
      ::_exit(child());
    }
    int status = 0;
    if (pid == -1 || ::waitpid(pid, &status, 0) != pid) ADD_FAILURE() << "fork/waitpid failed";
    return status;
  }

  std::unique_ptr<StatsTable> stats_;
};

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

TEST_F(StatsTrustTest, AWorkerCannotMakeTheRegistryWritable) {
  const StatsTable::Segment registry = stats_->registry_segment();
  const int status = in_worker([&] {
    void* p = const_cast<void*>(registry.data);
    if (::mprotect(p, registry.size, PROT_READ | PROT_WRITE) == 0) return 1;
    if (errno != EACCES) return 2;
    // /proc/PID/mem writes past a mapping's protection (FOLL_FORCE), but not into a shared
    // mapping that may never be writable.
    const int mem = ::open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (mem == -1) return 3;
    const std::uint32_t garbage = 0xffffffff;
    const bool wrote =
        ::pwrite(mem, &garbage, sizeof garbage, reinterpret_cast<off_t>(registry.data)) != -1;
    ::close(mem);
    if (wrote) return 4;
    // Its own counters it writes as before.
    ProxyCounters* c = stats_->proxy_counters(3, "web");
    if (c == nullptr) return 5;
    stat_add(c->accepted, 7);
    // And the kernel refuses to store into the registry (EFAULT): a read(2) into it rather
    // than a plain store, whose SIGSEGV ASan would catch and report.
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) == -1) return 6;
    const char byte = 1;
    if (::write(pipe_fds[1], &byte, 1) != 1) return 7;
    const ssize_t stored = ::read(pipe_fds[0], p, 1);
    const int why = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return stored == -1 && why == EFAULT ? 0 : 8;
  });
  EXPECT_TRUE(exited_with(status, 0)) << status;
  stats_->worker_started(3, 103, 1, 1500);
  EXPECT_EQ(stats_->snapshot(2000).proxies.at(0).accepted, 7u);
  EXPECT_EQ(stats_->snapshot(2000).version, "1.2.3");
  // The master's writes still reach the workers' view.
  ASSERT_EQ(stats_->register_proxy("db"), 1u);
  EXPECT_TRUE(exited_with(in_worker([&] { return stats_->proxy_index("db") == 1u ? 0 : 1; }), 0));
}

TEST_F(StatsTrustTest, GarbageIsLeftOutAndDroppedByTheFold) {
  // An honest worker in slot 4, one that goes wrong in slot 5.
  stats_->worker_started(4, 104, 1, 1500);
  stats_->worker_started(5, 105, 1, 1500);
  ProxyCounters* honest = stats_->proxy_counters(4, "web");
  stat_add(honest->accepted, 10);
  stat_add(honest->handled, 8);
  stat_add(honest->active, 2);
  stat_add(stats_->server_counters(4, "app", "h:1")->sessions, 9);
  std::string said;
  const int status = in_worker([&] {
    stat_add(stats_->proxy_counters(5, "web")->accepted, 1000);
    said = stats_->scribble(5);
    return said.find("stays read-only") != std::string::npos ? 0 : 1;
  });
  EXPECT_TRUE(exited_with(status, 0)) << status;

  const auto check = [&](std::uint64_t accepted, std::uint64_t handled, std::uint64_t active) {
    const Snapshot s = stats_->snapshot(2000);
    ASSERT_EQ(s.proxies.size(), 1u);
    EXPECT_EQ(s.proxies[0].name, "web");
    EXPECT_EQ(s.proxies[0].accepted, accepted);
    EXPECT_EQ(s.proxies[0].handled, handled);
    EXPECT_EQ(s.proxies[0].active, active);
    EXPECT_EQ(s.proxies[0].bytes_from_clients, 0u);
    ASSERT_EQ(s.upstreams.size(), 1u);
    EXPECT_EQ(s.upstreams[0].servers.at(0).sessions, 9u);
    EXPECT_EQ(s.upstreams[0].servers.at(0).health, CheckResult::none);
    for (const auto& w : s.workers) EXPECT_EQ(w.connections, 0u);  // garbage past the ceiling
  };
  check(10, 8, 2);
  EXPECT_GT(stats_->fold(5), 0u);  // the master logs this
  check(10, 8, 2);
  stats_->worker_started(5, 106, 1, 1600);  // the slot is clean for the next worker
  check(10, 8, 2);
  EXPECT_EQ(stats_->fold(4), 0u);
  check(10, 10, 0);
}

// Relations a worker breaks only between two of its stores are clamped, not taken for garbage;
// broken further, they are.
TEST_F(StatsTrustTest, RelationsAreClampedAndCheckedAtTheFold) {
  const auto slot_with = [&](std::size_t slot, std::uint64_t accepted, std::uint64_t handled,
                             std::uint64_t active) {
    stats_->worker_started(slot, static_cast<pid_t>(100 + slot), 1, 0);
    ProxyCounters* c = stats_->proxy_counters(slot, "web");
    stat_add(c->accepted, accepted);
    stat_add(c->handled, handled);
    stat_add(c->active, active);
  };
  // Killed between counting a session handled and no longer active.
  slot_with(1, 10, 6, 5);
  Snapshot s = stats_->snapshot(0);
  EXPECT_EQ(s.proxies[0].accepted, 10u);
  EXPECT_EQ(s.proxies[0].handled, 6u);
  EXPECT_EQ(s.proxies[0].active, 4u);
  EXPECT_EQ(stats_->fold(1), 0u);
  s = stats_->snapshot(0);
  EXPECT_EQ(s.proxies[0].accepted, 10u);
  EXPECT_EQ(s.proxies[0].handled, 10u);
  EXPECT_EQ(s.proxies[0].active, 0u);

  // More handled than accepted, by far: not kept.
  slot_with(2, 5, 500, 0);
  s = stats_->snapshot(0);
  EXPECT_EQ(s.proxies[0].accepted, 15u);
  EXPECT_EQ(s.proxies[0].handled, 15u);  // clamped while it lives
  EXPECT_EQ(stats_->fold(2), 1u);
  s = stats_->snapshot(0);
  EXPECT_EQ(s.proxies[0].accepted, 10u);
  EXPECT_EQ(s.proxies[0].handled, 10u);

  // A server with more open sessions than it ever had.
  stats_->worker_started(3, 103, 1, 0);
  stat_add(stats_->server_counters(3, "app", "h:1")->sessions, 2);
  stat_add(stats_->server_counters(3, "app", "h:1")->active, 3);
  EXPECT_EQ(stats_->snapshot(0).upstreams[0].servers[0].active, 2u);
  EXPECT_EQ(stats_->fold(3), 1u);
  EXPECT_EQ(stats_->snapshot(0).upstreams[0].servers[0].sessions, 0u);
}

}  // namespace
}  // namespace ferry::worker
